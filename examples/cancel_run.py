"""Seed 002 ported to tether: start an agent run in one thread, cancel it from another.

Run it:  python examples/cancel_run.py            (the local SmolLM2 model, no key, no server)
         python examples/cancel_run.py --delay 3

The agent writes a long story; after `--delay` seconds another thread calls
`agent.cancel_run(run_id)`. The stream ends with a `run_finished` event whose status is
`cancelled`, and the partial story is kept in the thread, marked `stopped`.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from tether import Agent
from tether.models import Model

PROMPT = (
    "Write a very long story about a dragon who learns to code. "
    "Make it at least 2000 words with detailed descriptions and dialogue. "
    "Take your time and be very thorough."
)


def long_running_task(agent: Agent, run_id_container: dict[str, Any]) -> None:
    """Stream the run, remembering its id and what it produced."""
    content_pieces: list[str] = []
    for chunk in agent.run(PROMPT, stream=True):
        run_id_container.setdefault("run_id", chunk.run_id)
        if chunk.type == "message_delta":
            print(chunk.content, end="", flush=True)
            content_pieces.append(chunk.content)
        elif chunk.type == "run_finished":
            text = "".join(content_pieces)
            run_id_container["result"] = {
                "status": chunk.status,
                "run_id": chunk.run_id,
                "cancelled": chunk.status == "cancelled",
                "content": (text[:200] + "...") if text else "No content before cancellation",
            }


def cancel_after_delay(
    agent: Agent, run_id_container: dict[str, Any], delay_seconds: float
) -> None:
    """Cancel the run from this thread once `delay_seconds` have passed."""
    print(f"Will cancel run in {delay_seconds} seconds...")
    time.sleep(delay_seconds)
    run_id = run_id_container.get("run_id")
    if run_id is None:
        print("No run_id found to cancel")
        return
    print(f"\nCancelling run: {run_id}")
    if agent.cancel_run(run_id=run_id):
        print(f"Run {run_id} cancelled")
    else:
        print(f"Failed to cancel run {run_id} (may not exist or already completed)")


def main(model: Model | str = "local", delay: float = 8.0) -> dict[str, Any]:
    agent = Agent(model, name="StorytellerAgent", instructions="You write detailed stories.")
    run_id_container: dict[str, Any] = {}
    agent_thread = threading.Thread(
        target=long_running_task, args=(agent, run_id_container), name="AgentRunThread"
    )
    cancel_thread = threading.Thread(
        target=cancel_after_delay, args=(agent, run_id_container, delay), name="CancelThread"
    )
    print("Starting agent run thread...")
    agent_thread.start()
    cancel_thread.start()
    agent_thread.join()
    cancel_thread.join()

    result = run_id_container["result"]
    print("\n" + "=" * 50)
    print(f"Status: {result['status']}")
    print(f"Run ID: {result['run_id']}")
    print(f"Was Cancelled: {result['cancelled']}")
    print(f"Content Preview: {result['content']}")
    record = agent.get_run(result["run_id"])
    if record is not None:
        print(f"Stop recorded: mode={record.stop_mode} by={record.stop_requested_by}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="local", help="'local' or 'openai:<model>'")
    parser.add_argument("--delay", type=float, default=8.0, help="seconds before cancelling")
    args = parser.parse_args()
    main(args.model, args.delay)
