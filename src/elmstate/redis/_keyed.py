"""The keyed side's small parts: ``KeyedProducer``, ``Emit`` and ``Program``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic

from .. import _validate as check
from ..typing import Dehydrator, Hydrator, Init, Model, Msg, Update, View
from ._common import (
    KEY,
    PAYLOAD,
    Encode,
    client_arg,
    codec_arg,
    count_arg,
    json_encode,
    name_arg,
    record_shards,
    shard_of,
    shard_stream,
)

if TYPE_CHECKING:
    import redis


class KeyedProducer:
    """Appends messages for keys to the shards of the logical stream ``name``.

    Not a §1 producer (its ``put`` takes a key). It never trims: the workers
    trim the shards they own.
    """

    def __init__(
        self, client: redis.Redis, name: str, *, shards: int, encode: Encode | None = None
    ) -> None:
        self._client = client_arg(client)
        self._name = name_arg("name", name)
        self._shards = count_arg("shards", shards)
        self._encode: Encode = codec_arg("encode", encode, json_encode)
        record_shards(self._client, self._name, self._shards)

    @property
    def shards(self) -> int:
        return self._shards

    def put(self, ctx: Any, key: str, *messages: Any) -> list[str]:
        """Append ``messages`` to ``key``'s shard in order, in one round trip.

        Returns their entry ids. A client that re-sends a command after a lost
        connection may append them twice (docs/redis.md#producing).
        """
        check.key_arg("key", key)
        if ctx is not None:
            err = ctx.err
            if err is not None:
                raise err
        if not messages:
            return []
        stream = shard_stream(self._name, shard_of(key, self._shards))
        encode = self._encode
        payloads = [check.bytes_value(encode(m), "encode must return bytes") for m in messages]
        pipe = self._client.pipeline(transaction=False)
        for payload in payloads:
            pipe.xadd(stream, {KEY: key.encode(), PAYLOAD: payload})
        return [raw.decode() for raw in pipe.execute()]

    def __repr__(self) -> str:
        return f"KeyedProducer(name={self._name!r}, shards={self._shards})"


class Emit:
    """A command's message for downstream: sent to the worker's ``output`` stream.

    Returned by a command (or put by one), it does not loop back to ``update``:
    the worker keeps it in the key's outbox, saves it with the snapshot and
    appends it to ``output`` (sharded by ``key``) before acknowledging the page.
    """

    __slots__ = ("key", "message")

    def __init__(self, key: str, message: Any) -> None:
        check.key_arg("key", key)
        self.key = key
        self.message = message

    def __eq__(self, other: object) -> bool:
        if type(other) is not Emit:
            return NotImplemented
        return self.key == other.key and self.message == other.message

    __hash__ = None  # type: ignore[assignment]  # mutable message: not hashable

    def __repr__(self) -> str:
        return f"Emit({self.key!r}, {self.message!r})"


def program_args(init: Any, update: Any, hydrator: Any, dehydrator: Any, view: Any) -> None:
    """A keyed program's callables checked, a bad one named (TypeError)."""
    for name, value in (
        ("init", init),
        ("update", update),
        ("hydrator", hydrator),
        ("dehydrator", dehydrator),
    ):
        check.callable_arg(name, value)
    check.optional_callable_arg("view", view)


class Program(Generic[Model, Msg]):
    """A keyed program, as the command line loads it (``MODULE:PROGRAM``)."""

    __slots__ = ("init", "update", "hydrator", "dehydrator", "view")

    def __init__(
        self,
        init: Init[Model, Msg],
        update: Update[Model, Msg],
        hydrator: Hydrator[Model],
        dehydrator: Dehydrator[Model],
        view: View[Model] | None = None,
    ) -> None:
        program_args(init, update, hydrator, dehydrator, view)
        self.init = init
        self.update = update
        self.hydrator = hydrator
        self.dehydrator = dehydrator
        self.view = view

    def __repr__(self) -> str:
        return f"Program(init={self.init!r}, update={self.update!r})"
