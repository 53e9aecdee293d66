"""The registry an app gets when it names none: in-process, or Redis when `TETHER_REDIS_URL` is set.

`tether serve --redis-url` and `tether worker --redis-url` set the variable before the target is
imported, so apps built without a `registry=` argument coordinate across processes.
"""

from __future__ import annotations

import os

from ..errors import UserError
from .base import RunRegistry

__all__ = ["default_registry"]


def default_registry() -> RunRegistry:
    """`RedisRunRegistry` on `$TETHER_REDIS_URL` (key prefix `$TETHER_REDIS_PREFIX`, lease
    `$TETHER_LEASE` seconds) when it is set, else a `LocalRunRegistry`. With
    `$TETHER_DATABASE_URL` too, the registry knows the run queue of `tether worker`."""
    url = os.environ.get("TETHER_REDIS_URL")
    if not url:
        from .local import LocalRunRegistry

        return LocalRunRegistry()
    try:
        from .redis import DEFAULT_LEASE, RedisRunRegistry
    except ImportError as exc:
        raise UserError(
            f"TETHER_REDIS_URL={url!r} needs the redis extra: pip install 'tether[redis]'"
        ) from exc
    lease_text = os.environ.get("TETHER_LEASE") or str(DEFAULT_LEASE)
    try:
        lease = float(lease_text)
    except ValueError:
        raise UserError(f"TETHER_LEASE={lease_text!r} is not a number of seconds") from None
    prefix = os.environ.get("TETHER_REDIS_PREFIX") or "tether"
    run_queue = None
    database_url = os.environ.get("TETHER_DATABASE_URL")
    if database_url:  # stops and joins then reach runs queued for `tether worker`
        from ..storage.run_queue import PostgresRunQueue

        run_queue = PostgresRunQueue(database_url)
    return RedisRunRegistry(url, prefix=prefix, lease=lease, run_queue=run_queue)
