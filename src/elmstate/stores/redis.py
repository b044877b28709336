"""Snapshots in Redis, through redis-py.

Needs the ``redis`` extra: ``pip install "elmstate[redis]"``. Neither
``elmstate`` nor ``elmstate.stores`` imports this module: import it yourself.
"""

from __future__ import annotations

import os
from typing import Any, Callable, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

try:
    import redis
    import redis.asyncio
    import redis.asyncio.retry
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

__all__ = ["AsyncRedisStore", "RedisStore"]

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


class _Request(Generic[T]):
    """One round trip, made by either store: ``call(*args)`` (none when ``call`` is
    None), then ``reply(what it returned)`` is the method's result."""

    __slots__ = ("args", "call", "reply")

    def __init__(
        self, call: Callable[..., Any] | None, args: tuple[Any, ...], reply: Callable[[Any], T]
    ) -> None:
        self.call = call
        self.args = args
        self.reply = reply


class _Common:
    """What the synchronous and the asynchronous store share: their arguments,
    keys, scripts, requests, replies and repr. No I/O here: each store sends the
    requests (``_do``) in its own way."""

    _name: ClassVar[str]  # the class's name, for the repr and errors
    _client_type: ClassVar[type[Any]]  # the client class it takes
    _client_label: ClassVar[str]  # and its name, for errors
    _client: Any

    def _setup(self, client_or_url: Any, prefix: Any) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self._prefix = prefix.encode()
        self._password: str | None = None
        self._closed = False
        if isinstance(client_or_url, str):
            self._owned = True
            self._client = self._client_from_url(client_or_url)
        elif isinstance(client_or_url, self._client_type):
            self._owned = False
            self._client = client_or_url
        else:
            raise TypeError(
                f"client_or_url must be a {self._client_label} client or a URL string, "
                f"got {type(client_or_url).__name__}"
            )
        if self._client.get_encoder().decode_responses:
            if self._owned:
                self._discard_client()
            raise ValueError(
                "client_or_url must not decode responses: snapshots are bytes "
                "(make the client with decode_responses=False)"
            )
        # Scripts are sent by EVALSHA, and loaded first where the server lacks them.
        self._cas = self._client.register_script(_CAS)
        self._store = self._client.register_script(_STORE)
        self._cas_many = self._client.register_script(_CAS_MANY)
        self._load_many = self._client.register_script(_LOAD_MANY)

    def __repr__(self) -> str:
        # The connection's host, port and db, never its password.
        kwargs = self._client.connection_pool.connection_kwargs
        where = "".join(f" {k}={kwargs[k]}" for k in ("host", "port", "db", "path") if k in kwargs)
        state = " closed" if self._closed else ""
        prefix = self._prefix.decode()
        return f"<elmstate.stores.redis.{self._name} prefix={prefix!r}{where}{state}>"

    # ---------------------------------------------------------------- requests
    # Each checks the arguments (before the store's closed state, as every store
    # does) and says what to send and what the reply means.

    def _store_request(self, key: Any, value: Any) -> _Request[None]:
        value = key_value(key, value)
        return _Request(self._store, ([self._key(key)], [value, os.urandom(16)]), _nothing)

    def _load_request(self, key: Any) -> _Request[tuple[bytes | None, int]]:
        check.key_arg("key", key)
        return _Request(self._client.hmget, (self._key(key), ["value", "version"]), _loaded)

    def _cas_request(self, key: Any, value: Any, version: Any) -> _Request[int]:
        value = key_value(key, value)
        version = version_arg(version)

        def reply(written_current: list[Any]) -> int:
            written, current = written_current
            if written:
                return int(current)
            raise Conflict(key, version, int(current))

        args = ([self._key(key)], [value, str(version), os.urandom(16)])
        return _Request(self._cas, args, reply)

    def _load_many_request(self, keys: Any) -> _Request[list[tuple[bytes | None, int]]]:
        names = [self._key(key) for key in keys_arg(keys)]
        return _Request(self._load_many if names else None, (names,), _loaded_many)

    def _store_many_request(self, items: Any) -> _Request[list[int]]:
        keys, values, versions = items_arg(items)
        names = [self._key(key) for key in keys]
        args: list[Any] = [os.urandom(16)]
        for value, version in zip(values, versions):
            args += (value, str(version))

        def reply(reply: list[Any] | None) -> list[int]:
            if reply is None or reply[0]:  # None: there was nothing to store
                return [version + 1 for version in versions]
            i = int(reply[1]) - 1
            raise Conflict(keys[i], versions[i], int(reply[2]))

        return _Request(self._cas_many if names else None, (names, args), reply)

    # ----------------------------------------------------------------- helpers

    def _key(self, key: str) -> bytes:
        # Encoded here, not by the client, whose encoding need not be UTF-8.
        return self._prefix + key.encode()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"the {self._name} is closed")

    def _discard_client(self) -> None:
        """Close a client of the store's own that it will not use."""

    def _client_from_url(self, url: str) -> Any:
        try:
            self._password = urlsplit(url).password
        except ValueError:
            pass  # from_url below reports the malformed URL
        try:
            # No automatic re-sends (redis-py 6 and later re-send up to 3 times by
            # default): a lost connection surfaces as the client's own error.
            client = self._client_type.from_url(
                url, retry=self._no_retry(), client_name=CLIENT_NAME
            )
        except ValueError as exc:
            error = redacted(exc, self._password)
        else:
            # The password the client will send (a URL may also give it as ?password=).
            self._password = client.connection_pool.connection_kwargs.get("password")
            return client
        raise ValueError(f"client_or_url is not a valid Redis URL: {error}")

    @staticmethod
    def _no_retry() -> Any:
        return Retry(NoBackoff(), 0)


def _nothing(reply: object) -> None:
    return None


def _loaded(reply: list[Any]) -> tuple[bytes | None, int]:
    value, version = reply
    return (None, 0) if version is None else (value, int(version))


def _loaded_many(reply: list[Any] | None) -> list[tuple[bytes | None, int]]:
    if reply is None:  # no keys were asked for
        return []
    values, versions = reply[0::2], reply[1::2]
    return [
        (None, 0) if version is None else (value, int(version))
        for value, version in zip(values, versions)
    ]


class RedisStore(_Common):
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

    _name, _client_type, _client_label = "RedisStore", redis.Redis, "redis.Redis"
    _client: redis.Redis

    def __init__(self, client_or_url: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._setup(client_or_url, prefix)

    def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        return self.load_versioned(ctx, key)[0]

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (last writer wins); bumps its version."""
        self._do(self._store_request(key, value))

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        """The value at ``key`` and its version: ``(None, 0)`` when absent."""
        return self._do(self._load_request(key))

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        """Set ``key`` to ``value`` if its version is still ``version``; returns the new one.

        One server-side script, run atomically. Raises
        :class:`~elmstate.Conflict`, storing nothing, if the version differs.
        """
        return self._do(self._cas_request(key, value, version))

    def load_many_versioned(self, ctx: Any, keys: Any) -> list[tuple[bytes | None, int]]:
        """The value and version of each of ``keys``, in their order: one
        server-side script, so one moment of the server's data."""
        return self._do(self._load_many_request(keys))

    def store_many_versioned(self, ctx: Any, items: Any) -> list[int]:
        """Set every ``(key, value, version)`` of ``items`` if every key is still at
        its ``version``; returns the new versions, in order. One server-side
        script over every key, run atomically.

        Raises :class:`~elmstate.Conflict` for the first item whose version differs,
        storing nothing at all.
        """
        return self._do(self._store_many_request(items))

    def close(self) -> None:
        """Close the store's own client (never a caller's); idempotent.
        Later calls raise ``ValueError``."""
        if not self._closed:
            self._closed = True
            if self._owned:
                self._discard_client()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _do(self, request: _Request[T]) -> T:
        self._check_open()
        if request.call is None:
            return request.reply(None)
        try:
            reply = request.call(*request.args)
        except redis.RedisError as exc:
            error = redacted(exc, self._password)
            if error is exc:
                raise
        else:
            return request.reply(reply)
        raise error  # outside the except block: the original is not chained

    def _discard_client(self) -> None:
        self._client.close()
        # The pool is ours too, and redis-py 5.0's close() leaves it connected.
        self._client.connection_pool.disconnect()


check.register(check.STORES, RedisStore)


class AsyncRedisStore(_Common):
    """A :class:`RedisStore` for asyncio, on ``redis.asyncio``: the same hashes,
    scripts, arguments and rules, with coroutine methods.

    ``client_or_url`` is a ``redis.asyncio.Redis`` client, which stays the
    caller's, or a URL, from which the store makes a client of its own (without
    re-sends, as :class:`RedisStore` does) and closes it on ``close()``. The
    constructor sends nothing: connections are made by the calls, from the
    client's pool, so calls run in parallel. ``store_versioned`` is the same
    single script as :class:`RedisStore`'s, run atomically by the server.

    Cancelling a call closes the connection it was using (redis-py does, so that
    no reply is read by the wrong call): a write the server had received runs to
    its end anyway, as after a lost connection. The store ignores ``ctx``.
    """

    _name, _client_type, _client_label = (
        "AsyncRedisStore",
        redis.asyncio.Redis,
        "redis.asyncio.Redis",
    )
    _client: redis.asyncio.Redis

    def __init__(self, client_or_url: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._setup(client_or_url, prefix)

    async def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        return (await self.load_versioned(ctx, key))[0]

    async def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (last writer wins); bumps its version."""
        await self._do(self._store_request(key, value))

    async def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        """The value at ``key`` and its version: ``(None, 0)`` when absent."""
        return await self._do(self._load_request(key))

    async def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        """Set ``key`` to ``value`` if its version is still ``version``; returns the new one.

        One server-side script, run atomically. Raises
        :class:`~elmstate.Conflict`, storing nothing, if the version differs.
        """
        return await self._do(self._cas_request(key, value, version))

    async def load_many_versioned(self, ctx: Any, keys: Any) -> list[tuple[bytes | None, int]]:
        """The value and version of each of ``keys``, in their order: one
        server-side script, so one moment of the server's data."""
        return await self._do(self._load_many_request(keys))

    async def store_many_versioned(self, ctx: Any, items: Any) -> list[int]:
        """Set every ``(key, value, version)`` of ``items`` if every key is still at
        its ``version``; returns the new versions, in order. One server-side
        script over every key, run atomically.

        Raises :class:`~elmstate.Conflict` for the first item whose version differs,
        storing nothing at all.
        """
        return await self._do(self._store_many_request(items))

    async def close(self) -> None:
        """Close the store's own client and its connections (never a caller's
        client); idempotent. Later calls raise ``ValueError``."""
        if not self._closed:
            self._closed = True
            if self._owned:
                await self._client.aclose(close_connection_pool=True)

    aclose = close  # the name contextlib.aclosing() calls

    async def __aenter__(self) -> AsyncRedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _do(self, request: _Request[T]) -> T:
        self._check_open()
        if request.call is None:
            return request.reply(None)
        try:
            reply = await request.call(*request.args)
        except redis.RedisError as exc:
            error = redacted(exc, self._password)
            if error is exc:
                raise
        else:
            return request.reply(reply)
        raise error  # outside the except block: the original is not chained

    @staticmethod
    def _no_retry() -> Any:
        return redis.asyncio.retry.Retry(NoBackoff(), 0)
