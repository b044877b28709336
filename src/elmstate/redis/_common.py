"""What every class of elmstate.redis shares: entry ids, codecs, shards, the client check.

See docs/redis.md for the rules these implement.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Callable, cast

try:
    import redis
    import redis.asyncio
except ImportError as exc:
    raise ImportError(
        'elmstate.redis needs redis-py: pip install "elmstate[redis]"', name=exc.name
    ) from exc

from .. import _validate as check

Encode = Callable[[Any], bytes]
Decode = Callable[[bytes], Any]
EntryId = tuple[int, int]

# The fields of an entry elmstate writes: the message's key (keyed streams only)
# and the encoded message. Short names would save bytes per entry; these read
# well in redis-cli, and the dead letters use the same ones.
KEY = b"key"
PAYLOAD = b"payload"


def parse_id(raw: bytes | str) -> EntryId:
    """An entry id as the pair of integers it is: ``"9-0"`` sorts before ``"10-0"``."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(pair: EntryId) -> str:
    return f"{pair[0]}-{pair[1]}"


def after(pair: EntryId) -> str:
    """The smallest id greater than ``pair``."""
    return f"{pair[0]}-{pair[1] + 1}"


def json_encode(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def json_decode(payload: bytes) -> Any:
    return json.loads(payload)


def codec_arg(name: str, value: Any, default: Callable[..., Any]) -> Callable[..., Any]:
    if value is None:
        return default
    check.callable_arg(name, value)
    return value  # type: ignore[no-any-return]


def name_arg(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def count_arg(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def client_arg(client: Any) -> redis.Redis:
    """A redis-py client that returns bytes (payloads are bytes, maybe not UTF-8)."""
    return cast(redis.Redis, _bytes_client(client, redis.Redis, "redis.Redis"))


def async_client_arg(client: Any) -> redis.asyncio.Redis:
    """A ``redis.asyncio`` client that returns bytes."""
    return cast(
        redis.asyncio.Redis, _bytes_client(client, redis.asyncio.Redis, "redis.asyncio.Redis")
    )


def _bytes_client(client: Any, client_type: type[Any], label: str) -> Any:
    if not isinstance(client, client_type):
        raise TypeError(f"client must be a {label} client, not {type(client).__name__}")
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ValueError("client must be made with decode_responses=False: payloads are bytes")
    return client


def socket_timeout(client: redis.Redis | redis.asyncio.Redis) -> float | None:
    """The client's socket timeout in seconds (None: reads wait for ever)."""
    value = client.connection_pool.connection_kwargs.get("socket_timeout")
    return None if value is None else float(value)


def shard_of(key: str, shards: int) -> int:
    """The shard of ``key``: the same in every process, machine and Python version."""
    return zlib.crc32(key.encode()) % shards


def shard_stream(name: str, shard: int) -> str:
    return f"{name}:{shard}"


def recorded_shards(client: redis.Redis, name: str, shards: int) -> int:
    """``name``'s shard count as recorded under ``name:meta``; ``shards`` if none was."""
    pipe = client.pipeline(transaction=True)
    pipe.hsetnx(f"{name}:meta", "shards", shards)
    pipe.hget(f"{name}:meta", "shards")
    return int(pipe.execute()[1])


def record_shards(client: redis.Redis, name: str, shards: int) -> None:
    """Record ``name``'s shard count, or check it against the one recorded.

    Every producer and worker of ``name`` must agree on it: a key's shard is
    ``crc32(key) % shards``, so two counts would send one key to two shards.
    """
    recorded = recorded_shards(client, name, shards)
    if recorded != shards:
        raise ValueError(
            f"shards={shards} but {name!r} was created with {recorded} shards ({name}:meta)"
        )


def create_group(client: redis.Redis, stream: str, group: str) -> None:
    """The consumer group, reading ``stream`` from its start, made unless it exists."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if not _group_exists(exc):
            raise


async def create_group_async(client: redis.asyncio.Redis, stream: str, group: str) -> None:
    """:func:`create_group` over a ``redis.asyncio`` client."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if not _group_exists(exc):
            raise


def _group_exists(exc: redis.ResponseError) -> bool:
    return "BUSYGROUP" in str(exc)
