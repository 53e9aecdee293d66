"""The Lua scripts of `RedisRunRegistry`: each one is a single atomic step on the Redis server.

`Scripts` holds them registered on one client (redis-py then calls them by SHA, loading a script
again after a Redis restart).

Keys, all under the registry's prefix `P` (one Redis server; not Redis Cluster, because the
scripts compute some key names from values):
- `P:run:{run}`       hash `thread`, `worker`: the run is live (registered, not yet released);
                      `worker` is "" for a run queued for `tether worker` that holds its place
                      on the thread (`ENQUEUE`) but has not started;
- `P:queued`          sorted set of those queued runs, by when they were admitted (ms), so a
                      sweep can free the place of a run whose queue row never committed;
- `P:stops:{run}`     list of JSON stop requests: the durable stop intent, read by the executing
                      worker when it registers, when it reconnects, and on every heartbeat;
- `P:owner:{thread}`  the run id that holds the thread;
- `P:queue:{thread}`  list of run ids waiting for the thread, in turn order;
- `P:truns:{thread}`  set of the thread's live runs (a stop by thread id before admission);
- `P:lease:{worker}`  the worker's lease, a key that expires unless the worker heartbeats;
- `P:workers`         set of workers that have live runs; `P:wruns:{worker}` their run ids;
- `P:events:{run}`    stream of the run's events (field `e`: the event JSON), for joins elsewhere;
- `P:inbox:{run}`     list of JSON flow inputs (`Flow.send`) and stream ends (`Flow.stop_stream`)
                      not yet handed to the run;
- channel `P:signal`  `stop <run> <json>`, `input <run>` and `free <thread> <run>` notifications.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aredis
from redis.commands.core import AsyncScript

__all__ = [
    "ACQUIRE",
    "DRAIN_INPUT",
    "ENQUEUE",
    "RELEASE",
    "REQUEST_STOP",
    "RESTORE",
    "SEND_INPUT",
    "Scripts",
]

# KEYS: owner, queue. ARGV: prefix, run_id, strategy.
# Returns {"acquired"}, {"busy", owner} (reject) or {"wait", blocker} (queued; blocker may be "").
# Under `reject`, a thread whose next turn belongs to a queued run that has not started is busy.
# An owner or queue head whose run key is gone (released by a sweeper, or lost when Redis
# restarted) no longer blocks anyone.
ACQUIRE = """
local prefix, run, strategy = ARGV[1], ARGV[2], ARGV[3]
local owner = redis.call('GET', KEYS[1])
if owner == run then return {'acquired'} end
if owner and redis.call('EXISTS', prefix .. ':run:' .. owner) == 0 then
  redis.call('DEL', KEYS[1])
  owner = false
end
local head = redis.call('LINDEX', KEYS[2], 0)
while head and head ~= run and redis.call('EXISTS', prefix .. ':run:' .. head) == 0 do
  redis.call('LPOP', KEYS[2])
  head = redis.call('LINDEX', KEYS[2], 0)
end
if not owner and (not head or head == run) then
  redis.call('SET', KEYS[1], run)
  if head == run then redis.call('LPOP', KEYS[2]) end
  return {'acquired'}
end
if owner and strategy == 'reject' and redis.call('EXISTS', prefix .. ':stops:' .. owner) == 0 then
  return {'busy', owner}
end
if strategy == 'reject' and not owner and head and head ~= run and not redis.call('LPOS', KEYS[2], run)
    and redis.call('HGET', prefix .. ':run:' .. head, 'worker') == '' then
  return {'busy', head}  -- the thread is held for a queued run that has not started yet
end
if not redis.call('LPOS', KEYS[2], run) then
  if strategy == 'interrupt' or strategy == 'rollback' then
    redis.call('LPUSH', KEYS[2], run)
  else
    redis.call('RPUSH', KEYS[2], run)
  end
end
return {'wait', owner or head or ''}
"""

# KEYS: owner, queue, run, truns, wruns, stops, inbox, queued.
# ARGV: run_id, thread_id, channel, queued_only.
# Frees the thread if the run held it, leaves the queue, forgets the run. Idempotent. With
# queued_only = "1" it does so only while the run is queued and not started (worker ""); 0 else.
RELEASE = """
local run = ARGV[1]
if ARGV[4] == '1' and redis.call('HGET', KEYS[3], 'worker') ~= '' then return 0 end
if redis.call('GET', KEYS[1]) == run then redis.call('DEL', KEYS[1]) end
redis.call('LREM', KEYS[2], 0, run)
redis.call('DEL', KEYS[3], KEYS[6], KEYS[7])
redis.call('SREM', KEYS[4], run)
redis.call('SREM', KEYS[5], run)
redis.call('ZREM', KEYS[8], run)
redis.call('PUBLISH', ARGV[3], 'free ' .. ARGV[2] .. ' ' .. run)
return 1
"""

# KEYS: none. ARGV: prefix, run_id ("" for by-thread), thread_id ("" for any), request JSON, channel.
# Finds the live run (by id, else the thread's owner, its queue head, or any registered run of the
# thread), appends the request to its durable stop intent, publishes it. Returns {run id, worker}
# (worker "" for a queued run that has not started), or false when no live run matches.
REQUEST_STOP = """
local prefix, run, thread = ARGV[1], ARGV[2], ARGV[3]
if run == '' then
  run = redis.call('GET', prefix .. ':owner:' .. thread)
  if not run then run = redis.call('LINDEX', prefix .. ':queue:' .. thread, 0) end
  if not run then run = redis.call('SRANDMEMBER', prefix .. ':truns:' .. thread) end
  if not run then return false end
end
local found = redis.call('HGET', prefix .. ':run:' .. run, 'thread')
if not found then return false end
if thread ~= '' and found ~= thread then return false end
redis.call('RPUSH', prefix .. ':stops:' .. run, ARGV[4])
redis.call('PUBLISH', ARGV[5], 'stop ' .. run .. ' ' .. ARGV[4])
return {run, redis.call('HGET', prefix .. ':run:' .. run, 'worker') or ''}
"""

# KEYS: run, truns, wruns, workers, lease, owner, queued, stops.
# ARGV: run_id, thread_id, worker, lease_ms, holds.
# Makes a live local run known to Redis again (after a Redis restart lost it); registers a new run
# the same way (a queued run that a worker starts keeps the place `ENQUEUE` gave it). `holds` = "1"
# re-takes the thread slot if nobody took it meanwhile. Returns the run's stop intents (a stop of
# a queued run lands before the run starts).
RESTORE = """
redis.call('HSET', KEYS[1], 'thread', ARGV[2], 'worker', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('SET', KEYS[5], '1', 'PX', ARGV[4])
redis.call('ZREM', KEYS[7], ARGV[1])
if ARGV[5] == '1' then redis.call('SET', KEYS[6], ARGV[1], 'NX') end
return redis.call('LRANGE', KEYS[8], 0, -1)
"""

# KEYS: owner, queue, run, truns, queued. ARGV: prefix, run_id, thread_id, strategy, now_ms.
# Admits a run queued for `tether worker` (strategy `reject` or `enqueue`) to its thread when it
# is queued, in one step: `reject` answers {"busy", blocker} when the thread has a live owner that
# is not stopping, or a waiting run; otherwise the run is marked live with worker "" (queued, not
# started), listed in `queued`, and takes the free thread ({"acquired"}) or its place at the end of
# the thread's FIFO ({"wait", blocker}). The worker that starts it later finds it there (ACQUIRE).
ENQUEUE = """
local prefix, run, thread, strategy = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', prefix .. ':run:' .. owner) == 0 then
  redis.call('DEL', KEYS[1])
  owner = false
end
local head = redis.call('LINDEX', KEYS[2], 0)
while head and redis.call('EXISTS', prefix .. ':run:' .. head) == 0 do
  redis.call('LPOP', KEYS[2])
  head = redis.call('LINDEX', KEYS[2], 0)
end
if strategy == 'reject' then
  if owner and redis.call('EXISTS', prefix .. ':stops:' .. owner) == 0 then
    return {'busy', owner}
  end
  if head then return {'busy', head} end
end
redis.call('HSET', KEYS[3], 'thread', thread, 'worker', '')
redis.call('SADD', KEYS[4], run)
redis.call('ZADD', KEYS[5], ARGV[5], run)
if not owner and not head then
  redis.call('SET', KEYS[1], run)
  return {'acquired'}
end
redis.call('RPUSH', KEYS[2], run)
return {'wait', owner or head}
"""

# KEYS: run, inbox. ARGV: run_id, input JSON, channel.
# Appends a flow input to the live run's inbox and tells the executing process; 0 if not live.
SEND_INPUT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'input ' .. ARGV[1])
return 1
"""

# KEYS: inbox. Pops every input waiting in the inbox, oldest first.
DRAIN_INPUT = """
local values = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return values
"""


@dataclass(frozen=True, slots=True)
class Scripts:
    """The scripts above, registered on one client."""

    acquire: AsyncScript
    release: AsyncScript
    request_stop: AsyncScript
    restore: AsyncScript
    send_input: AsyncScript
    drain_input: AsyncScript
    enqueue: AsyncScript

    @classmethod
    def register(cls, client: aredis.Redis) -> Scripts:
        return cls(
            acquire=client.register_script(ACQUIRE),
            release=client.register_script(RELEASE),
            request_stop=client.register_script(REQUEST_STOP),
            restore=client.register_script(RESTORE),
            send_input=client.register_script(SEND_INPUT),
            drain_input=client.register_script(DRAIN_INPUT),
            enqueue=client.register_script(ENQUEUE),
        )
