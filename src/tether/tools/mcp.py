"""`mcp_tools()`: the tools of an MCP server as tether tools, with stops that reach the server.

    from tether.tools.mcp import mcp_tools, stdio_server

    async with mcp_tools(stdio_server("python", ["weather_server.py"])) as tools:
        agent = Agent(model, tools=tools)
        ...

Built on the official `mcp` Python SDK (`pip install 'tether[mcp]'`), over stdio (the server is a
child process) or streamable HTTP (a URL).

Mechanism. `MCPToolset` owns one MCP session, held open by a supervisor task in the toolset's own
task group, for as long as the `async with` block lasts; every run of every agent that uses the
tools shares it. A tool call is a `tools/call` request sent from the run's task.

What a stop does to an MCP tool call, and how the session recovers:
- the run's cancel scope cancels the waiting `call_tool`; the SDK then sends MCP's
  `notifications/cancelled` for that request id (shielded, bounded), and the server cancels the
  tool's handler. The agent gives the call its usual synthetic `cancelled` result.
- the session stays open for the next run. Right after the cancellation the toolset pings the
  server in the background. A server that does not answer within `cancel_grace` seconds is
  treated as stuck (for example a stdio server whose tool blocks its event loop, so it can read
  neither the cancellation nor the ping): its session is closed, which for stdio closes the
  child's stdin, then terminates and kills its process tree (the SDK's shutdown sequence), and a
  fresh session (a new process) is opened for the next call.
- while that ping is outstanding, new calls wait for its answer (or for the new session); calls
  already waiting on a session that is closed this way fail with `MCPToolError`.
- a server that stays responsive but chooses to ignore the cancellation cannot be told apart
  from one that honoured it (MCP never answers a cancelled request); its work runs on until it
  ends by itself, and its late result is dropped. With `restart_on_cancel=True` every cancelled
  call closes the session instead (no ping), which stops a stdio server's process: its work ends
  whatever the server does with cancellations.
- a call that finds the connection closed (the server exited or crashed) fails with
  `MCPToolError`, and a new session (for stdio, a new process) serves the next call.

Progress notifications that the server sends during a call stream as `custom` events of the run:
`{"type": "mcp_progress", "server": ..., "tool": ..., "progress": ..., "total": ..., "message": ...}`.

A tool result is the text of its content blocks (non-text blocks as JSON). A result with
`isError` raises `MCPToolError`, which the agent turns into an error result the model can read.
The toolset must be used on the event loop that opened it, with the async API (`astream`,
`ainvoke`); runs of the sync API execute on tether's background loop, where the session does not
live.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

import anyio
from anyio.abc import TaskGroup, TaskStatus

from tether.errors import TetherError, UserError
from tether.tools.tool import Tool, ToolArgumentsError

if TYPE_CHECKING:
    from mcp import ClientSession

    from tether.context import RunContext

__all__ = [
    "MCPServerParams",
    "MCPTool",
    "MCPToolError",
    "MCPToolset",
    "StdioServer",
    "StreamableHTTPServer",
    "mcp_tools",
    "stdio_server",
    "streamable_http_server",
]

log = logging.getLogger("tether.tools.mcp")

CANCEL_GRACE = 5.0  # seconds a server has to answer a ping after a cancellation before it is reset
CONNECT_TIMEOUT = 30.0  # seconds to start a server and complete the MCP handshake


class MCPToolError(TetherError):
    """An MCP server answered a tool call with `isError`, or could not be reached."""


@dataclass(frozen=True, slots=True)
class StdioServer:
    """An MCP server started as a child process that speaks MCP over its stdin and stdout."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None  # merged over the SDK's default (safe) environment
    cwd: str | Path | None = None

    @property
    def label(self) -> str:
        return " ".join((self.command, *self.args))


@dataclass(frozen=True, slots=True)
class StreamableHTTPServer:
    """An MCP server reached over streamable HTTP at `url` (e.g. `http://127.0.0.1:8000/mcp`)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.url


MCPServerParams = StdioServer | StreamableHTTPServer


def stdio_server(
    command: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> StdioServer:
    """Describe a stdio MCP server: `command args...`, run as a child process per session."""
    if isinstance(args, str):
        raise UserError(f"args must be a list of strings, not the string {args!r}")
    return StdioServer(command, tuple(args), env, cwd)


def streamable_http_server(
    url: str, *, headers: Mapping[str, str] | None = None
) -> StreamableHTTPServer:
    """Describe an MCP server reached over streamable HTTP at `url`."""
    if not url.startswith(("http://", "https://")):
        raise UserError(f"an MCP server URL starts with http:// or https://, not {url!r}")
    return StreamableHTTPServer(url, dict(headers or {}))


class MCPTool(Tool):
    """One tool of an MCP server; `run()` sends `tools/call` on the toolset's session."""

    def __init__(self, toolset: MCPToolset, name: str, description: str, schema: dict[str, Any]):
        # Deliberately not `Tool.__init__`: there is no Python function; the server owns the
        # schema and validates the arguments itself.
        self.toolset = toolset
        self.name = name
        self.description = description
        self.isolation = "thread"
        self.is_async = True
        self._schema = schema

    def __repr__(self) -> str:
        return f"MCPTool({self.name!r}, server={self.toolset.server.label!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"MCP tool {self.name!r} has no local function; use `await tool.run(...)`")

    @property
    def parameters(self) -> dict[str, Any]:
        """The server's JSON schema of the arguments."""
        return self._schema

    def validate(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Decode the arguments to a JSON object; the server checks them against its schema.

        Raises:
            ToolArgumentsError: the text is not a JSON object.
        """
        data: Any = arguments
        if isinstance(arguments, str):
            try:
                data = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise ToolArgumentsError(
                    f"MCP tool {self.name!r} got arguments that are not JSON: {arguments!r} "
                    f"({exc}); send a JSON object",
                    tool_name=self.name,
                    arguments=arguments,
                ) from None
        if not isinstance(data, Mapping):
            raise ToolArgumentsError(
                f"MCP tool {self.name!r} got arguments {data!r}; send a JSON object",
                tool_name=self.name,
                arguments=arguments,
            )
        return dict(data)

    def json_arguments(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        return self.validate(arguments)

    async def run(
        self, arguments: str | Mapping[str, Any], *, ctx: RunContext | None = None
    ) -> str:
        """Call the tool on the server and return its result's text.

        Progress notifications become `custom` events of `ctx`'s run.

        Raises:
            ToolArgumentsError: the arguments are not a JSON object; nothing was sent.
            MCPToolError: the server answered with an error.

        Cancellation: the SDK sends `notifications/cancelled` for the request, and the toolset
        checks in the background that the server is still responsive (see the module docstring).
        """
        return await self.toolset.call(self.name, self.validate(arguments), ctx=ctx)

    def run_here(self, arguments: str | Mapping[str, Any]) -> str:
        raise UserError(f"MCP tool {self.name!r} runs on its server; use `await tool.run(...)`")


class MCPToolset(Sequence[MCPTool]):
    """The tools of one MCP server, and the session they share. See the module docstring.

    Use it as an async context manager (`async with mcp_tools(...) as tools`); it is a sequence of
    `MCPTool`s to pass to `Agent(tools=...)`.
    """

    def __init__(
        self,
        server: MCPServerParams,
        *,
        include: Sequence[str] | None = None,
        prefix: str = "",
        cancel_grace: float = CANCEL_GRACE,
        restart_on_cancel: bool = False,
    ) -> None:
        try:
            import mcp  # noqa: F401  # only to tell a missing extra early
        except ImportError:
            raise UserError(
                "MCP tools need the official MCP SDK: pip install 'tether[mcp]'"
            ) from None
        if not isinstance(server, StdioServer | StreamableHTTPServer):
            raise UserError(
                f"mcp_tools() takes stdio_server(...) or streamable_http_server(...), not {server!r}"
            )
        if cancel_grace <= 0:
            raise UserError(
                f"cancel_grace must be a positive number of seconds, not {cancel_grace!r}"
            )
        self.server = server
        self.cancel_grace = cancel_grace
        self.restart_on_cancel = restart_on_cancel
        self._include = None if include is None else frozenset(include)
        self._prefix = prefix
        self._tools: list[MCPTool] = []
        self._tg: TaskGroup | None = None
        # The open session, or None while (re)connecting; replaced only by `_supervise`.
        self._session: ClientSession | None = None
        # Set while `_session` is usable; a fresh unset event replaces it when the session drops.
        self._connected = anyio.Event()
        # Set to make `_supervise` close the current session (a stuck server) and open a new one.
        self._drop = anyio.Event()
        # How many sessions were opened so far (1 after entering; +1 per reset).
        self.sessions_opened = 0

    # the sequence of tools
    @overload
    def __getitem__(self, index: int) -> MCPTool: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[MCPTool]: ...
    def __getitem__(self, index: int | slice) -> MCPTool | Sequence[MCPTool]:
        return self._tools[index]

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[MCPTool]:
        return iter(self._tools)

    def __repr__(self) -> str:
        names = [t.name for t in self._tools]
        return f"MCPToolset({self.server.label!r}, tools={names!r})"

    # lifetime
    async def __aenter__(self) -> MCPToolset:
        """Start the server (stdio) or connect (HTTP), and list its tools.

        Raises:
            MCPToolError: the server could not be started or reached within `CONNECT_TIMEOUT`.

        Cancellation: a cancelled enter closes whatever was opened (a stdio child is killed).
        """
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            with anyio.fail_after(CONNECT_TIMEOUT):
                await tg.start(self._supervise)
        except BaseException as exc:
            tg.cancel_scope.cancel()
            try:
                await tg.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseException as group:  # the same failure, wrapped by the task group
                exc = group
            cause = _leaf(exc)
            if isinstance(cause, TetherError):
                raise cause from None
            if isinstance(cause, Exception):
                raise MCPToolError(
                    f"could not start or reach the MCP server {self.server.label!r}: {cause!r}; "
                    "check the command (or URL) and that the server speaks MCP"
                ) from cause
            raise exc from None
        self._tg = tg
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the session; a stdio server's process is stopped (then killed) by the SDK.

        Cancellation: the SDK's shutdown runs shielded with bounded waits, so it still completes.
        """
        tg, self._tg = self._tg, None
        if tg is None:
            return
        tg.cancel_scope.cancel()
        await tg.__aexit__(et, e, tb)

    async def _supervise(self, *, task_status: TaskStatus[None]) -> None:
        """Hold a session open; reopen it when `_drop` is set (a stuck server)."""
        first = True
        while True:
            async with AsyncExitStack() as stack:
                session = await self._open(stack)
                self.sessions_opened += 1
                if first:
                    await self._list_tools(session)
                self._session = session
                self._connected.set()
                if first:
                    first = False
                    task_status.started()
                await self._drop.wait()
                self._session = None
                if self._connected.is_set():  # else callers already wait on the unset one
                    self._connected = anyio.Event()
                self._drop = anyio.Event()

    async def _open(self, stack: AsyncExitStack) -> ClientSession:
        from mcp import ClientSession

        transport: AbstractAsyncContextManager[Any]
        if isinstance(self.server, StdioServer):
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=self.server.command,
                args=list(self.server.args),
                env=dict(self.server.env) if self.server.env is not None else None,
                cwd=self.server.cwd,
            )
            transport = stdio_client(params)
        else:
            from mcp.client.streamable_http import streamable_http_client

            http_client = None
            if self.server.headers:
                import httpx2

                http_client = await stack.enter_async_context(
                    httpx2.AsyncClient(headers=dict(self.server.headers))
                )
            transport = streamable_http_client(self.server.url, http_client=http_client)
        read, write = await stack.enter_async_context(transport)
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        return session

    async def _list_tools(self, session: ClientSession) -> None:
        listed = []
        cursor: str | None = None
        while True:
            from mcp.types import PaginatedRequestParams

            page = await session.list_tools(
                params=PaginatedRequestParams(cursor=cursor) if cursor else None
            )
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._tools = [
            MCPTool(
                self,
                self._prefix + t.name,
                t.description or "",
                dict(t.input_schema) if t.input_schema else {"type": "object", "properties": {}},
            )
            for t in listed
            if self._include is None or t.name in self._include
        ]
        if self._include is not None:
            missing = self._include - {t.name for t in listed}
            if missing:
                raise UserError(
                    f"the MCP server {self.server.label!r} has no tools {sorted(missing)!r}; it "
                    f"has {sorted(t.name for t in listed)!r}"
                )

    # calls
    async def call(
        self, name: str, arguments: dict[str, Any], *, ctx: RunContext | None = None
    ) -> str:
        """Send `tools/call` for the tool `name` (its name on this toolset) and return its text.

        Raises:
            MCPToolError: the toolset is closed, or the server answered with an error.

        Cancellation: see `MCPTool.run`.
        """
        from mcp.shared.exceptions import MCPError
        from mcp.types import CONNECTION_CLOSED

        tg = self._tg
        if tg is None:
            raise MCPToolError(
                f"the MCP toolset for {self.server.label!r} is closed; call its tools inside "
                "`async with mcp_tools(...)`"
            )
        while self._session is None or not self._connected.is_set():
            await self._connected.wait()
        session = self._session
        remote = name.removeprefix(self._prefix)

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if ctx is not None:
                ctx.emit(
                    {
                        "type": "mcp_progress",
                        "server": self.server.label,
                        "tool": name,
                        "progress": progress,
                        "total": total,
                        "message": message,
                    }
                )

        try:
            result = await session.call_tool(remote, arguments, progress_callback=on_progress)
        except anyio.get_cancelled_exc_class():
            # The SDK has sent notifications/cancelled. New calls wait until the server has
            # shown it can still answer (or was replaced).
            if self._session is session and self._connected.is_set():
                self._connected = anyio.Event()
            if self.restart_on_cancel:
                if self._session is session:
                    self._drop.set()
            else:
                tg.start_soon(self._check_responsive, session)
            raise
        except (MCPError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            closed = not isinstance(exc, MCPError) or exc.error.code == CONNECTION_CLOSED
            if closed and self._session is session:
                # The server exited or the connection broke: open a new session for the next call.
                log.warning("the MCP server %r closed the connection; reopening", self.server.label)
                if self._connected.is_set():
                    self._connected = anyio.Event()
                self._drop.set()
            raise MCPToolError(f"MCP tool {name!r} on {self.server.label!r} failed: {exc}") from exc
        text = _result_text(result)
        if result.is_error:
            raise MCPToolError(f"MCP tool {name!r} reported an error: {text}")
        return text

    async def _check_responsive(self, session: ClientSession) -> None:
        """After a cancelled call: drop the session if the server does not answer a ping soon."""
        answered = False
        with anyio.move_on_after(self.cancel_grace):
            try:
                await session.send_ping()
                answered = True
            except Exception:  # the connection broke: it is just as unusable as a stuck server
                log.warning("MCP server %r failed a ping after a cancellation", self.server.label)
        if self._session is not session:
            return  # already replaced
        if answered:
            self._connected.set()
        else:
            log.warning(
                "MCP server %r did not answer within %.1f s of a cancellation; reopening its "
                "session%s",
                self.server.label,
                self.cancel_grace,
                " (its process is stopped)" if isinstance(self.server, StdioServer) else "",
            )
            self._drop.set()


def mcp_tools(
    server: MCPServerParams,
    *,
    include: Sequence[str] | None = None,
    prefix: str = "",
    cancel_grace: float = CANCEL_GRACE,
    restart_on_cancel: bool = False,
) -> MCPToolset:
    """The tools of an MCP server, for `async with`; see the module docstring.

    Args:
        server: `stdio_server(command, args)` or `streamable_http_server(url)`.
        include: Only these tools (by their server names); all by default.
        prefix: Prepended to each tool's name as the model sees it (to keep two servers apart).
        cancel_grace: Seconds a server has to answer a ping after a cancelled call before its
            session is closed (a stdio server's process killed) and a new one opened.
        restart_on_cancel: Close the session after every cancelled call, and open a new one for
            the next call. For a stdio server this stops its process, so the cancelled work surely
            ends even on a server that ignores cancellation (at the cost of a restart).
    """
    return MCPToolset(
        server,
        include=include,
        prefix=prefix,
        cancel_grace=cancel_grace,
        restart_on_cancel=restart_on_cancel,
    )


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups (task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _result_text(result: Any) -> str:
    parts: list[str] = []
    for block in result.content:
        text = getattr(block, "text", None)
        if isinstance(text, str):
            parts.append(text)
        else:
            parts.append(block.model_dump_json(by_alias=True, exclude_none=True))
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content)
    return "\n".join(parts)
