"""aggregate on a versioned store: loaded with its version, saved by compare-and-set,
a concurrent save is a Conflict that stores nothing; and feed="inline"
(docs/contract.md#aggregate, docs/contract.md#stores)."""

from __future__ import annotations

import importlib
import json
import sys
import threading
from types import ModuleType
from typing import Any

import pytest
from _helpers import SAFETY
from _recording import live_threads

# run, batch and aggregate run through elmstate.aio too (asyncio, uvloop): tests/_modes.py
AIO_MODES = True


@pytest.fixture(params=["thread", "inline"])
def feed(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Recorded:
    """Wraps a versioned store, logging every call of both protocols."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[Any, ...]] = []

    def load(self, ctx: Any, key: str) -> Any:
        self.calls.append(("load", key))
        return self.inner.load(ctx, key)

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        self.calls.append(("store", key))
        self.inner.store(ctx, key, value)

    def load_versioned(self, ctx: Any, key: str) -> Any:
        self.calls.append(("load_versioned", key))
        return self.inner.load_versioned(ctx, key)

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        self.calls.append(("store_versioned", key, version))
        return int(self.inner.store_versioned(ctx, key, value, version))


class Counter:
    """A model that is a count; each int message adds itself. ``during`` runs in
    the first update: the place to sneak in another writer."""

    def __init__(self, during: Any = None, refs: tuple[str, ...] = ()) -> None:
        self.during = during
        self.refs = refs
        self.others: dict[str, Any] = {}

    def init(self) -> tuple[int, Any]:
        return 0, None

    def update(self, message: int) -> Any:
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return lambda model: (model + message, None)

    def view(self, model: int) -> None:
        pass

    def hydrator(self, ctx: Any, key: str, value: bytes) -> Any:
        refs = [lambda k=k: (k, lambda m, k=k: self.others.__setitem__(k, m)) for k in self.refs]
        return json.loads(value), refs

    def dehydrator(self, ctx: Any, key: str, model: int) -> bytes:
        return json.dumps(model).encode()

    def aggregate(
        self, elm: ModuleType, store: Any, key: str, *messages: int, fetcher: Any = None, **kw: Any
    ) -> Any:
        """One aggregate of ``key``: its input ``messages``, or what ``fetcher`` gives."""
        buf = elm.Buffer()
        kw.setdefault("ctx", elm.Context(timeout=SAFETY))
        return elm.aggregate(
            self.init,
            self.update,
            self.view,
            buf,
            buf.new_consumer(),
            fetcher or (lambda ctx: (list(messages), False)),
            store,
            self.hydrator,
            self.dehydrator,
            key,
            **kw,
        )


def test_the_root_is_loaded_with_its_version_and_saved_against_it(
    elm: ModuleType, store: Any, feed: str
) -> None:
    store.store(None, "n", b"5")
    store.store(None, "n", b"40")  # version 2
    recorded = Recorded(store)
    assert Counter().aggregate(elm, recorded, "n", 1, 1, feed=feed) == 42
    assert recorded.calls == [("load_versioned", "n"), ("store_versioned", "n", 2)]
    assert store.load_versioned(None, "n") == (b"42", 3)


def test_an_absent_key_is_saved_with_version_zero(elm: ModuleType, store: Any, feed: str) -> None:
    recorded = Recorded(store)
    assert Counter().aggregate(elm, recorded, "new", 3, feed=feed) == 3
    assert recorded.calls == [("load_versioned", "new"), ("store_versioned", "new", 0)]
    assert store.load_versioned(None, "new") == (b"3", 1)


def test_read_only_models_are_loaded_with_plain_load(
    elm: ModuleType, store: Any, feed: str
) -> None:
    store.store(None, "root", b"1")
    store.store(None, "other", b"100")
    recorded = Recorded(store)
    program = Counter(refs=("other",))
    assert program.aggregate(elm, recorded, "root", 1, feed=feed) == 2
    assert recorded.calls == [
        ("load_versioned", "root"),
        ("load", "other"),
        ("store_versioned", "root", 1),
    ]
    assert program.others == {"other": 100}


@pytest.mark.parametrize("present", [False, True], ids=["absent", "present"])
def test_a_save_by_another_writer_meanwhile_is_a_conflict_and_nothing_is_stored(
    elm: ModuleType, store: Any, feed: str, present: bool
) -> None:
    if present:
        store.store(None, "k", b"10")

    def other_writer() -> None:
        store.store(None, "k", b"777")

    with pytest.raises(elm.Conflict) as info:
        Counter(during=other_writer).aggregate(elm, store, "k", 1, feed=feed)
    expected = 1 if present else 0
    assert (info.value.key, info.value.expected, info.value.actual) == ("k", expected, expected + 1)
    assert store.load_versioned(None, "k") == (b"777", expected + 1)


def test_two_concurrent_aggregates_of_one_key_cannot_both_succeed(
    elm: ModuleType, store: Any, feed: str
) -> None:
    """Both load version 0 (each waits in update until the other has loaded);
    one saves, the other gets a Conflict: no update is lost."""
    loaded = {"first": threading.Event(), "second": threading.Event()}
    outcomes: list[Any] = []

    class Signalling(Recorded):
        def load_versioned(self, ctx: Any, key: str) -> Any:
            reply = super().load_versioned(ctx, key)
            loaded[threading.current_thread().name].set()
            return reply

    recorded = Signalling(store)

    def aggregate(other: str, value: int) -> None:
        program = Counter(during=lambda: loaded[other].wait(SAFETY))
        try:
            outcomes.append(program.aggregate(elm, recorded, "k", value, feed=feed))
        except elm.Conflict as exc:
            outcomes.append(exc)

    threads = [
        threading.Thread(target=aggregate, args=("second", 1), name="first"),
        threading.Thread(target=aggregate, args=("first", 2), name="second"),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SAFETY)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "int"]
    winner = next(o for o in outcomes if isinstance(o, int))
    assert store.load_versioned(None, "k") == (json.dumps(winner).encode(), 1)


def test_a_plain_store_is_still_saved_with_store(elm: ModuleType, feed: str) -> None:
    class Plain:
        def __init__(self) -> None:
            self.data: dict[str, bytes] = {"k": b"1"}

        def load(self, ctx: Any, key: str) -> Any:
            return self.data.get(key)

        def store(self, ctx: Any, key: str, value: bytes) -> None:
            self.data[key] = value

    plain = Plain()
    assert Counter().aggregate(elm, plain, "k", 2, feed=feed) == 3
    assert plain.data == {"k": b"3"}


def test_a_store_with_only_one_versioned_method_is_used_plainly(elm: ModuleType) -> None:
    class Half:
        data: dict[str, bytes] = {}

        def load(self, ctx: Any, key: str) -> Any:
            return self.data.get(key)

        def store(self, ctx: Any, key: str, value: bytes) -> None:
            self.data[key] = value

        def load_versioned(self, ctx: Any, key: str) -> Any:
            raise AssertionError("not a versioned store: store_versioned is missing")

    half = Half()
    assert Counter().aggregate(elm, half, "k", 4) == 4
    assert half.data == {"k": b"4"}


def test_a_bad_load_versioned_reply_names_it(elm: ModuleType, store: Any) -> None:
    class Bad(Recorded):
        def load_versioned(self, ctx: Any, key: str) -> Any:
            return b"1"

    with pytest.raises(TypeError, match="store.load_versioned must return a"):
        Counter().aggregate(elm, Bad(store), "k", 1)


def test_inline_starts_no_thread_and_stores(elm: ModuleType, store: Any) -> None:
    before = live_threads()
    names: list[set[str]] = []

    def fetcher(ctx: Any) -> Any:
        names.append({t.name for t in threading.enumerate()})
        return [1, 2, 3], False

    model = Counter().aggregate(elm, store, "k", fetcher=fetcher, ctx=None, feed="inline")
    assert model == 6
    assert store.load(None, "k") == b"6"
    assert all("elmstate-feeder" not in n for n in names)
    assert live_threads() == before


def test_an_inline_fetcher_error_stores_nothing(elm: ModuleType, store: Any) -> None:
    store.store(None, "k", b"1")
    boom = OSError("page lost")
    replies: list[Any] = [([1], True), boom]

    def fetcher(ctx: Any) -> Any:
        reply = replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    with pytest.raises(OSError) as info:
        Counter().aggregate(elm, store, "k", fetcher=fetcher, feed="inline")
    assert info.value is boom
    assert store.load_versioned(None, "k") == (b"1", 1)


@pytest.mark.parametrize("feed", ["threads", None, 0])
def test_an_unknown_feed_is_refused_before_anything_loads(elm: ModuleType, feed: Any) -> None:
    recorded = Recorded(elm.MemoryStore())
    with pytest.raises(ValueError, match="feed must be"):
        Counter().aggregate(elm, recorded, "k", 1, feed=feed)
    assert recorded.calls == []


def test_the_classes_trusted_without_a_method_lookup_have_the_methods(elm: ModuleType) -> None:
    """The argument checks skip looking up methods on the library's own classes;
    each registered class must really have them, and every bundled store is
    versioned (aggregate takes that for granted)."""
    check = elm._validate  # this core's generation of the package (see conftest)
    if elm is sys.modules.get("elmstate"):  # the live generation: the server stores too
        importlib.import_module("elmstate.stores.postgres")
        importlib.import_module("elmstate.stores.redis")
    roles = {
        "put": check.PRODUCERS,
        "get commit rollback": check.CONSUMERS,
        "load store load_versioned store_versioned close": check.STORES,
    }
    for methods, classes in roles.items():
        for cls in classes.values():
            assert all(callable(getattr(cls, m, None)) for m in methods.split()), cls
    assert elm.Buffer in check.PRODUCERS.values()
    assert elm.BufferConsumer in check.CONSUMERS.values()
    names = {cls.__name__ for cls in check.STORES.values()}
    assert {"MemoryStore", "SQLiteStore"} <= names
    if elm is sys.modules.get("elmstate"):
        assert {"PostgresStore", "RedisStore"} <= names


def test_a_producer_of_an_unhashable_class_is_accepted(elm: ModuleType) -> None:
    """The checks look up the library's own classes by identity: a class that
    cannot be hashed (its metaclass defines __eq__ only) is still a producer."""

    class Meta(type):
        def __eq__(cls, other: object) -> bool:
            return cls is other

        __hash__ = None  # type: ignore[assignment]

    class Producer(metaclass=Meta):
        def __init__(self, buf: Any) -> None:
            self.buf = buf

        def put(self, ctx: Any, *values: Any) -> None:
            self.buf.put(ctx, *values)

    program = Counter()
    buf = elm.Buffer()
    model = elm.aggregate(
        program.init,
        program.update,
        program.view,
        Producer(buf),
        buf.new_consumer(),
        lambda ctx: ([2], False),
        elm.MemoryStore(),
        program.hydrator,
        program.dehydrator,
        "k",
        feed="inline",
    )
    assert model == 2
    buf = elm.Buffer()
    batch = elm.batch(
        program.init,
        program.update,
        program.view,
        Producer(buf),
        buf.new_consumer(),
        lambda ctx: ([3], False),
        feed="inline",
    )
    assert batch == 3
