"""Snapshots in Redis, through redis-py.

Needs the ``redis`` extra: ``pip install "elmstate[redis]"``. Neither
``elmstate`` nor ``elmstate.stores`` imports this module: import it yourself.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:
    raise ImportError(
        'elmstate.stores.redis needs redis-py: pip install "elmstate[redis]"', name=exc.name
    ) from exc

from .. import _validate as check
from .._errors import Conflict
from ._keys import items_arg, key_value, keys_arg, version_arg
from ._secrets import redacted

__all__ = ["RedisStore"]

T = TypeVar("T")

DEFAULT_PREFIX = "elmstate:"
# Set on connections of a client the store makes from a URL (unless the URL
# names one), so that an operator can tell them apart in CLIENT LIST.
CLIENT_NAME = "elmstate"

# Each key is one hash: the value, its version and the id of the write that set
# it. Each write is one script, which Redis runs atomically: nothing can run
# between its read of the version and its write.
#
# The writer id makes a write idempotent. A client that re-sends a command after
# a lost connection (redis-py retries by default) may deliver a write twice: the
# first ran, its reply was lost. Re-run, a compare-and-set would find its own
# version bump and report a Conflict for a save that succeeded -- and a caller
# retrying the aggregate on Conflict would apply its messages twice. A re-sent
# write instead finds its own id and reports what the first delivery did --
# unless another writer saved in between (only the last id is kept): then it
# is a Conflict, the ambiguity of any lost reply (docs/stores.md#lost-connections).
_CAS = """
local current = redis.call('HGET', KEYS[1], 'version') or '0'
if current ~= ARGV[2] then
  if redis.call('HGET', KEYS[1], 'writer') == ARGV[3] then
    return {1, current}
  end
  return {0, current}
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'writer', ARGV[3])
return {1, redis.call('HINCRBY', KEYS[1], 'version', 1)}
"""
# All or nothing over many keys: KEYS are the hashes, ARGV[1] the writer id, then
# each key's value and version. Every version is checked before anything is
# written. The writer id is one per call: a re-sent call whose first delivery
# landed finds its id on every key and reports that success (if another writer
# has saved one of the keys since, it is a Conflict, as for _CAS).
_CAS_MANY = """
for i = 1, #KEYS do
  local current = redis.call('HGET', KEYS[i], 'version') or '0'
  if current ~= ARGV[2 * i + 1] then
    for j = 1, #KEYS do
      if redis.call('HGET', KEYS[j], 'writer') ~= ARGV[1] then
        return {0, i, current}
      end
    end
    return {1}
  end
end
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'value', ARGV[2 * i], 'writer', ARGV[1])
  redis.call('HINCRBY', KEYS[i], 'version', 1)
end
return {1}
"""
# Many keys read at one moment: one script (faster than a MULTI of HMGETs, whose
# replies redis-py parses one by one). A missing field is false in Lua, which
# keeps its place in the table and comes back as a nil.
_LOAD_MANY = """
local out = {}
for i = 1, #KEYS do
  local fields = redis.call('HMGET', KEYS[i], 'value', 'version')
  out[2 * i - 1] = fields[1]
  out[2 * i] = fields[2]
end
return out
"""
_STORE = """
if redis.call('HGET', KEYS[1], 'writer') ~= ARGV[2] then
  redis.call('HSET', KEYS[1], 'value', ARGV[1], 'writer', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return 1
"""


class RedisStore:
    """Snapshots in Redis: one hash per key, at ``prefix + key`` (UTF-8).

    ``client_or_url`` is a ``redis.Redis`` client, which stays the caller's
    (``close()`` leaves it open), or a ``redis://``, ``rediss://`` or
    ``unix://`` URL, from which the store makes a client of its own and closes
    it on ``close()``. That client does not re-send a command after a lost
    connection: the call raises redis-py's ``ConnectionError`` and the next
    call reconnects. A caller's client may retry: every write carries a unique
    id, so a re-sent write is recognised as already applied, never applied
    twice; if another writer saved the key in between, though, the re-sent
    compare-and-set reports a :class:`~elmstate.Conflict`.

    Values are bytes, so a client made with ``decode_responses=True`` is
    refused. The store is as thread-safe as redis-py's client (it is), and
    ignores ``ctx``: a call is not cut short when the context ends.
    """

    def __init__(self, client_or_url: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self._prefix = prefix.encode()
        self._password: str | None = None
        self._closed = False
        if isinstance(client_or_url, str):
            self._owned = True
            self._client = self._client_from_url(client_or_url)
        elif isinstance(client_or_url, redis.Redis):
            self._owned = False
            self._client = client_or_url
        else:
            raise TypeError(
                f"client_or_url must be a redis.Redis client or a URL string, "
                f"got {type(client_or_url).__name__}"
            )
        if self._client.get_encoder().decode_responses:
            if self._owned:
                self._client.close()
            raise ValueError(
                "client_or_url must not decode responses: snapshots are bytes "
                "(make the client with decode_responses=False)"
            )
        # Scripts are sent by EVALSHA, and loaded first where the server lacks them.
        self._cas = self._client.register_script(_CAS)
        self._store = self._client.register_script(_STORE)
        self._cas_many = self._client.register_script(_CAS_MANY)
        self._load_many = self._client.register_script(_LOAD_MANY)

    def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        return self.load_versioned(ctx, key)[0]

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (last writer wins); bumps its version."""
        value = key_value(key, value)
        self._run(self._store, [self._key(key)], [value, os.urandom(16)])

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        """The value at ``key`` and its version: ``(None, 0)`` when absent."""
        check.key_arg("key", key)
        name = self._key(key)
        reply: list[Any] = self._run(self._client.hmget, name, ["value", "version"])
        value, version = reply
        return (None, 0) if version is None else (value, int(version))

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        """Set ``key`` to ``value`` if its version is still ``version``; returns the new one.

        One server-side script, run atomically. Raises
        :class:`~elmstate.Conflict`, storing nothing, if the version differs.
        """
        value = key_value(key, value)
        version = version_arg(version)
        written, current = self._run(
            self._cas, [self._key(key)], [value, str(version), os.urandom(16)]
        )
        if written:
            return int(current)
        raise Conflict(key, version, int(current))

    def load_many_versioned(self, ctx: Any, keys: Any) -> list[tuple[bytes | None, int]]:
        """The value and version of each of ``keys``, in their order: one
        server-side script, so one moment of the server's data."""
        given = keys_arg(keys)
        names = [self._key(key) for key in given]
        if self._closed:
            raise ValueError("the RedisStore is closed")
        if not names:
            return []
        reply: list[Any] = self._run(self._load_many, names)
        values, versions = reply[0::2], reply[1::2]
        return [
            (None, 0) if version is None else (value, int(version))
            for value, version in zip(values, versions)
        ]

    def store_many_versioned(self, ctx: Any, items: Any) -> list[int]:
        """Set every ``(key, value, version)`` of ``items`` if every key is still at
        its ``version``; returns the new versions, in order. One server-side
        script over every key, run atomically.

        Raises :class:`~elmstate.Conflict` for the first item whose version differs,
        storing nothing at all.
        """
        keys, values, versions = items_arg(items)
        names = [self._key(key) for key in keys]
        if self._closed:
            raise ValueError("the RedisStore is closed")
        if not names:
            return []
        args: list[Any] = [os.urandom(16)]
        for value, version in zip(values, versions):
            args += (value, str(version))
        reply: list[Any] = self._run(self._cas_many, names, args)
        if reply[0]:
            return [version + 1 for version in versions]
        i = int(reply[1]) - 1
        raise Conflict(keys[i], versions[i], int(reply[2]))

    def close(self) -> None:
        """Close the store's own client (never a caller's); idempotent.
        Later calls raise ``ValueError``."""
        if not self._closed:
            self._closed = True
            if self._owned:
                self._client.close()
                # The pool is ours too, and redis-py 5.0's close() leaves it connected.
                self._client.connection_pool.disconnect()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # The connection's host, port and db, never its password.
        kwargs = self._client.connection_pool.connection_kwargs
        where = "".join(f" {k}={kwargs[k]}" for k in ("host", "port", "db", "path") if k in kwargs)
        state = " closed" if self._closed else ""
        return f"<elmstate.stores.redis.RedisStore prefix={self._prefix.decode()!r}{where}{state}>"

    def _key(self, key: str) -> bytes:
        # Encoded here, not by the client, whose encoding need not be UTF-8.
        return self._prefix + key.encode()

    def _run(self, call: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ValueError("the RedisStore is closed")
        try:
            return call(*args)
        except redis.RedisError as exc:
            error = redacted(exc, self._password)
            if error is exc:
                raise
        raise error  # outside the except block: the original is not chained

    def _client_from_url(self, url: str) -> redis.Redis:
        try:
            self._password = urlsplit(url).password
        except ValueError:
            pass  # from_url below reports the malformed URL
        try:
            # No automatic re-sends (redis-py 6 and later re-send up to 3 times by
            # default): a lost connection surfaces as the client's own error.
            client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), client_name=CLIENT_NAME)
        except ValueError as exc:
            error = redacted(exc, self._password)
        else:
            # The password the client will send (a URL may also give it as ?password=).
            self._password = client.connection_pool.connection_kwargs.get("password")
            return client
        raise ValueError(f"client_or_url is not a valid Redis URL: {error}")


check.register(check.STORES, RedisStore)
