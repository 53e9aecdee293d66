"""Two API keys racing for the same new thread ids against a real uvicorn: count the takeovers.

    .venv/bin/python reliability/cross_key_race.py --trials 500

Starts the test server (`tests/server/_served.py`, SQLite storage, keys A and B) in a uvicorn
process. Each trial sends, at the same instant over two connections, key A's request on a new
thread id (alternately `POST /threads` and a run on it) and key B's `POST /threads` for that id,
each marking its thread (`metadata.who`). Each key has its own thread ids, so both must get 200
and their own thread: then both keys read the id. Counts trials where a request was refused, and
where a key's thread is not its own (another key's mark, or another key's messages: a takeover);
exits 1 unless both are 0. Figures go to RELIABILITY.md ("Server").
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
    counts = {"trials": 0, "both_200": 0, "refused": 0, "not_own": 0}
    a = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30)
    b = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY_B}"}, timeout=30)
    async with a, b:
        for trial in range(trials):
            tid = f"race-{trial}-{time.time_ns()}"
            a_runs = trial % 2 == 1
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
                    body = {"thread_id": tid, "metadata": {"who": who}}
                    r = await client.post("/threads", json=body)
                replies[who] = r.status_code

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "A", a, a_runs)
                tg.start_soon(send, "B", b, False)
                await anyio.wait_all_tasks_blocked()
                go.set()
            seen_a = (await a.get(f"/threads/{tid}")).json()
            seen_b = (await b.get(f"/threads/{tid}")).json()
            if a_runs:  # A's thread holds A's run, and no mark
                a_own = [m["role"] for m in seen_a.get("messages", [])] == ["user", "assistant"]
                a_own = a_own and "who" not in seen_a.get("metadata", {})
            else:
                a_own = seen_a.get("metadata", {}).get("who") == "A"
            b_own = seen_b.get("metadata", {}).get("who") == "B" and seen_b.get("messages") == []
            counts["trials"] += 1
            counts["both_200"] += sorted(replies.values()) == [200, 200]
            counts["refused"] += sorted(replies.values()) != [200, 200]
            counts["not_own"] += not (a_own and b_own)
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
    bad = counts["refused"] + counts["not_own"]
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
