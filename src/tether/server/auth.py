"""Optional API keys, who owns which thread, and each key's own space of thread ids.

Keys come from `create_app(api_keys=...)`: a mapping `{key: name}`, a list of keys, or the path of
a key file; with `api_keys=None` they come from the environment variable `TETHER_API_KEYS`
(comma-separated keys), and when that is unset too the server is open (no auth).

A key file holds one key per line, optionally followed by whitespace and a name for logs; blank
lines and lines starting with `#` are ignored:

    # tether API keys
    sk-live-3c1f0c…   alice
    sk-live-9a77e2…   billing-bot

A client sends its key as `Authorization: Bearer <key>` (what OpenAI clients do) or
`X-API-Key: <key>`; a WebSocket may also pass `?api_key=<key>`, since browsers cannot set headers on
one.

Ownership: a thread created with a key is stamped with `owner = sha256(key)` in its metadata — the
hash, never the key, so a leaked database leaks no credentials. Every read, join, stop and listing
compares the caller's hash with the thread's `owner`.

Thread-id namespaces: with auth on, each key has its own space of thread ids. The id a client
sends and sees (the *public* id, e.g. `chat-1`) is stored under an *internal* id that belongs to
its key alone (`Principal.internal_id`): the first `NAMESPACE_CHARS` hex digits of the key hash, a
colon, and the public id (`3f2a9c0b1d4e5f60:chat-1`); a public id too long for that (the internal id
must fit the 200 characters that `App` accepts) is stored as the digits, `#`, and the SHA-256 of
the public id, and its thread's metadata records the public id (`public_id`). Key B creating
`chat-1` so creates B's own thread, unrelated to key A's `chat-1`: another key's thread is not just
refused, it cannot even be addressed, so every endpoint answers for it exactly what it answers for
a free id (no existence oracle). The server maps ids in `Catalog` (`catalog.py`), once per
request, and shows only public ids in its responses, events, run records and headers; the Python
API (`App.aget_state`, `checkpointer.get_thread`, …) sees internal ids.

Threads created before namespaces existed (stored under their public id, with an `owner`) stay
usable by that owner under their old id: a key's id is looked up in its namespace first, then as a
stored id owned by the key. Another key's such thread is skipped like a missing one, and that key
gets its own thread of that id.

With auth off, threads have no owner, public and internal ids are the same, and everyone sees
everything.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection

from ..errors import UserError
from .errors import ApiError

__all__ = [
    "NAMESPACE_CHARS",
    "PUBLIC_ID_KEY",
    "ApiKeys",
    "ApiKeysSource",
    "Principal",
    "hash_key",
    "load_api_keys",
    "principal_of",
]

ApiKeysSource = Mapping[str, str] | Iterable[str] | str | os.PathLike[str] | None
"""What `create_app(api_keys=...)` accepts; see the module docstring."""

ENV_VAR = "TETHER_API_KEYS"
OWNER_KEY = "owner"  # the thread metadata key that holds the owner's key hash
PUBLIC_ID_KEY = "public_id"  # the thread metadata key that holds a namespaced thread's public id
NAMESPACE_CHARS = 16  # hex digits of the key hash that name a key's thread-id namespace
MAX_INTERNAL_ID = 200  # the longest thread id `App` accepts


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of an API key: what thread metadata stores as `owner`."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: `owner` is their key hash (None when auth is off), `name` their key's name."""

    owner: str | None
    name: str | None = None

    def owns(self, metadata: Mapping[str, Any]) -> bool:
        """Whether a thread with this metadata is visible to the caller."""
        return self.owner is None or metadata.get(OWNER_KEY) == self.owner

    def stamp(self) -> dict[str, str]:
        """The metadata that marks a new thread as the caller's."""
        return {} if self.owner is None else {OWNER_KEY: self.owner}

    def internal_id(self, thread_id: str) -> str:
        """The stored id of the caller's thread `thread_id` (the same id when auth is off)."""
        if self.owner is None:
            return thread_id
        namespace = self.owner[:NAMESPACE_CHARS]
        internal = f"{namespace}:{thread_id}"
        if len(internal) <= MAX_INTERNAL_ID:
            return internal
        digest = hashlib.sha256(thread_id.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{namespace}#{digest}"

    def in_namespace(self, internal_id: str) -> bool:
        """Whether `internal_id` is an id in the caller's namespace (False when auth is off)."""
        if self.owner is None:
            return False
        namespace = self.owner[:NAMESPACE_CHARS]
        return internal_id.startswith(namespace) and internal_id[NAMESPACE_CHARS:][:1] in (":", "#")

    def public_id(self, internal_id: str, metadata: Mapping[str, Any]) -> str:
        """The id the caller knows the stored thread `internal_id` (with `metadata`) by.

        The inverse of `internal_id()` for the caller's namespaced threads; any other id (auth
        off, a thread from before namespaces) is its own public id.
        """
        if not self.in_namespace(internal_id):
            return internal_id
        if internal_id[NAMESPACE_CHARS] == ":":
            return internal_id[NAMESPACE_CHARS + 1 :]
        public = metadata.get(PUBLIC_ID_KEY)
        return public if isinstance(public, str) else internal_id


ANONYMOUS = Principal(owner=None)


class ApiKeys:
    """The accepted keys, held by hash only."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        if not keys:
            raise UserError("api_keys is empty; pass at least one key, or None to turn auth off")
        for key in keys:
            if not isinstance(key, str) or len(key) < 8 or key.strip() != key:
                raise UserError(
                    "each API key must be a string of at least 8 characters without surrounding "
                    "spaces; got one of length "
                    f"{len(key) if isinstance(key, str) else type(key).__name__!r}"
                )
        # sha256(key) -> the key's name; the keys themselves are not kept.
        self._names = {hash_key(key): name for key, name in keys.items()}

    def __len__(self) -> int:
        return len(self._names)

    def check(self, key: str | None) -> Principal:
        """The principal of `key`; raises a 401 `ApiError` for a missing or unknown key."""
        if not key:
            raise ApiError(
                401,
                "this server needs an API key: send 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_key(key)
        name = self._names.get(digest)
        if name is None:
            raise ApiError(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
        return Principal(owner=digest, name=name)


def load_api_keys(source: ApiKeysSource) -> ApiKeys | None:
    """Resolve `create_app(api_keys=...)` into the accepted keys, or None for an open server."""
    if source is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if not env:
            return None
        keys = [k.strip() for k in env.split(",") if k.strip()]
        return ApiKeys({key: f"key{i + 1}" for i, key in enumerate(keys)})
    if isinstance(source, str | os.PathLike):
        return ApiKeys(_read_key_file(Path(source)))
    if isinstance(source, Mapping):
        return ApiKeys(dict(source))
    return ApiKeys({key: f"key{i + 1}" for i, key in enumerate(source)})


def _read_key_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the API key file {str(path)!r}: {exc.strerror}") from None
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, *rest = line.split(None, 1)  # any whitespace (spaces, tabs) ends the key
        keys[key] = rest[0].strip() if rest else f"{path.name}:{number}"
    return keys


def principal_of(conn: HTTPConnection, keys: ApiKeys | None) -> Principal:
    """Authenticate a request or WebSocket; raises a 401 `ApiError` when auth is on and fails."""
    if keys is None:
        return ANONYMOUS
    key: str | None = None
    auth = conn.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
    key = key or conn.headers.get("x-api-key")
    if key is None and conn.scope["type"] == "websocket":
        key = conn.query_params.get("api_key")
    return keys.check(key)
