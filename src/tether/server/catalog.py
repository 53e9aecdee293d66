"""The served apps, by name, and which app and owner each thread belongs to.

Every engine — graph, agent, flow — is an `App`, so the server treats them alike. A thread is bound
to one app when it is created: its metadata records `app` (the served name), `owner` (the key hash,
see `auth.py`) and `title` (the first user message, for the UI's thread list). Apps may share one
checkpointer or have their own; a thread is looked up in each distinct checkpointer once.

A thread created outside the server (through the Python API) has no `app` in its metadata: it
belongs to the first served app whose checkpointer holds it, and, having no owner, it is only
visible when auth is off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from ..app import App
from ..errors import NotFoundError, UserError
from ..ids import new_id
from ..run import RunRecord
from ..storage.base import Checkpointer, ThreadInfo
from .auth import OWNER_KEY, Principal
from .errors import ApiError

__all__ = ["Catalog", "ThreadRef"]

APP_KEY = "app"
TITLE_KEY = "title"
RESERVED_KEYS = frozenset({OWNER_KEY, APP_KEY})
TITLE_LENGTH = 80
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """A thread the caller may use, with the app that runs it."""

    info: ThreadInfo
    app_name: str
    app: App
    created: bool = False  # this request created the thread (see `Catalog.start_run`)

    @property
    def thread_id(self) -> str:
        return self.info.thread_id


def title_of(text: str) -> str | None:
    """A thread's title from its first user message: one line, at most `TITLE_LENGTH` long."""
    title = " ".join(text.split())
    if not title:
        return None
    if len(title) > TITLE_LENGTH:
        title = title[: TITLE_LENGTH - 1].rstrip() + "…"
    return title


class Catalog:
    """The apps a server serves, and thread and run lookup with ownership checks."""

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

    async def lookup(self, thread_id: str) -> ThreadRef | None:
        """The thread and its app, whoever owns it; None if it does not exist."""
        await self.ensure_ready()
        for store, _ in self._stores:
            info = await store.get_thread(thread_id)
            if info is not None:
                return self._ref(store, info)
        return None

    def _ref(self, store: Checkpointer, info: ThreadInfo) -> ThreadRef:
        """The ref of a thread found in `store`: its bound app, else the store's first app."""
        names = next(names for s, names in self._stores if s is store)
        bound = info.metadata.get(APP_KEY)
        name = bound if bound in names else names[0]
        return ThreadRef(info, name, self.apps[name])

    async def thread(self, thread_id: str, principal: Principal) -> ThreadRef:
        """The caller's thread; raises `NotFoundError` (404) if it is missing or not theirs."""
        ref = await self.lookup(thread_id)
        if ref is None or not principal.owns(ref.info.metadata):
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

        An id that exists raises 409, unless `if_exists="do_nothing"` and the thread is the
        caller's, which returns it. Of two callers creating one id at once, exactly one creates
        it; the owner of a thread never changes. The returned ref has `created` set when this
        call made the thread.
        """
        name, app = self.app(app_name)
        user_meta = {k: v for k, v in (metadata or {}).items() if k not in RESERVED_KEYS}
        if title is not None and (text := title_of(title)) is not None:
            user_meta[TITLE_KEY] = text
        info = ThreadInfo(
            thread_id=thread_id or new_id(),
            metadata={**user_meta, APP_KEY: name, **principal.stamp()},
        )
        await self.ensure_ready()
        # Ids are one namespace across the served checkpointers; those of other apps are only
        # looked at (the atomic insert happens in the app's own checkpointer).
        existing = await self.lookup(info.thread_id) if len(self._stores) > 1 else None
        if existing is None:
            stored, created = await app.checkpointer.create_thread(info)
            if created:
                return ThreadRef(stored, name, app, created=True)
            existing = self._ref(app.checkpointer, stored)
        if if_exists == "do_nothing" and principal.owns(existing.info.metadata):
            return existing
        raise ApiError(
            409,
            f"the thread id {info.thread_id!r} is taken; choose another, or omit it",
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

        Raises 404 for another key's thread (also when that key created it a moment earlier),
        and 422 when `app_name` names a different app than the one the thread is bound to.
        """
        ref = await self.lookup(thread_id)
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
        if not principal.owns(ref.info.metadata):
            raise NotFoundError(f"there is no thread {thread_id!r}")
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
        deleted again, shielded, so a refused run leaves nothing behind. Cancelled: the
        cancellation propagates and the thread stays (the run may have started).
        """
        try:
            return await start
        except Exception:
            if ref.created:
                with anyio.CancelScope(shield=True):
                    await ref.app.checkpointer.delete_thread(ref.thread_id)
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
        return ThreadRef(info, ref.app_name, ref.app, created=ref.created)

    async def list_threads(self, principal: Principal, *, limit: int = 100) -> list[ThreadRef]:
        """The caller's threads, newest first."""
        await self.ensure_ready()
        filt = principal.stamp() or None
        refs: list[ThreadRef] = []
        for store, _ in self._stores:
            for info in await store.list_threads(metadata=filt, limit=limit):
                refs.append(self._ref(store, info))
        refs.sort(key=lambda r: r.info.created_at, reverse=True)
        return refs[:limit]

    async def run(self, run_id: str, principal: Principal) -> tuple[RunRecord, ThreadRef]:
        """The caller's run and its thread; raises `NotFoundError` (404) otherwise."""
        await self.ensure_ready()
        for app in self.apps.values():
            record = await app.aget_run(run_id)
            if record is None:
                continue
            ref = await self.lookup(record.thread_id)
            if ref is not None and principal.owns(ref.info.metadata):
                return record, ref
            break
        raise NotFoundError(f"there is no run {run_id!r}")

    async def run_on(self, ref: ThreadRef, run_id: str) -> RunRecord:
        """The run `run_id` of the thread `ref`; raises `NotFoundError` (404) otherwise."""
        record = await ref.app.aget_run(run_id)
        if record is None or record.thread_id != ref.thread_id:
            raise NotFoundError(f"thread {ref.thread_id!r} has no run {run_id!r}")
        return record
