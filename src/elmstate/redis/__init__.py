"""Scale-out over Redis Streams: sharded streams, consumer groups, keyed workers.

Redis carries the messages; a versioned store (:mod:`elmstate.stores`) holds the
aggregates. Needs the ``redis`` extra: ``pip install "elmstate[redis]"``;
``import elmstate`` does not import this package. The rules are in docs/redis.md.
"""

from __future__ import annotations

from ._common import parse_id, shard_of
from ._keyed import Emit, KeyedProducer, Program
from ._streams import AsyncStreamConsumer, AsyncStreamProducer, StreamConsumer, StreamProducer
from ._worker import KeyedWorker, Stats

__all__ = [
    "AsyncStreamConsumer",
    "AsyncStreamProducer",
    "Emit",
    "KeyedProducer",
    "KeyedWorker",
    "Program",
    "Stats",
    "StreamConsumer",
    "StreamProducer",
    "parse_id",
    "shard_of",
]
