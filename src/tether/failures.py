"""What a client may see of a failure: safe summaries, and credentials scrubbed from any text.

A run's `error` (in its record, its `run_finished` event, WebSocket frames and `/v1` error chunks)
is shown to whoever can read the run, so it must never hold a secret or an internal detail:

- the user's own exception (raised by a node, a tool or a model provider) is summarized as
  `"<TypeName>: <message>"`, with any credentials in the message scrubbed;
- an internal failure (storage, a stored record that does not decode, or a bug in tether) becomes
  `"internal error (<TypeName>); error id <id>; the server log has the details"`, and the full
  exception is logged at ERROR with the same id, so an operator can find it.

`redact()` scrubs the two ways a password appears in connection settings: the password of a URL's
user info (`postgresql://user:secret@host/db`, `redis://:secret@host`) and a `password=...` item
of a libpq key/value string. Backends use it in their `repr`, so an error that names a backend
carries no password either.
"""

from __future__ import annotations

import logging
import re
import secrets

from .errors import CorruptRecordError, StorageError

__all__ = ["INTERNAL_ERRORS", "is_internal", "public_error", "redact"]

log = logging.getLogger("tether.failures")

MAX_LENGTH = 1000  # characters of a summary; a long message is cut, never the type name
INTERNAL_ERRORS: tuple[type[BaseException], ...] = (
    StorageError,
    CorruptRecordError,
    AssertionError,
    RecursionError,
    MemoryError,
)
"""Exceptions that are tether's (or its backends') failures, never the user's code."""

# `scheme://user:password@` (the password may hold any character but `@` and `/`).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+(?=@)")
# libpq `password=secret` or `password='se cret'`, also as `PGPASSWORD=...`.
_KV_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|pgpassword)\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE
)


def redact(text: str) -> str:
    """`text` with every password in a connection URL or a libpq key/value string as `***`."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    return _KV_PASSWORD.sub(r"\g<head>***", text)


def is_internal(exc: BaseException) -> bool:
    """Whether `exc` is an internal failure (see the module docstring), not the user's error."""
    return isinstance(exc, INTERNAL_ERRORS)


def public_error(exc: BaseException) -> str:
    """The safe, client-visible summary of a run's failure (see the module docstring).

    An internal failure is logged here, with its traceback and the error id the summary carries.
    """
    name = type(exc).__name__
    if is_internal(exc):
        error_id = secrets.token_hex(6)
        log.error("internal error %s (%s)", error_id, name, exc_info=exc)
        return f"internal error ({name}); error id {error_id}; the server log has the details"
    message = redact(str(exc))
    text = f"{name}: {message}" if message else name
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 1] + "…"
