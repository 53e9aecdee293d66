"""Two API keys racing for the same new thread ids against a real uvicorn: count the takeovers.

    .venv/bin/python reliability/cross_key_race.py --trials 500

Starts the test server (`tests/server/_served.py`, SQLite storage, keys A and B) in a uvicorn
process. Each trial sends, at the same instant over two connections, key A's request on a new
thread id (alternately `POST /threads` and a run on it) and key B's `POST /threads` for that id.
Then both keys read the thread. Counts trials where both got 200, where the loser owns the thread
afterwards, and where both can read it; exits 1 unless all three are 0. Figures go to
RELIABILITY.md ("Server").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server._client import serve  # noqa: E402

KEY_A, KEY_B = "sk-race-alice-1", "sk-race-bob-22"
HI = {"input": {"messages": [{"role": "user", "content": "hi"}]}}


async def race(url: str, trials: int) -> dict[str, int]:
    counts = {"trials": 0, "both_200": 0, "loser_owns": 0, "both_read": 0, "a_won": 0, "b_won": 0}
    a = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30)
    b = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY_B}"}, timeout=30)
    async with a, b:
        for trial in range(trials):
            tid = f"race-{trial}-{time.time_ns()}"
            replies: dict[str, int] = {}
            go = anyio.Event()

            async def send(
                who: str,
                client: httpx.AsyncClient,
                run: bool,
                tid: str = tid,
                replies: dict[str, int] = replies,
                go: anyio.Event = go,
            ) -> None:
                await go.wait()
                if run:
                    r = await client.post(f"/threads/{tid}/runs/wait", json=HI)
                else:
                    r = await client.post("/threads", json={"thread_id": tid})
                replies[who] = r.status_code

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "A", a, trial % 2 == 1)
                tg.start_soon(send, "B", b, False)
                await anyio.wait_all_tasks_blocked()
                go.set()
            read_a = (await a.get(f"/threads/{tid}")).status_code == 200
            read_b = (await b.get(f"/threads/{tid}")).status_code == 200
            winners = [w for w, status in replies.items() if status == 200]
            counts["trials"] += 1
            counts["both_200"] += len(winners) > 1
            counts["a_won"] += winners == ["A"]
            counts["b_won"] += winners == ["B"]
            counts["loser_owns"] += (winners == ["A"] and read_b) or (winners == ["B"] and read_a)
            counts["both_read"] += read_a and read_b
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"TETHER_TEST_API_KEYS": f"{KEY_A},{KEY_B}", "TETHER_TEST_DB": f"{tmp}/race.db"}
        with serve(env=env) as server:
            counts = anyio.run(race, server.url, args.trials)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    bad = counts["both_200"] + counts["loser_owns"] + counts["both_read"]
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
