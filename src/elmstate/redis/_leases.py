"""Shard leases: who owns which shard, decided on the server, one script at a time.

Each shard ``i`` of ``name`` has a lease key ``f"{name}:lease:{i}"`` holding its
owner's worker id, expiring ``lease`` seconds after its last renewal; live
workers are the members of the sorted set ``f"{name}:workers"`` whose
heartbeat (the score, the server's clock in ms) is younger than ``lease``.
Every decision -- renew, take a free shard, give one up for balance -- is made
inside one Lua script, so two workers never act on the same stale picture, and
the server's clock is the only clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

# KEYS: the workers' set, then the lease key of every shard in shard order.
# ARGV: worker id, lease in ms, mode ("balance", "renew" or "release").
# Returns the shards this worker owns afterwards (0-based), then a 0 and the
# shards it gave up (balance mode only).
_HEARTBEAT = """
local me, lease, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n = #KEYS - 1
if mode == 'release' then
  for i = 1, n do
    if redis.call('GET', KEYS[i + 1]) == me then redis.call('DEL', KEYS[i + 1]) end
  end
  redis.call('ZREM', KEYS[1], me)
  return {}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, me)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - lease))
local mine, free, counts = {}, {}, {}
for i = 1, n do
  local owner = redis.call('GET', KEYS[i + 1])
  if owner == me then
    redis.call('PEXPIRE', KEYS[i + 1], lease)
    mine[#mine + 1] = i - 1
  elseif owner then
    counts[owner] = (counts[owner] or 0) + 1
  else
    free[#free + 1] = i - 1
  end
end
if mode == 'renew' then return mine end
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
local low, high = math.floor(n / #live), math.ceil(n / #live)
local needy = false
for _, worker in ipairs(live) do
  if worker ~= me and (counts[worker] or 0) < low then needy = true end
end
local gave = {}
local keep = #mine
if #mine > high then
  keep = high
elseif needy and #free == 0 and #mine > low then
  keep = #mine - 1  -- one at a time: the needy take them as they come free
end
while #mine > keep do
  local shard = table.remove(mine)
  redis.call('DEL', KEYS[shard + 2])
  gave[#gave + 1] = shard
end
if #gave == 0 then
  while #mine < high and #free > 0 do
    local shard = table.remove(free, 1)
    redis.call('SET', KEYS[shard + 2], me, 'PX', lease)
    mine[#mine + 1] = shard
  end
end
table.sort(mine)
mine[#mine + 1] = -1
for _, shard in ipairs(gave) do mine[#mine + 1] = shard end
return mine
"""

# The lease check and the read in one step: a worker that no longer holds the
# shard's lease reads nothing and moves nothing (the group's last-delivered id
# included). The read is pending-first: entries delivered to the shard's
# consumer after ``cursor`` and not yet acknowledged (a reply lost on the way,
# or everything, after a takeover, from cursor 0), then new ones.
# KEYS: lease key, stream. ARGV: worker id, group, consumer, count, cursor.
# Returns false when the lease is not held; else {entries, tail} where tail is
# the stream's last entry id when nothing was left to read (to block on), or false.
_READ = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                     'STREAMS', KEYS[2], ARGV[5])
if r and #r[1][2] > 0 then return {r[1][2], false} end
r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
               'STREAMS', KEYS[2], '>')
if r then return {r[1][2], false} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then return {{}, last[1][1]} end
return {{}, '0-0'}
"""

# Dead-lettering, only while the lease is held (a former owner must not
# dead-letter an entry the new owner may apply), with the acknowledgement.
# KEYS: lease key, stream, dead-letter stream. ARGV: worker id, group, entry id,
# then the dead letter's fields and values.
_DEAD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


class Leases:
    """The scripts of one worker of one logical stream."""

    def __init__(self, client: redis.Redis, name: str, shards: int, worker: str, lease: float):
        self.worker = worker
        self.lease_ms = max(1, int(lease * 1000))
        self.workers_key = f"{name}:workers"
        self.keys = [f"{name}:lease:{i}" for i in range(shards)]
        self._heartbeat = client.register_script(_HEARTBEAT)
        self.read = client.register_script(_READ)
        self.dead = client.register_script(_DEAD)

    def heartbeat(self, mode: str) -> tuple[list[int], list[int]]:
        """(owned shards, shards given up) after a heartbeat in ``mode``."""
        reply = self._heartbeat(
            keys=[self.workers_key, *self.keys], args=[self.worker, self.lease_ms, mode]
        )
        values = [int(v) for v in reply]
        if -1 in values:
            split = values.index(-1)
            return values[:split], values[split + 1 :]
        return values, []
