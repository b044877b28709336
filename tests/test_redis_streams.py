"""StreamProducer and StreamConsumer: one Redis stream as a §1 producer and consumer
(docs/contract.md, SPEC §10), against this machine's real Redis (tests/_stores.py).

Every test takes ``elm``, so each runs with the compiled and with the pure core:
``elm.redis`` is the generation's own package (its Context check is that core's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, cast

import pytest
import redis
from _helpers import SAFETY, InThread
from _stores import REDIS, redis_admin, redis_url, require, tag

BLOCK = 0.2  # seconds: short waits keep the tests that wait for a ctx quick


class Stop(Exception):
    """Raised by a program's update to end ``run``."""


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[str]:
    """A stream name of this test's own, absent before and deleted after."""
    require("redis")
    name = f"elmstate-test:{tag(tmp_path)}:stream"
    with redis_admin() as admin:
        admin.delete(name)
        try:
            yield name
        finally:
            admin.delete(name)


@pytest.fixture
def client(stream: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(REDIS, socket_timeout=5) as opened:
        yield opened


def drain(consumer: Any, elm: ModuleType, wait: float = 0.5) -> list[Any]:
    """Every message ``consumer`` hands out until none comes for ``wait`` seconds."""
    got = []
    ctx = elm.Context(timeout=wait)
    while True:
        try:
            got.append(consumer.get(ctx))
        except elm.DeadlineExceeded:
            return got
        ctx = elm.Context(timeout=wait)


def pending(client: redis.Redis, stream: str, group: str = "g") -> int:
    return int(client.xpending(stream, group)["pending"])


def entries(client: redis.Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The stream's entries, oldest first, as stored."""
    return cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(stream))


def payloads(client: redis.Redis, stream: str) -> list[bytes]:
    return [fields[b"payload"] for _, fields in entries(client, stream)]


def add(client: redis.Redis, stream: str, field: bytes, value: bytes) -> str:
    """XADD an entry elmstate would not write; its id as text."""
    return cast(bytes, client.xadd(stream, {field: value})).decode()


# --------------------------------------------------------------------------- delivery


def test_round_trip_in_order(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    """More messages than one read returns (a page is 100), JSON values of every kind."""
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    messages = [
        *range(240),
        "text, ünïcode",
        {"a": [1, 2.5, None, True]},
        [],
        None,
    ]
    for start in range(0, len(messages), 7):
        assert producer.put(None, *messages[start : start + 7]) is None
    ctx = elm.Context(timeout=SAFETY)
    got = [consumer.get(ctx) for _ in messages]
    assert got == messages
    consumer.commit()
    assert pending(client, stream) == 0
    assert client.xlen(stream) == len(messages)


def test_an_empty_put_sends_nothing(elm: ModuleType, tmp_path: Path, stream: str) -> None:
    """``run`` puts after every tick, mostly nothing: that must cost no round trip.
    The producer's connection (named, so CLIENT LIST finds it) still shows the
    command it sent before, and no other connection was opened."""
    with redis.Redis.from_url(redis_url(tmp_path)) as named, redis_admin() as admin:
        producer = elm.redis.StreamProducer(named, stream)
        producer.put(None, "first")
        name = named.connection_pool.connection_kwargs["client_name"]

        def ours() -> list[tuple[int, str]]:
            return [(int(c["id"]), c["cmd"]) for c in admin.client_list() if c["name"] == name]

        before = ours()
        assert [cmd for _, cmd in before] == ["xadd"]
        producer.put(None)
        producer.put(elm.Context())
        assert ours() == before
        assert admin.xlen(stream) == 1


def test_a_put_appends_all_or_nothing(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    """Every value is encoded before anything is sent: one that cannot be encoded
    appends none, so a retried tick does not append the others twice."""
    producer = elm.redis.StreamProducer(client, stream)
    with pytest.raises(TypeError, match="not JSON serializable"):
        producer.put(None, 1, object(), 3)
    assert client.xlen(stream) == 0
    producer.put(None, 1, 2, 3)
    assert payloads(client, stream) == [b"1", b"2", b"3"]


def test_maxlen_trims_approximately(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    """MAXLEN ~ removes whole stream nodes (100 entries by default), never below maxlen."""
    producer = elm.redis.StreamProducer(client, stream, maxlen=10)
    for i in range(1000):
        producer.put(None, i)
    assert 10 <= client.xlen(stream) <= 10 + 2 * 100
    producer.put(None, *range(1000, 1500))
    length = client.xlen(stream)
    assert 10 <= length <= 10 + 2 * 100
    newest = [json.loads(p) for p in payloads(client, stream)[-10:]]
    assert newest == list(range(1490, 1500))  # trimming takes the oldest


def test_without_maxlen_nothing_is_trimmed(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    producer = elm.redis.StreamProducer(client, stream)
    for i in range(300):
        producer.put(None, i)
    assert client.xlen(stream) == 300


def test_custom_codecs(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    """The payload is whatever ``encode`` made; ``decode`` gets those very bytes."""
    producer = elm.redis.StreamProducer(client, stream, encode=lambda m: m.encode("utf-16"))
    seen: list[bytes] = []

    def decode(payload: bytes) -> str:
        seen.append(payload)
        return payload.decode("utf-16")

    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", decode=decode, block=BLOCK)
    producer.put(None, "héllo", "wörld")
    assert payloads(client, stream) == [
        "héllo".encode("utf-16"),
        "wörld".encode("utf-16"),
    ]
    ctx = elm.Context(timeout=SAFETY)
    assert [consumer.get(ctx), consumer.get(ctx)] == ["héllo", "wörld"]
    assert seen == ["héllo".encode("utf-16"), "wörld".encode("utf-16")]


def test_encode_must_return_bytes(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    producer = elm.redis.StreamProducer(client, stream, encode=str)
    with pytest.raises(TypeError, match="encode must return bytes, got str"):
        producer.put(None, 1)
    assert client.xlen(stream) == 0


# --------------------------------------------------------------------------- the group


def test_the_group_is_created_if_missing(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    """On a stream that does not exist yet, and again (BUSYGROUP is no error); the
    group starts at the stream's beginning, so entries put before it are read."""
    elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    assert [g["name"] for g in client.xinfo_groups(stream)] == [b"g"]
    elm.redis.StreamProducer(client, stream).put(None, "early")
    elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    client.delete(stream)
    elm.redis.StreamProducer(client, stream).put(None, "before the group")
    consumer = elm.redis.StreamConsumer(client, stream, "g2", "c", block=BLOCK)
    assert consumer.get(elm.Context(timeout=SAFETY)) == "before the group"


def test_two_consumers_of_one_group_share_the_work(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    producer = elm.redis.StreamProducer(client, stream)
    first = elm.redis.StreamConsumer(client, stream, "g", "first", block=BLOCK)
    second = elm.redis.StreamConsumer(client, stream, "g", "second", block=BLOCK)
    producer.put(None, *range(300))
    ctx = elm.Context(timeout=SAFETY)
    got_first = [first.get(ctx)]  # reads a page of 100
    got_second = [second.get(ctx)]  # reads the next page
    got_first += drain(first, elm)
    got_second += drain(second, elm)
    assert got_first and got_second
    assert sorted(got_first + got_second) == list(range(300))
    assert got_first == sorted(got_first) and got_second == sorted(got_second)
    first.commit()
    second.commit()
    assert pending(client, stream) == 0


# --------------------------------------------------------------------------- commit, rollback


def test_commit_acknowledges_what_was_handed_out(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, "a", "b", "c")
    ctx = elm.Context(timeout=SAFETY)
    assert [consumer.get(ctx), consumer.get(ctx)] == ["a", "b"]
    assert pending(client, stream) == 3  # the whole page was delivered to this consumer
    consumer.commit()
    assert pending(client, stream) == 1  # "c": read from Redis, not handed out yet
    assert consumer.get(ctx) == "c"
    consumer.commit()
    assert pending(client, stream) == 0


def test_rollback_hands_out_the_same_entries_again(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, "a", "b", "c", "d")
    ctx = elm.Context(timeout=SAFETY)
    assert consumer.get(ctx) == "a"
    consumer.commit()
    assert [consumer.get(ctx), consumer.get(ctx)] == ["b", "c"]
    consumer.rollback()
    producer.put(None, "e")
    assert [consumer.get(ctx) for _ in range(4)] == ["b", "c", "d", "e"]
    consumer.rollback()
    assert [consumer.get(ctx) for _ in range(4)] == ["b", "c", "d", "e"]
    assert pending(client, stream) == 4
    consumer.commit()
    assert pending(client, stream) == 0


def test_nothing_uncommitted(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    """As a Buffer consumer: before any get, and after a commit or a rollback."""
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    for method in (consumer.commit, consumer.rollback):
        with pytest.raises(elm.NothingUncommitted, match="nothing uncommitted"):
            method()
    producer.put(None, "a")
    ctx = elm.Context(timeout=SAFETY)
    consumer.get(ctx)
    consumer.rollback()
    for method in (consumer.commit, consumer.rollback):
        with pytest.raises(elm.NothingUncommitted):
            method()
    consumer.get(ctx)
    consumer.commit()
    for method in (consumer.commit, consumer.rollback):
        with pytest.raises(elm.NothingUncommitted):
            method()
    assert pending(client, stream) == 0


# --------------------------------------------------------------------------- after a restart


def test_own_pending_entries_come_first_after_a_restart(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    """A consumer of the same name gets what the last one read and never
    acknowledged, in order, over several pages, before anything new; another
    consumer of the group never sees them."""
    producer = elm.redis.StreamProducer(client, stream)
    crashed = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, *range(250))
    ctx = elm.Context(timeout=SAFETY)
    assert [crashed.get(ctx) for _ in range(5)] == list(range(5))
    crashed.commit()
    assert drain(crashed, elm) == list(range(5, 250))  # read, never acknowledged
    del crashed
    producer.put(None, "new")
    other = elm.redis.StreamConsumer(client, stream, "g", "other", block=BLOCK)
    assert drain(other, elm) == ["new"]
    other.rollback()  # "new" stays pending, for "other"

    restarted = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, "newer")
    assert drain(restarted, elm) == [*range(5, 250), "newer"]
    restarted.commit()
    assert client.xpending(stream, "g")["consumers"] == [{"name": b"other", "pending": 1}]


def test_an_entry_whose_delivery_was_lost_comes_out_while_running(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    """The server delivered entries to this name, the reply never reached the object
    (here another connection read them under its name): they are pending for it,
    and get hands them out once a wait ends with nothing new -- not only after a
    restart. Entries it holds, handed out and not committed, are not handed out twice."""
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, "held")
    ctx = elm.Context(timeout=SAFETY)
    assert consumer.get(ctx) == "held"  # handed out, not committed
    producer.put(None, "lost 1", "lost 2")
    client.xreadgroup("g", "c", {stream: ">"}, count=10)  # the delivery the object missed
    assert drain(consumer, elm) == ["lost 1", "lost 2"]
    consumer.commit()
    assert pending(client, stream) == 0


def test_deleted_pending_entries_are_acknowledged_and_skipped(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    producer = elm.redis.StreamProducer(client, stream)
    crashed = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, "a", "b", "c", "d")
    ids = [entry_id for entry_id, _ in entries(client, stream)]
    assert drain(crashed, elm) == ["a", "b", "c", "d"]
    client.xdel(stream, ids[1], ids[3])
    restarted = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    assert drain(restarted, elm) == ["a", "c"]
    detail = client.xpending_range(stream, "g", min="-", max="+", count=10)
    assert [p["message_id"] for p in detail] == [ids[0], ids[2]]  # b and d acknowledged


def test_trimmed_pending_entries_are_acknowledged_and_skipped(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    producer = elm.redis.StreamProducer(client, stream)
    crashed = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, *range(150))
    assert len(drain(crashed, elm)) == 150
    client.xtrim(stream, maxlen=0)
    restarted = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, "after")
    assert drain(restarted, elm) == ["after"]
    restarted.commit()
    assert pending(client, stream) == 0


# --------------------------------------------------------------------------- bad payloads


def test_a_payload_that_cannot_be_decoded(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    """The ValueError names the stream and the entry; the entry stays pending:
    rollback serves it again, commit acknowledges it (the way past it)."""
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    bad = add(client, stream, b"payload", b"\x80 not json")
    elm.redis.StreamProducer(client, stream).put(None, "fine")
    ctx = elm.Context(timeout=SAFETY)
    for _ in range(2):
        with pytest.raises(ValueError, match=rf"stream '{stream}', entry {bad}: .*decoded"):
            consumer.get(ctx)
        assert pending(client, stream) == 2
        consumer.rollback()
    with pytest.raises(ValueError, match=bad):
        consumer.get(ctx)
    consumer.commit()
    assert pending(client, stream) == 1
    assert consumer.get(ctx) == "fine"


def test_an_entry_without_a_payload(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    odd = add(client, stream, b"body", b"1")
    with pytest.raises(ValueError, match=rf"entry {odd}: no 'payload' field"):
        consumer.get(elm.Context(timeout=SAFETY))
    assert pending(client, stream) == 1


def test_nothing_is_unpickled(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    """A pickle is just bytes that are not JSON."""
    import pickle

    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    add(client, stream, b"payload", pickle.dumps(("a", 1)))
    with pytest.raises(ValueError, match="cannot be decoded"):
        consumer.get(elm.Context(timeout=SAFETY))


# --------------------------------------------------------------------------- contexts


def test_get_raises_ctx_err_within_block_of_the_end(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    ctx = elm.Context(timeout=SAFETY)
    waiting = InThread(lambda: consumer.get(ctx))
    time.sleep(0.1)
    cancelled_at = time.monotonic()
    ctx.cancel()
    waiting.thread.join(SAFETY)
    assert isinstance(waiting.error, elm.Canceled)
    assert waiting.error is ctx.err
    assert waiting.ended_at - cancelled_at < BLOCK + 0.5
    with pytest.raises(elm.DeadlineExceeded):
        consumer.get(elm.Context(timeout=0.05))


def test_an_ended_ctx_wins_over_a_ready_message(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    """As Buffer: get and put raise ctx.err at once, and put appends nothing."""
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    producer.put(None, "a")
    ended = elm.Context()
    ended.cancel()
    with pytest.raises(elm.Canceled):
        consumer.get(ended)
    with pytest.raises(elm.Canceled):
        producer.put(ended, "b")
    assert client.xlen(stream) == 1
    assert consumer.get(elm.Context(timeout=SAFETY)) == "a"


# --------------------------------------------------------------------------- arguments


def test_block_must_be_shorter_than_the_socket_timeout(elm: ModuleType, stream: str) -> None:
    with redis.Redis.from_url(REDIS, socket_timeout=0.5) as short:
        for block in (0.5, 1.0):
            with pytest.raises(ValueError, match=r"block must be shorter .*socket timeout"):
                elm.redis.StreamConsumer(short, stream, "g", "c", block=block)
        elm.redis.StreamConsumer(short, stream, "g", "c", block=0.4)
    with redis.Redis.from_url(REDIS, socket_timeout=None) as unbounded:
        elm.redis.StreamConsumer(unbounded, stream, "g", "c", block=3600)


def test_a_wait_longer_than_the_timeout_would_have_failed(elm: ModuleType, stream: str) -> None:
    """Why the check exists: the client gives up on a BLOCK the server still honours."""
    with redis.Redis.from_url(REDIS, socket_timeout=0.2) as short:
        short.xgroup_create(stream, "g", id="0", mkstream=True)
        with pytest.raises(redis.TimeoutError):
            short.xreadgroup("g", "c", {stream: ">"}, block=500)


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"stream": ""}, ValueError, "stream"),
        ({"stream": b"s"}, TypeError, "stream"),
        ({"group": ""}, ValueError, "group"),
        ({"group": None}, TypeError, "group"),
        ({"consumer": ""}, ValueError, "consumer"),
        ({"consumer": 1}, TypeError, "consumer"),
        ({"decode": "json"}, TypeError, "decode"),
        ({"block": 0}, ValueError, "block"),
        ({"block": -1}, ValueError, "block"),
        ({"block": float("nan")}, ValueError, "block"),
        ({"block": True}, TypeError, "block"),
        ({"block": "1"}, TypeError, "block"),
    ],
)
def test_consumer_arguments(
    elm: ModuleType,
    client: redis.Redis,
    stream: str,
    kwargs: dict[str, Any],
    error: type[Exception],
    named: str,
) -> None:
    args = {"stream": stream, "group": "g", "consumer": "c", **kwargs}
    with pytest.raises(error, match=rf"^{named} "):
        elm.redis.StreamConsumer(client, **args)


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"stream": ""}, ValueError, "stream"),
        ({"stream": None}, TypeError, "stream"),
        ({"encode": 1}, TypeError, "encode"),
        ({"maxlen": 0}, ValueError, "maxlen"),
        ({"maxlen": 1.5}, TypeError, "maxlen"),
        ({"maxlen": True}, TypeError, "maxlen"),
    ],
)
def test_producer_arguments(
    elm: ModuleType,
    client: redis.Redis,
    stream: str,
    kwargs: dict[str, Any],
    error: type[Exception],
    named: str,
) -> None:
    args = {"stream": stream, **kwargs}
    with pytest.raises(error, match=rf"^{named} "):
        elm.redis.StreamProducer(client, **args)


def test_client_and_ctx_arguments(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    makers: list[Callable[[Any], Any]] = [
        lambda c: elm.redis.StreamProducer(c, stream),
        lambda c: elm.redis.StreamConsumer(c, stream, "g", "c"),
    ]
    for make in makers:
        with pytest.raises(TypeError, match="^client must be a redis.Redis"):
            make(REDIS)
        with redis.Redis.from_url(REDIS, decode_responses=True) as text:
            with pytest.raises(ValueError, match="^client must be made with decode_responses"):
                make(text)
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    with pytest.raises(TypeError, match="^ctx must be an elmstate.Context"):
        producer.put(object(), 1)
    with pytest.raises(TypeError, match="^ctx must be an elmstate.Context"):
        consumer.get(1.0)
    assert client.xlen(stream) == 0


# --------------------------------------------------------------------------- run and batch


class Counter:
    """Counts to ``last`` through commands (each message's command makes the next),
    then update raises Stop on ``last``."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.views: list[int] = []

    def init(self) -> tuple[int, Any]:
        return 0, [lambda: 1]

    def update(self, message: int) -> Callable[[int], tuple[int, Any]]:
        if message == self.last:
            raise Stop(message)
        return lambda model: (model + message, [lambda: message + 1])

    def view(self, model: int) -> None:
        self.views.append(model)


def test_run_over_a_stream(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    """Every tick's output goes through Redis and comes back; each tick commits; the
    failing tick rolls back, so its message stays pending (at-least-once)."""
    program = Counter(last=50)
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    with pytest.raises(Stop):
        elm.run(
            program.init,
            program.update,
            program.view,
            producer,
            consumer,
            ctx=elm.Context(timeout=SAFETY),
        )
    assert program.views[-1] == sum(range(50))
    assert client.xlen(stream) == 50
    assert pending(client, stream) == 1
    restarted = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    assert restarted.get(elm.Context(timeout=SAFETY)) == 50


def test_run_ends_with_its_ctx(elm: ModuleType, client: redis.Redis, stream: str) -> None:
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)
    ctx = elm.Context(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(elm.DeadlineExceeded):
        elm.run(lambda: (0, None), lambda m: None, lambda m: None, producer, consumer, ctx=ctx)
    assert time.monotonic() - started < 0.3 + BLOCK + 0.5


def pages(*replies: tuple[list[Any], bool]) -> Callable[[Any], tuple[list[Any], bool]]:
    queue = list(replies)
    return lambda ctx: queue.pop(0)


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_batch_over_a_stream(elm: ModuleType, client: redis.Redis, stream: str, feed: str) -> None:
    """The input and what its commands cause drain through Redis, JSON-encoded, and
    the batch's markers with them; the batch returns the last model and leaves
    nothing pending."""
    producer = elm.redis.StreamProducer(client, stream)
    consumer = elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK)

    def update(message: int) -> Callable[[list[int]], tuple[list[int], Any]]:
        follow = [lambda: -message] if message > 0 else None
        return lambda model: ([*model, message], follow)

    model = elm.batch(
        lambda: ([], None),
        update,
        lambda model: None,
        producer,
        consumer,
        pages(([1, 2], True), ([3], False)),
        ctx=elm.Context(timeout=SAFETY),
        feed=feed,
    )
    assert sorted(model) == [-3, -2, -1, 1, 2, 3]
    assert [m for m in model if m > 0] == [1, 2, 3]
    assert pending(client, stream) == 0
    with pytest.raises(elm.NothingUncommitted):
        consumer.commit()


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_a_marker_of_another_process_is_skipped(
    elm: ModuleType, client: redis.Redis, stream: str, feed: str
) -> None:
    """A marker entry whose token this process does not know (another process put
    it, or this one before a restart) is a marker of no batch: the batch commits
    and skips it, and it never reaches update (docs/contract.md#end-markers)."""
    client.xadd(stream, {b"marker": b"1:elsewhere:0"})
    seen: list[Any] = []

    def update(message: Any) -> Callable[[int], tuple[int, Any]]:
        seen.append(message)
        return lambda model: (model + message, None)

    model = elm.batch(
        lambda: (0, None),
        update,
        lambda model: None,
        elm.redis.StreamProducer(client, stream),
        elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK),
        pages(([1, 2, 3], False)),
        ctx=elm.Context(timeout=SAFETY),
        feed=feed,
    )
    assert (model, seen) == (6, [1, 2, 3])
    assert pending(client, stream) == 0


def test_markers_are_kept_only_until_committed(
    elm: ModuleType, client: redis.Redis, stream: str
) -> None:
    """The process keeps a marker object only while an entry carrying it is unread or
    uncommitted: a batch that drained leaves none behind."""
    markers = elm.redis._streams._markers
    before = len(markers)
    for feed in ("thread", "inline"):
        elm.batch(
            lambda: (0, None),
            lambda m: lambda model: (model + m, None),
            lambda model: None,
            elm.redis.StreamProducer(client, stream),
            elm.redis.StreamConsumer(client, stream, "g", "c", block=BLOCK),
            pages(([1], True), ([2], False)),
            ctx=elm.Context(timeout=SAFETY),
            feed=feed,
        )
    assert len(markers) == before
