"""`tether`: serve apps over HTTP, run the local demo, or chat in the terminal.

    tether serve myproject.agents:app --port 8000 --db ./threads.db --auth-file keys.txt
    tether demo                       # SmolLM2 in-process, UI at http://127.0.0.1:8000
    tether chat [module:attr]         # terminal chat; Ctrl+C stops the answer, not the program
    tether worker myproject.agents:app --database-url postgresql://... --redis-url redis://...
                                      # execute background runs queued by `serve --run-queue`

A target `module:attr` (or `path/to/file.py:attr`) names an `App` (a graph, agent or flow), a dict of
apps by name, or a zero-argument function that returns either. The current directory is importable.

`tether chat` runs on tether's async API in one event loop. SIGINT is taken over by the loop
(`anyio.open_signal_receiver`), so Ctrl+C never raises `KeyboardInterrupt` into the loop:
- during an answer it becomes a stop of the run (`requested_by="user"`): the partial answer is
  kept, marked stopped, and the prompt comes back (`/continue` resumes the answer);
- at the prompt, the first Ctrl+C prints a hint and the second one in a row quits (a terminal
  discards the half-typed line on Ctrl+C, so an "empty prompt" cannot be told apart); Ctrl+D or
  `/exit` quits at once.
Input is read by a daemon thread that hands each line to the loop, so the loop never blocks on the
keyboard and quitting never waits for a pending `input()`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio
import anyio.from_thread
import anyio.lowlevel
import typer
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from rich.console import Console
from rich.markup import escape

from . import __version__
from ._extras import require
from .app import App
from .commands import Resume
from .errors import MissingExtraError, TetherError, ThreadBusyError, UserError
from .events import (
    Event,
    MessageDeltaEvent,
    MessageEvent,
    RunFinished,
    ToolCallFinished,
    ToolCallStarted,
)
from .handle import RunHandle
from .ids import new_id
from .messages import Message

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["cli", "load_target", "main"]

console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)

cli = typer.Typer(
    name="tether",
    help="Streaming AI agents you can stop at any moment, and continue.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

GRACEFUL_SHUTDOWN = 3  # seconds uvicorn gives open streams before closing them at shutdown


def _show_version(value: bool) -> None:
    if value:
        console.print(f"tether {__version__}")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Streaming AI agents you can stop at any moment, and continue."""


# ---------------------------------------------------------------- targets


def load_target(spec: str) -> App | dict[str, App]:
    """Import `module:attr` (or `file.py:attr`) and return the app(s) it names.

    `attr` may be dotted; a zero-argument callable is called. Raises `UserError` naming what is
    wrong: a malformed spec, a missing module or attribute, or something that is not an app.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"the target {spec!r} is not of the form 'module:attr' or 'file.py:attr'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name).resolve()
            file_spec = importlib.util.spec_from_file_location(path.stem, path)
            if file_spec is None or file_spec.loader is None or not path.is_file():
                raise UserError(f"the file {module_name!r} of target {spec!r} does not exist")
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[path.stem] = module
            file_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UserError(f"cannot import {module_name!r} for target {spec!r}: {exc}") from exc
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise UserError(f"{module_name!r} has no attribute {attr!r} (target {spec!r})")
        value = getattr(value, part)
    if callable(value) and not isinstance(value, App) and not isinstance(value, Mapping):
        if inspect.iscoroutinefunction(value):
            raise UserError(f"{spec!r} is an async function; make the factory a plain function")
        value = value()
    if isinstance(value, App):
        return value
    if isinstance(value, Mapping) and value and all(isinstance(v, App) for v in value.values()):
        return {str(k): v for k, v in value.items()}
    raise UserError(
        f"{spec!r} is {type(value).__name__}, not a tether App (a graph, agent or flow), a dict "
        "of apps, or a function returning one"
    )


def _one_app(apps: App | dict[str, App], name: str | None) -> App:
    if isinstance(apps, App):
        return apps
    if name is None:
        return next(iter(apps.values()))
    if name not in apps:
        raise UserError(f"there is no app {name!r}; the target has {sorted(apps)!r}")
    return apps[name]


def _fail(message: str, code: int = 1) -> typer.Exit:
    # escape: "pip install 'tether[server]'" and reprs like ['a'] are text, not rich markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def _require(feature: str, *extras: str) -> None:
    """Exit 2 with the one-line `pip install` fix if an extra is missing (see `tether.__main__`)."""
    try:
        require(feature, *extras)
    except MissingExtraError as exc:
        raise _fail(str(exc), 2) from None


# ---------------------------------------------------------------- serving


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port fails here with a clear message, not in uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _fail(f"cannot listen on {host}:{port} ({exc.strerror}); try --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve(
    apps: App | dict[str, App],
    host: str,
    port: int,
    auth_file: Path | None,
    log: str,
    sock: socket.socket | None = None,
    run_queue: bool = False,
) -> None:
    _require("tether serve", "server")
    import uvicorn

    from .server import create_app, tune_gc

    try:
        api = create_app(apps, api_keys=auth_file, queue_background_runs=run_queue)
    except UserError as exc:
        raise _fail(str(exc)) from None
    sock = sock or _bind(host, port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    names = ", ".join(api.state.tether.catalog.names)
    console.print(f"[bold green]✓ ready[/] serving [bold]{names}[/] (pid {os.getpid()})")
    console.print(f"  Chat UI   [link={url}]{url}[/link]")
    console.print(f"  API docs  {url}/docs")
    console.print(f"  OpenAI    {url}/v1  (model = app name)")
    if api.state.tether.keys is not None:
        console.print(f"  Auth      {len(api.state.tether.keys)} API key(s)")
    console.print("  [dim]Ctrl+C to quit[/]")
    config = uvicorn.Config(
        api,
        log_level=log,
        access_log=log in ("debug", "info"),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    tune_gc()
    # uvicorn re-raises the Ctrl+C it handled, after a clean shutdown: that is a normal exit.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    console.print("[dim]server stopped[/]")


HostOpt = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        envvar="TETHER_DATABASE_URL",
        help="Postgres URL for apps that use the default storage (instead of SQLite).",
    ),
]
RedisUrlOpt = Annotated[
    str | None,
    typer.Option(
        envvar="TETHER_REDIS_URL",
        help="Redis URL for apps that use the default run registry: stops, joins and thread "
        "policies then work across processes.",
    ),
]


@cli.command()
def serve(
    target: Annotated[
        str, typer.Argument(help="module:attr of an App, a dict of Apps, or a factory.")
    ],
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    db: Annotated[
        Path | None, typer.Option(help="SQLite file for apps that use the default storage.")
    ] = None,
    auth_file: Annotated[
        Path | None,
        typer.Option(help="API key file: one key per line, optionally a name after it."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    database_url: DatabaseUrlOpt = None,
    redis_url: RedisUrlOpt = None,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Server processes sharing the port (more than 1 needs Redis)."),
    ] = 1,
    run_queue: Annotated[
        bool,
        typer.Option(
            "--run-queue",
            help="Queue background runs (POST /threads/{id}/runs) for `tether worker` "
            "processes instead of executing them here (needs --database-url and --redis-url).",
        ),
    ] = False,
) -> None:
    """Serve apps over HTTP: REST, SSE, WebSocket, OpenAI-compatible, and the chat UI at /."""
    if db is not None:
        os.environ["TETHER_DB"] = str(db)  # read by the default checkpointer when apps are built
    _scale_out_env(database_url, redis_url)
    if workers > 1 and not redis_url:
        raise _fail(
            f"--workers {workers} needs --redis-url (or TETHER_REDIS_URL): without Redis a stop "
            "sent to one process cannot reach a run in another"
        )
    if run_queue and not (database_url and redis_url):
        raise _fail(
            "--run-queue needs --database-url and --redis-url (or TETHER_DATABASE_URL and "
            "TETHER_REDIS_URL): the queue lives in Postgres, its runs are coordinated by Redis"
        )
    if workers == 1:
        _serve(_load(target), host, port, auth_file, log_level, run_queue=run_queue)
        return
    _serve_forked(target, host, port, auth_file, log_level, workers, run_queue)


def _scale_out_env(database_url: str | None, redis_url: str | None) -> None:
    """Read by the default checkpointer and registry when the target builds its apps."""
    if database_url:
        os.environ["TETHER_DATABASE_URL"] = database_url
    if redis_url:
        os.environ["TETHER_REDIS_URL"] = redis_url


def _load(target: str) -> App | dict[str, App]:
    try:
        return load_target(target)
    except UserError as exc:
        raise _fail(str(exc)) from None


def _serve_forked(
    target: str,
    host: str,
    port: int,
    auth_file: Path | None,
    log: str,
    workers: int,
    run_queue: bool,
) -> None:
    """Bind once, fork `workers` processes that each import the target and serve the socket (the
    kernel spreads connections), and stop them all on Ctrl+C or SIGTERM."""
    sock = _bind(host, port)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the child: its own event loop, apps and Redis registry
            code = 0
            try:
                _serve(_load(target), host, port, auth_file, log, sock, run_queue)
            except typer.Exit as exc:
                code = exc.exit_code
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except InterruptedError:
                continue


# ---------------------------------------------------------------- worker


@cli.command()
def worker(
    target: Annotated[
        str, typer.Argument(help="module:attr of an App, a dict of Apps, or a factory.")
    ],
    database_url: DatabaseUrlOpt = None,
    redis_url: RedisUrlOpt = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Runs executed at once.")] = 10,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "warning",
) -> None:
    """Execute background runs that `tether serve --run-queue` queued in Postgres."""
    if not database_url or not redis_url:
        raise _fail(
            "tether worker needs --database-url and --redis-url (or TETHER_DATABASE_URL and "
            "TETHER_REDIS_URL): it takes runs from the Postgres queue and coordinates them in Redis"
        )
    _scale_out_env(database_url, redis_url)
    logging.basicConfig(level=log_level.upper())
    try:
        from .worker import Worker
    except ImportError as exc:
        raise _fail(
            f"tether worker needs the postgres and redis extras ({exc}): "
            "pip install 'tether[postgres,redis]'"
        ) from None

    try:
        pool = Worker(_load(target), concurrency=concurrency)
    except UserError as exc:
        raise _fail(str(exc)) from None
    anyio.run(_work, pool)
    console.print("[dim]worker stopped[/]")


async def _work(pool: Worker) -> None:
    """Run the worker until SIGINT or SIGTERM, then stop its runs and close its clients."""
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                await tg.start(pool.run)
                console.print(
                    f"[bold green]✓ ready[/] worker for [bold]{', '.join(pool.apps) or 'default'}"
                    f"[/] (pid {os.getpid()}, {pool.concurrency} at once)"
                )
                async for _ in signals:
                    break
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for app in pool.apps.values():
                await app.registry.aclose()
                await app.checkpointer.aclose()


def _load_demo(db: str | None, feature: str) -> App:
    """Build the demo agent, loading and warming the model with a progress display."""
    _require(feature, "local")
    from .demo import demo_agent, demo_model, warm_up

    model = demo_model()
    started = time.monotonic()
    with console.status("Loading SmolLM2-135M-Instruct (local, no API key)…", spinner="dots"):
        try:
            anyio.run(warm_up, model)
        except TetherError as exc:  # the extra is installed (checked above): a broken model
            raise _fail(str(exc)) from None
    console.print(f"[green]✓[/] model ready in {time.monotonic() - started:.1f} s")
    return demo_agent(db=db, model=model)


@cli.command()
def demo(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    db: Annotated[Path, typer.Option(help="SQLite file for the demo's threads.")] = Path(
        ".tether/demo.db"
    ),
) -> None:
    """Serve the built-in demo agent (SmolLM2 running locally) with the chat UI."""
    console.print(f"[bold]tether demo[/] · threads in {db}")
    _require("tether demo", "server", "local")
    agent = _load_demo(str(db), "tether demo")
    _serve(agent, host, port, None, "warning")


# ---------------------------------------------------------------- chat


class _Interrupt:
    """Ctrl+C pressed at the prompt."""


INTERRUPT: Final = _Interrupt()
_Item = str | None | _Interrupt  # a line, EOF, or Ctrl+C


def _read_stdin(send: MemoryObjectSendStream[_Item], token: Any) -> None:
    """Daemon thread: hand each input line (then None at EOF) to the loop."""
    while True:
        line = sys.stdin.readline()
        item: _Item = line.rstrip("\r\n") if line else None
        try:
            anyio.from_thread.run_sync(send.send_nowait, item, token=token)
        except (RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # the chat ended
        if item is None:
            return


class ChatSession:
    """A terminal conversation with one app; see the module docstring for Ctrl+C."""

    def __init__(self, app: App, *, thread_id: str | None = None, out: Console = console) -> None:
        self.app = app
        self.thread_id = thread_id or new_id()
        self.out = out
        self.handle: RunHandle | None = None  # the run being answered, None at the prompt
        self.answering = False  # True from sending a message until its run_finished
        self.stop_early = False  # Ctrl+C came before the run had a handle
        self.mid_line = False  # the cursor is after streamed text, not at a line start
        self.streamed: set[str] = set()  # message ids whose text went out as deltas

    async def run(self) -> None:
        """Chat until Ctrl+D, `/exit` or two Ctrl+C at the prompt. Cancellation ends the chat."""
        send, receive = anyio.create_memory_object_stream[_Item](64)
        token = anyio.lowlevel.current_token()
        threading.Thread(
            target=_read_stdin, args=(send, token), name="tether-chat-stdin", daemon=True
        ).start()
        with send, receive:
            async with anyio.create_task_group() as tg:
                await tg.start(self._watch_sigint, send)
                await self._repl(receive)
                tg.cancel_scope.cancel()

    async def _watch_sigint(
        self,
        send: MemoryObjectSendStream[_Item],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()  # from here on Ctrl+C is ours, never a KeyboardInterrupt
            async for _ in signals:
                if not self.answering:
                    send.send_nowait(INTERRUPT)
                elif self.handle is not None:
                    await self.app.astop(
                        run_id=self.handle.run_id,
                        requested_by="user",
                        reason="Ctrl+C in tether chat",
                        wait=False,
                    )
                else:
                    self.stop_early = True

    def _print(self, text: str, *, style: str | None = None, end: str = "\n") -> None:
        self.out.print(text, style=style, end=end, markup=False, soft_wrap=True)
        self.out.file.flush()

    def _line_start(self) -> None:
        if self.mid_line:
            self._print("")
            self.mid_line = False

    async def _repl(self, lines: MemoryObjectReceiveStream[_Item]) -> None:
        name = self.app.name or "app"
        self._print(f"tether chat · {name} · thread {self.thread_id}", style="bold")
        self._print(
            "Ctrl+C stops an answer · /continue resumes it · /new starts over · "
            "Ctrl+C twice or Ctrl+D quits",
            style="dim",
        )
        interrupts = 0
        while True:
            self._print("you › ", style="bold cyan", end="")
            item = await lines.receive()
            if isinstance(item, _Interrupt):
                interrupts += 1
                if interrupts >= 2:
                    self._print("\nbye")
                    return
                self._print("\n(press Ctrl+C again, or Ctrl+D, to quit)", style="dim")
                continue
            interrupts = 0
            if item is None:
                self._print("")
                return
            text = item.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return
            if text == "/new":
                self.thread_id = new_id()
                self._print(f"new thread {self.thread_id}", style="dim")
                continue
            value: Any = Resume() if text == "/continue" else {"messages": [Message.user(text)]}
            await self._answer(value)

    async def _answer(self, value: Any) -> None:
        """Stream one run; Ctrl+C meanwhile stops it (see `_watch_sigint`)."""
        self.answering, self.stop_early = True, False
        try:
            stream = self.app.astream(value, thread_id=self.thread_id, on_disconnect="cancel")
            try:
                self.handle = await stream.start()
            except ThreadBusyError as exc:
                self._print(str(exc), style="yellow")
                return
            if self.stop_early:
                await self.app.astop(
                    run_id=self.handle.run_id,
                    requested_by="user",
                    reason="Ctrl+C in tether chat",
                    wait=False,
                )
            self._print("tether › ", style="bold magenta", end="")
            self.mid_line = True
            async with stream:
                async for event in stream:
                    self._render(event)
        except UserError as exc:
            self._line_start()
            self._print(f"error: {exc}", style="red")
        finally:
            self.handle = None
            self.answering = False

    def _render(self, event: Event) -> None:
        if isinstance(event, MessageDeltaEvent):
            if event.role == "assistant" and event.content:
                self.streamed.add(event.message_id)
                self._print(event.content, end="")
                self.mid_line = True
        elif isinstance(event, MessageEvent):
            msg = event.message
            if msg.role == "assistant" and msg.content and msg.id not in self.streamed:
                self._print(msg.content, end="")
                self.mid_line = True
        elif isinstance(event, ToolCallStarted):
            self._line_start()
            self._print(f"  ⚙ {event.name}({event.arguments}) …", style="dim")
        elif isinstance(event, ToolCallFinished):
            self._line_start()
            mark = {"complete": "✓", "error": "✗", "cancelled": "■"}[event.status]
            self._print(f"  {mark} {event.name}: {event.status}", style="dim")
        elif isinstance(event, RunFinished):
            self._line_start()
            if event.status == "cancelled":
                self._print("  ■ stopped — /continue resumes the answer", style="yellow")
            elif event.status == "failed":
                self._print(f"  ✗ failed: {event.error}", style="red")
            elif event.status == "interrupted":
                self._print("  ⏸ paused", style="yellow")


@cli.command()
def chat(
    target: Annotated[
        str | None, typer.Argument(help="module:attr of an App; default: the local demo agent.")
    ] = None,
    app: Annotated[str | None, typer.Option(help="Which app, when the target has several.")] = None,
    thread: Annotated[str | None, typer.Option(help="Continue this thread id.")] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file for the threads.")] = None,
) -> None:
    """Chat in the terminal with live streaming. Ctrl+C stops the answer, not the program."""
    try:
        if target is None:
            chosen = _load_demo(str(db or Path(".tether/demo.db")), "tether chat")
        else:
            if db is not None:
                os.environ["TETHER_DB"] = str(db)
            chosen = _one_app(load_target(target), app)
    except UserError as exc:
        raise _fail(str(exc)) from None
    anyio.run(ChatSession(chosen, thread_id=thread).run)


def main() -> None:
    """Run the CLI; the `tether` console script is `tether.__main__.main`, which checks the extras
    first."""
    cli()
