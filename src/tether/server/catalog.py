"""The served apps, by name, and which app and owner each thread belongs to.

Every engine — graph, agent, flow — is an `App`, so the server treats them alike. A thread is bound
to one app when it is created: its metadata records `app` (the served name), `owner` (the key hash,
see `auth.py`) and `title` (the first user message, for the UI's thread list). Apps may share one
checkpointer or have their own; a thread is looked up in each distinct checkpointer once.

This is where a request's thread id meets storage. With auth on, the id a client sends is its
*public* id, and its thread is stored under an *internal* id in the caller key's namespace
(`Principal.internal_id`, see `auth.py`): every lookup, creation and listing here maps it, and a
`ThreadRef` carries both — `thread_id` (internal: what the app and storage are called with) and
`public_id` (what the client sees). Whatever goes back to a client goes through the ref: run
records (`ThreadRef.public_record`), events (`ThreadRef.public_event`) and error texts
(`ThreadRef.public_error`). With auth off both ids are the same and the mapping does nothing.

A thread created outside the server (through the Python API) has no `app` in its metadata: it
belongs to the first served app whose checkpointer holds it, and, having no owner, it is only
visible when auth is off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from ..app import App
from ..errors import NotFoundError, ThreadBusyError, UserError
from ..events import Event, RunFinished, replace
from ..ids import new_id
from ..run import RunRecord
from ..storage.base import Checkpointer, ThreadInfo
from .auth import OWNER_KEY, PUBLIC_ID_KEY, Principal
from .errors import ApiError

__all__ = ["Catalog", "ThreadRef"]

APP_KEY = "app"
TITLE_KEY = "title"
RESERVED_KEYS = frozenset({OWNER_KEY, APP_KEY, PUBLIC_ID_KEY})
TITLE_LENGTH = 80
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """A thread the caller may use, with the app that runs it."""

    info: ThreadInfo
    app_name: str
    app: App
    public_id: str  # the id the caller knows the thread by; `thread_id` is the stored one
    created: bool = False  # this request created the thread (see `Catalog.start_run`)

    @property
    def thread_id(self) -> str:
        """The stored (internal) id: what the app, its storage and its registry are called with."""
        return self.info.thread_id

    def public_text(self, text: str) -> str:
        """`text` with the internal thread id replaced by the public one."""
        internal, public = self.thread_id, self.public_id
        if internal == public or internal not in text:
            return text
        return text.replace(repr(internal), repr(public)).replace(internal, public)

    def public_record(self, record: RunRecord) -> RunRecord:
        """A run record of this thread as the caller sees it: the public thread id."""
        if self.thread_id == self.public_id:
            return record
        error = self.public_text(record.error) if record.error is not None else None
        return record.model_copy(update={"thread_id": self.public_id, "error": error})

    def public_event(self, event: Event) -> Event:
        """An event of a run on this thread as the caller sees it: the public thread id."""
        if self.thread_id == self.public_id or event.thread_id != self.thread_id:
            return event
        if isinstance(event, RunFinished) and event.error is not None:
            return replace(event, thread_id=self.public_id, error=self.public_text(event.error))
        return replace(event, thread_id=self.public_id)

    def public_error(self, exc: BaseException) -> None:
        """Rewrite the message of an error about this thread, in place, to name the public id.

        Only the text changes (and `ThreadBusyError.thread_id`); the type and traceback stay.
        """
        if self.thread_id == self.public_id:
            return
        if isinstance(exc, ThreadBusyError) and exc.thread_id == self.thread_id:
            exc.thread_id = self.public_id
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (self.public_text(exc.args[0]), *exc.args[1:])


def title_of(text: str) -> str | None:
    """A thread's title from its first user message: one line, at most `TITLE_LENGTH` long."""
    title = " ".join(text.split())
    if not title:
        return None
    if len(title) > TITLE_LENGTH:
        title = title[: TITLE_LENGTH - 1].rstrip() + "…"
    return title


class Catalog:
    """The apps a server serves, and thread and run lookup with ownership checks.

    Every method that takes a `thread_id` and a `Principal` takes the caller's *public* id and maps
    it to storage (see the module docstring); the refs it returns carry both ids.
    """

    def __init__(self, apps: App | Mapping[str, App]) -> None:
        if isinstance(apps, App):
            apps = {apps.name or "default": apps}
        if not apps:
            raise UserError("create_app() needs at least one app to serve")
        for name, app in apps.items():
            if not isinstance(app, App):
                raise TypeError(f"create_app() serves tether apps; {name!r} is {app!r}")
        self.apps: dict[str, App] = dict(apps)
        self.default_name = next(iter(self.apps))
        # Each distinct checkpointer once, with the names of the apps that use it, in order.
        self._stores: list[tuple[Checkpointer, list[str]]] = []
        for name, app in self.apps.items():
            for store, names in self._stores:
                if store is app.checkpointer:
                    names.append(name)
                    break
            else:
                self._stores.append((app.checkpointer, [name]))

    @property
    def names(self) -> list[str]:
        """The served app names, in the order they were given."""
        return list(self.apps)

    async def ensure_ready(self) -> None:
        """Set up every app's storage (idempotent; also done lazily on first use)."""
        for app in self.apps.values():
            await app.engine.ensure_ready()

    def app(self, name: str | None) -> tuple[str, App]:
        """The app called `name`, or the default app for None; 422 for an unknown name."""
        if name is None:
            return self.default_name, self.apps[self.default_name]
        app = self.apps.get(name)
        if app is None:
            raise ApiError(
                422, f"there is no app {name!r}; this server serves {sorted(self.apps)!r}"
            )
        return name, app

    async def _lookup(self, internal_id: str, public_id: str) -> ThreadRef | None:
        """The stored thread `internal_id` and its app, whoever owns it; None if it is missing."""
        await self.ensure_ready()
        for store, _ in self._stores:
            info = await store.get_thread(internal_id)
            if info is not None:
                return self._ref(store, info, public_id)
        return None

    def _ref(self, store: Checkpointer, info: ThreadInfo, public_id: str) -> ThreadRef:
        """The ref of a thread found in `store`: its bound app, else the store's first app."""
        names = next(names for s, names in self._stores if s is store)
        bound = info.metadata.get(APP_KEY)
        name = bound if bound in names else names[0]
        return ThreadRef(info, name, self.apps[name], public_id)

    async def find(self, thread_id: str, principal: Principal) -> ThreadRef | None:
        """The caller's thread `thread_id` (a public id), or None if the caller has none by it.

        Looks in the caller's namespace, then (auth on) for a thread stored under the public id
        itself that the caller owns: one created before namespaces existed. Another key's thread
        is never found, so it looks exactly like a missing one.

        Cancellation: reads only; nothing to undo.
        """
        ref = await self._lookup(principal.internal_id(thread_id), thread_id)
        if ref is None:
            return await self._legacy(thread_id, principal)
        return ref if principal.owns(ref.info.metadata) else None

    async def _legacy(self, thread_id: str, principal: Principal) -> ThreadRef | None:
        """The caller's thread stored under the public id `thread_id` itself: one created
        before namespaces existed. None with auth off (there is no namespace to fall back from)."""
        if principal.owner is None or principal.in_namespace(thread_id):
            return None
        ref = await self._lookup(thread_id, thread_id)
        return ref if ref is not None and principal.owns(ref.info.metadata) else None

    async def thread(self, thread_id: str, principal: Principal) -> ThreadRef:
        """The caller's thread; raises `NotFoundError` (404) if the caller has none by that id."""
        ref = await self.find(thread_id, principal)
        if ref is None:
            raise NotFoundError(f"there is no thread {thread_id!r}")
        return ref

    async def create_thread(
        self,
        principal: Principal,
        *,
        thread_id: str | None = None,
        app_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        if_exists: str = "raise",
        title: str | None = None,
    ) -> ThreadRef:
        """Create a thread owned by the caller, atomically (`Checkpointer.create_thread`).

        `thread_id` is the public id (a new random one if None). An id the caller already has
        raises 409, unless `if_exists="do_nothing"`, which returns that thread; another key's
        thread of that id does not count (with auth on it is another thread). Of two calls of
        one caller creating one id at once, exactly one creates it; the owner of a thread never
        changes. The returned ref has `created` set when this call made the thread.

        Cancellation: the insert is one atomic statement; a cancelled call made the thread or not.
        """
        name, app = self.app(app_name)
        public = thread_id or new_id()
        internal = principal.internal_id(public)
        user_meta = {k: v for k, v in (metadata or {}).items() if k not in RESERVED_KEYS}
        if title is not None and (text := title_of(title)) is not None:
            user_meta[TITLE_KEY] = text
        stamp = principal.stamp()
        if internal != public:
            stamp[PUBLIC_ID_KEY] = public
        info = ThreadInfo(thread_id=internal, metadata={**user_meta, APP_KEY: name, **stamp})
        await self.ensure_ready()
        # Stored ids are one namespace across the served checkpointers; those of other apps are
        # only looked at (the atomic insert happens in the app's own checkpointer). The caller's
        # thread from before namespaces (stored under the public id) counts as theirs too.
        existing = await self._lookup(internal, public) if len(self._stores) > 1 else None
        if existing is None:
            existing = await self._legacy(public, principal)
        if existing is None:
            stored, created = await app.checkpointer.create_thread(info)
            if created:
                return ThreadRef(stored, name, app, public, created=True)
            existing = self._ref(app.checkpointer, stored, public)
        if if_exists == "do_nothing" and principal.owns(existing.info.metadata):
            return existing
        raise ApiError(
            409,
            f"the thread id {public!r} is taken; choose another, or omit it",
            type="conflict",
        )

    async def thread_for_run(
        self,
        thread_id: str,
        principal: Principal,
        app_name: str | None,
        *,
        title: str | None = None,
    ) -> ThreadRef:
        """The caller's thread for a new run, created (owned by the caller, titled) if it is new.

        Raises 422 when `app_name` names a different app than the one the thread is bound to,
        and 404 when the id is taken by a thread the caller does not own (with auth on, only
        possible for a thread of the caller's namespace made outside the server).
        """
        ref = await self.find(thread_id, principal)
        if ref is None:
            try:
                return await self.create_thread(
                    principal,
                    thread_id=thread_id,
                    app_name=app_name,
                    if_exists="do_nothing",
                    title=title,
                )
            except ApiError as exc:
                if exc.status_code != 409:
                    raise
                raise NotFoundError(f"there is no thread {thread_id!r}") from None
        if app_name is not None and app_name != ref.app_name:
            self.app(app_name)  # 422 for an unknown name first
            raise ApiError(
                422,
                f"thread {thread_id!r} belongs to the app {ref.app_name!r}, not {app_name!r}; "
                "start a new thread for another app",
            )
        if title is not None:
            ref = await self.set_title(ref, title)
        return ref

    async def start_run(self, ref: ThreadRef, start: Awaitable[T]) -> T:
        """Await `start` (the app's `astart`, or a stream's `start`) for a run on `ref`.

        If the app refuses the run (an exception), a thread this request created for it is
        deleted again, shielded, so a refused run leaves nothing behind, unless another request
        took the new thread meanwhile (the refusal is `ThreadBusyError`, or the thread holds a
        run): that thread is the other run's now. The error's text names the public thread id.
        Cancelled: the cancellation propagates and the thread stays (the run may have started).
        """
        try:
            return await start
        except Exception as exc:
            if ref.created and not isinstance(exc, ThreadBusyError):
                with anyio.CancelScope(shield=True):
                    if not await ref.app.checkpointer.list_runs(ref.thread_id, limit=1):
                        await ref.app.checkpointer.delete_thread(ref.thread_id)
            ref.public_error(exc)
            raise

    async def set_title(self, ref: ThreadRef, text: str) -> ThreadRef:
        """Give an untitled thread a title (the start of its first user message)."""
        title = title_of(text)
        if ref.info.metadata.get(TITLE_KEY) or title is None:
            return ref
        info = ThreadInfo(
            thread_id=ref.info.thread_id,
            created_at=ref.info.created_at,
            metadata={**ref.info.metadata, TITLE_KEY: title},
        )
        await ref.app.checkpointer.put_thread(info)
        return dataclasses.replace(ref, info=info)

    async def list_threads(self, principal: Principal, *, limit: int = 100) -> list[ThreadRef]:
        """The caller's threads, newest first, by their public ids."""
        await self.ensure_ready()
        filt = principal.stamp() or None
        refs: list[ThreadRef] = []
        for store, _ in self._stores:
            for info in await store.list_threads(metadata=filt, limit=limit):
                public = principal.public_id(info.thread_id, info.metadata)
                refs.append(self._ref(store, info, public))
        refs.sort(key=lambda r: r.info.created_at, reverse=True)
        return refs[:limit]

    async def run(self, run_id: str, principal: Principal) -> tuple[RunRecord, ThreadRef]:
        """The caller's run and its thread; raises `NotFoundError` (404) otherwise."""
        await self.ensure_ready()
        for app in self.apps.values():
            record = await app.aget_run(run_id)
            if record is None:
                continue
            ref = await self._lookup(record.thread_id, record.thread_id)
            if ref is not None and principal.owns(ref.info.metadata):
                public = principal.public_id(ref.thread_id, ref.info.metadata)
                return record, dataclasses.replace(ref, public_id=public)
            break
        raise NotFoundError(f"there is no run {run_id!r}")

    async def run_on(self, ref: ThreadRef, run_id: str) -> RunRecord:
        """The run `run_id` of the thread `ref`; raises `NotFoundError` (404) otherwise."""
        record = await ref.app.aget_run(run_id)
        if record is None or record.thread_id != ref.thread_id:
            raise NotFoundError(f"thread {ref.public_id!r} has no run {run_id!r}")
        return record
