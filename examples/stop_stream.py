"""Seed 000 ported to tether: a long streaming graph, read from a background thread, stopped early.

Run it:  python examples/stop_stream.py

A node streams 50 chunks, one a second. A reader thread iterates `app.stream(...)`; after one second
the main thread calls `app.stop(config)` with the same thread id. The stream then ends at once with a
`run_finished` event whose status is `cancelled`, the chunks already produced are kept in the thread's
state, and `stop()` returns True.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from tether import END, AgentState, InMemoryCheckpointer, Message, StateGraph

logging.basicConfig(level=logging.INFO)

checkpointer = InMemoryCheckpointer()
CHUNK_DELAY = 1.0


async def main_agent(state: AgentState, config: dict | None = None):
    for idx in range(50):
        await asyncio.sleep(CHUNK_DELAY)
        yield Message.text_message(f"Chunk {idx + 1} from MAIN")


def should_use_tools(state: AgentState) -> str:
    return END


def build_app():
    graph = StateGraph()
    graph.add_node("MAIN", main_agent)
    graph.add_conditional_edges("MAIN", should_use_tools, {END: END})
    graph.set_entry_point("MAIN")
    return graph.compile(checkpointer=checkpointer)


def run_and_stop(stop_after: float = 1.0) -> dict:
    app = build_app()
    inp = {"messages": [Message.text_message("Start streaming and then stop", role="user")]}
    config = {"thread_id": "stop-demo-thread", "recursion_limit": 10}
    seen: list = []

    def reader():
        for chunk in app.stream(inp, config=config):
            if chunk.type == "message":
                logging.info("STREAM: %s", chunk.content)
            seen.append(chunk)

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    time.sleep(stop_after)
    status = app.stop(config)
    logging.info("Requested stop: %s", status)
    t.join(timeout=5)

    final = seen[-1]
    logging.info("Run %s ended: %s", final.run_id, final.status)
    messages = app.get_state(config["thread_id"]).values["messages"]
    return {"stopped": status, "final": final, "events": seen, "messages": messages}


if __name__ == "__main__":
    run_and_stop()
