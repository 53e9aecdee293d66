"""The MCP server the MCP tests talk to, built with the official SDK's own server API (`MCPServer`).

    python _mcp_server.py stdio            # MCP over stdin/stdout
    python _mcp_server.py http FD          # streamable HTTP at /mcp on an inherited listening socket

Tools:
- `echo(text)`: returns the text;
- `slow(seconds)`: 10 s of work in 50 ms ticks, with a progress notification per tick; if it is
  cancelled (MCP's `notifications/cancelled`), it records that and the tick it stopped at;
- `report()`: what `slow` did: its calls, the cancelled ones, and the ticks each ran;
  `report(wait_cancelled=N)` answers once N calls of `slow` were cancelled (a sync point);
- `stuck(seconds, signal)`: blocks the server's event loop (`time.sleep` in an async tool), so the
  server can read neither a cancellation nor a ping: a server that ignores cancellation;
- `ignore(seconds)`: works on, responsive, through any cancellation (a shielded sleep);
- `crash()`: exits the server process at once;
- `pid()`: the server process id.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("tether-test")
TICK = 0.05
calls: list[dict[str, object]] = []
cancelled = anyio.Event()  # replaced each time a call of `slow` is cancelled
cancel_count = 0


@server.tool()
async def echo(text: str) -> str:
    """Return the text."""
    return text


@server.tool()
async def slow(seconds: float, ctx: Context) -> str:
    """Work for `seconds`, reporting progress each tick."""
    global cancelled, cancel_count
    record: dict[str, object] = {"ticks": 0, "cancelled": False, "finished": False}
    calls.append(record)
    total = round(seconds / TICK)
    try:
        for tick in range(total):
            await ctx.report_progress(tick + 1, total, f"tick {tick + 1}")
            record["ticks"] = tick + 1
            await anyio.sleep(TICK)
    except anyio.get_cancelled_exc_class():
        record["cancelled"] = True
        cancel_count += 1
        cancelled.set()
        cancelled = anyio.Event()
        raise
    record["finished"] = True
    return f"worked {seconds} s"


@server.tool()
async def report(wait_cancelled: int = 0) -> dict[str, object]:
    """The calls of `slow`; waits until `wait_cancelled` of them were cancelled."""
    with anyio.fail_after(30):
        while cancel_count < wait_cancelled:
            await cancelled.wait()
    return {"calls": calls, "cancelled": cancel_count}


@server.tool()
async def stuck(seconds: float, signal: str) -> str:
    """Block the whole server (its event loop) for `seconds`; first write a line to the FIFO
    `signal` (the test's sync point: the server is blocked from then on)."""
    with open(signal, "w") as fifo:  # blocks until the test opens the FIFO to read
        fifo.write("blocking\n")
    time.sleep(seconds)  # deliberately blocking: this server cannot see a cancellation or a ping
    return "unstuck"


@server.tool()
async def ignore(seconds: float, ctx: Context) -> str:
    """Work for `seconds` while staying responsive, ignoring any cancellation."""
    await ctx.report_progress(0, None, "ignoring cancellation")
    with anyio.CancelScope(shield=True):
        await anyio.sleep(seconds)
    return "done anyway"


@server.tool()
async def crash() -> str:
    """Exit the server process at once, as a crashing server would."""
    os._exit(3)


@server.tool()
async def pid() -> int:
    """The server's process id."""
    return os.getpid()


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        import uvicorn

        app = server.streamable_http_app()
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=int(sys.argv[2]))])
