"""elmstate.metrics — counts, the tick histogram, depth and lag, in every mode
(docs/metrics.md)."""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import SAFETY, wait_for


def init() -> tuple[int, Any]:
    return 0, None


def adder(children: dict[int, list[int]] | None = None) -> Callable[[int], Any]:
    """update: add the message; ``children[m]`` are the messages m's command produces."""
    table = children or {}

    def update(message: int) -> Any:
        def transform(total: int) -> tuple[int, Any]:
            return total + message, [lambda m=m: m for m in table.get(message, ())]

        return transform

    return update


def keep(buf: Any) -> None:
    """Hold every message: depth then counts every put, not what a cleaner left."""
    buf.set_cleaner(lambda size, offsets: 0)


def assert_counts(m: Any, ticks: int, messages: int, rollbacks: int = 0, errors: int = 0) -> None:
    assert (m.ticks, m.messages, m.rollbacks, m.errors) == (ticks, messages, rollbacks, errors)
    histogram = m.histogram
    assert histogram.count == ticks == sum(histogram.counts)
    assert len(histogram.counts) == len(histogram.bounds) + 1
    assert histogram.sum >= 0.0


# --------------------------------------------------------------------------- counts


def test_run_ended_by_ctx_in_a_tick(elm: ModuleType) -> None:
    m = elm.metrics.Metrics()
    ctx = elm.Context()

    def view(total: int) -> None:
        if total == 6:
            ctx.cancel()  # this tick's put raises Canceled: rolled back, no error

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, 1, 2, 3)
        with pytest.raises(elm.Canceled):
            elm.run(*m.wrap(init, adder(), view, buf, consumer), ctx=ctx)
        assert buf.diff(consumer) == 1  # the message 3, rolled back
    assert_counts(m, ticks=3, messages=3, rollbacks=1)


def test_run_ended_by_ctx_between_ticks(elm: ModuleType) -> None:
    """Read from another thread while the loop runs; a get that the end of ctx
    interrupts read nothing, so nothing is rolled back."""
    m = elm.metrics.Metrics()
    ctx = elm.Context(timeout=SAFETY)
    failure: list[BaseException] = []

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        wrapped = m.wrap(init, adder({1: [2, 3]}), lambda total: None, buf, consumer)

        def loop() -> None:
            try:
                elm.run(*wrapped, ctx=ctx)
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=loop)
        thread.start()
        buf.put(None, 1)
        assert wait_for(lambda: m.ticks == 4)  # init's, then 1, 2 and 3
        ctx.cancel()
        thread.join(SAFETY)
    assert not thread.is_alive()
    assert type(failure[0]) is elm.Canceled
    assert_counts(m, ticks=4, messages=3)


def test_batch_counts_no_markers(elm: ModuleType, feed: str) -> None:
    m = elm.metrics.Metrics()
    pages = iter([([3, 1], True), ([2], False)])
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        wrapped = m.wrap(init, adder({3: [0, 0]}), lambda total: None, buf, consumer)
        total = elm.batch(*wrapped, lambda ctx: next(pages), feed=feed)
    assert total == 6
    # messages 3, 1, 2 and 3's two zeros; ticks: those and init's
    assert_counts(m, ticks=6, messages=5)


@pytest.fixture(params=["thread", "inline"])
def feed(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_aggregate_counts_with_and_without_a_stored_model(elm: ModuleType, feed: str) -> None:
    m = elm.metrics.Metrics()
    store = elm.MemoryStore()
    inits: list[int] = []

    def counted_init() -> tuple[int, Any]:
        inits.append(1)
        return 0, None

    def hydrate(ctx: Any, key: str, value: bytes) -> tuple[int, None]:
        return int(value), None

    def dehydrate(ctx: Any, key: str, total: int) -> bytes:
        return str(total).encode()

    for expected in (3, 6):
        with elm.Buffer() as buf, buf.new_consumer() as consumer:
            wrapped = m.wrap(counted_init, adder(), lambda total: None, buf, consumer)
            total = elm.aggregate(
                *wrapped, lambda ctx: ([1, 2], False), store, hydrate, dehydrate, "k", feed=feed
            )
        assert total == expected
    assert inits == [1]  # the second run starts from the stored model: no init
    # Counts add up over both runs; each has a first tick, seen through its view.
    assert_counts(m, ticks=6, messages=4)
    assert store.load(None, "k") == b"6"


def test_one_metrics_for_several_loops_on_threads(elm: ModuleType) -> None:
    m = elm.metrics.Metrics()
    results: list[int] = []

    def one() -> None:
        with elm.Buffer() as buf, buf.new_consumer() as consumer:
            wrapped = m.wrap(init, adder(), lambda total: None, buf, consumer)
            results.append(elm.batch(*wrapped, lambda ctx: (list(range(50)), False)))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SAFETY)
    assert results == [1225] * 4
    assert_counts(m, ticks=4 * 51, messages=4 * 50)


# --------------------------------------------------------------------------- failures


def boom() -> None:
    raise KeyError("boom")


def test_a_failing_command_is_rolled_back_and_counted(elm: ModuleType) -> None:
    m = elm.metrics.Metrics()

    def update(message: int) -> Any:
        if message == 2:
            return lambda total: (total, [boom])
        return lambda total: (total + message, None)

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, 1, 2, 3)
        with pytest.raises(KeyError):
            elm.run(*m.wrap(init, update, lambda total: None, buf, consumer))
        assert buf.diff(consumer) == 2  # 2 is read again
    assert_counts(m, ticks=2, messages=2, rollbacks=1, errors=1)


def test_a_failing_command_in_batch(elm: ModuleType, feed: str) -> None:
    m = elm.metrics.Metrics()
    update = adder()

    def failing(message: int) -> Any:
        return (lambda total: (total, [boom])) if message == 5 else update(message)

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        wrapped = m.wrap(init, failing, lambda total: None, buf, consumer)
        with pytest.raises(KeyError):
            elm.batch(*wrapped, lambda ctx: ([1, 5, 2], False), feed=feed)
    assert_counts(m, ticks=2, messages=2, rollbacks=1, errors=1)


def test_a_failing_get_counts_an_error_and_rolls_nothing_back(elm: ModuleType) -> None:
    m = elm.metrics.Metrics()
    with elm.Buffer() as out, elm.Buffer() as source, source.new_consumer() as consumer:
        source.put(None, 1)
        source.close()  # get raises Closed: nothing was read
        with pytest.raises(elm.Closed):
            elm.run(*m.wrap(init, adder(), lambda total: None, out, consumer))
    assert_counts(m, ticks=1, messages=0, errors=1)


@pytest.mark.parametrize("where", ["init", "view", "command", "put"])
def test_a_failing_first_tick_is_counted(elm: ModuleType, where: str) -> None:
    m = elm.metrics.Metrics()

    def first() -> tuple[int, Any]:
        if where == "init":
            boom()
        return 0, [None, boom] if where == "command" else None

    def view(total: int) -> None:
        if where == "view":
            boom()

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, 1)
        if where == "put":
            buf.close()  # the first tick's put raises Closed
        with pytest.raises(elm.Closed if where == "put" else KeyError):
            elm.run(*m.wrap(first, adder(), view, buf, consumer))
    assert_counts(m, ticks=0, messages=0, errors=1)


def test_a_first_tick_command_from_a_generator_is_watched(elm: ModuleType) -> None:
    m = elm.metrics.Metrics()
    calls: list[str] = []

    def entries() -> Any:
        calls.append("iterated")  # lazily, after view, as the core does
        yield lambda: 1
        yield boom

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        view = calls.append
        with pytest.raises(KeyError):
            elm.run(*m.wrap(lambda: ("model", entries()), adder(), view, buf, consumer))
    assert calls == ["model", "iterated"]
    assert_counts(m, ticks=0, messages=0, errors=1)


def test_the_loop_carries_on_after_a_counted_failure(elm: ModuleType) -> None:
    """The same wrapped callbacks again, after a rollback: the message is
    delivered again and counted again (it reached update twice)."""
    m = elm.metrics.Metrics()
    fail = [True]

    def update(message: int) -> Any:
        if fail.pop():
            raise KeyError(message)
        return lambda total: (total + message, None)

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        wrapped = m.wrap(init, update, lambda total: None, buf, consumer)
        buf.put(None, 7)
        with pytest.raises(KeyError):
            elm.run(*wrapped)
        fail.append(False)
        assert elm.batch(*wrapped, lambda ctx: ([], False), feed="inline") == 7
    assert_counts(m, ticks=3, messages=2, rollbacks=1, errors=1)


# --------------------------------------------------------------------------- histogram


def test_histogram_buckets_hold_durations(elm: ModuleType) -> None:
    m = elm.metrics.Metrics(buckets=[0.01, 1000, float("inf")])
    gate = elm.Context()

    def view(total: int) -> None:
        if total == 1:
            gate.wait(0.02)  # this tick takes longer than 0.01 s (and far less than 1000)

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        wrapped = m.wrap(init, adder(), view, buf, consumer)
        elm.batch(*wrapped, lambda ctx: ([1], False), feed="inline")
    histogram = m.histogram
    assert histogram.bounds == (0.01, 1000.0)
    # the slow tick in the middle bucket; init's is most likely below, but need not be
    assert histogram.counts[1] >= 1 and histogram.counts[2] == 0
    assert histogram.count == 2 and histogram.sum >= 0.02


def test_snapshots_are_consistent_while_the_loop_runs(elm: ModuleType) -> None:
    m = elm.metrics.Metrics()
    seen: list[Any] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(m.snapshot())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with elm.Buffer() as buf, buf.new_consumer() as consumer:
            wrapped = m.wrap(init, adder(), lambda total: None, buf, consumer)
            elm.batch(*wrapped, lambda ctx: (list(range(2000)), False))
    finally:
        stop.set()
        reader.join(SAFETY)
    seen.append(m.snapshot())
    for earlier, later in zip(seen, seen[1:]):
        assert earlier.ticks <= later.ticks and earlier.messages <= later.messages
    for snap in seen:
        assert snap.histogram.count == snap.ticks == sum(snap.histogram.counts)
    assert seen[-1].ticks == 2001


# --------------------------------------------------------------------------- depth and lag


def test_depth_and_lag_seen_from_the_view(elm: ModuleType) -> None:
    m = elm.metrics.Metrics()
    ctx = elm.Context()
    seen: list[tuple[int | None, int | None]] = []

    def view(total: int) -> None:
        seen.append((m.depth, m.lag))
        if total == 6:
            ctx.cancel()

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        keep(buf)
        buf.put(None, 1, 2, 3)
        assert (m.depth, m.lag) == (None, None)  # no buffer known yet
        wrapped = m.wrap(init, adder({2: [0]}), view, buf, consumer)
        assert (m.depth, m.lag) == (3, 3)
        with pytest.raises(elm.Canceled):
            elm.run(*wrapped, ctx=ctx)
        # A view runs before its tick's commands: 2's put its 0 behind the 3
        # after the view. The tick of 3 was rolled back: 3 and 0 are unread.
        assert seen == [(3, 3), (3, 2), (3, 1), (4, 1)]
        assert m.snapshot()[-2:] == (4, 2)


def test_depth_and_lag_of_a_buffer_given(elm: ModuleType) -> None:
    """The producer is another queue: ``buffer=`` names the consumer's."""
    m = elm.metrics.Metrics()
    with elm.Buffer() as out, elm.Buffer() as source, source.new_consumer() as consumer:
        keep(source)
        source.put(None, 1, 2, 3, 4)
        m.wrap(init, adder(), print, out, consumer)
        assert m.depth is None  # out is no buffer of this consumer's
        ctx = elm.Context()
        seen: list[tuple[int | None, int | None]] = []

        def view(total: int) -> None:
            seen.append((m.depth, m.lag))
            if total == 10:
                ctx.cancel()  # in the tick of 4, which is rolled back

        wrapped = m.wrap(init, adder(), view, out, consumer, buffer=source)
        assert (m.depth, m.lag) == (4, 4)
        with pytest.raises(elm.Canceled):
            elm.run(*wrapped, ctx=ctx)
        assert seen == [(4, 4), (4, 3), (4, 2), (4, 1), (4, 0)]
        assert (m.depth, m.lag) == (4, 1)
        assert m.snapshot().depth == 4


# --------------------------------------------------------------------------- Prometheus


def test_register_exports_the_exact_values(elm: ModuleType) -> None:
    prometheus_client = _prometheus()
    m = elm.metrics.Metrics(buckets=(0.5, 1000))
    registry = prometheus_client.CollectorRegistry()
    m.register(registry)
    ctx = elm.Context()

    def view(total: int) -> None:
        if total == 3:
            ctx.cancel()  # in the tick of 2, which is rolled back

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        keep(buf)
        buf.put(None, 1, 2, 5)
        with pytest.raises(elm.Canceled):
            elm.run(*m.wrap(init, adder(), view, buf, consumer), ctx=ctx)
        text = prometheus_client.generate_latest(registry).decode()
    lines = set(text.splitlines())
    below = m.histogram.counts[0]
    expected = {
        "elmstate_ticks_total 2.0",
        "elmstate_messages_total 2.0",
        "elmstate_rollbacks_total 1.0",
        "elmstate_errors_total 0.0",
        f'elmstate_tick_duration_seconds_bucket{{le="0.5"}} {float(below)}',
        'elmstate_tick_duration_seconds_bucket{le="1000.0"} 2.0',
        'elmstate_tick_duration_seconds_bucket{le="+Inf"} 2.0',
        "elmstate_tick_duration_seconds_count 2.0",
        f"elmstate_tick_duration_seconds_sum {m.histogram.sum!r}",
        "elmstate_buffer_depth 3.0",
        "elmstate_consumer_lag 2.0",  # 2, rolled back, and 5
        "# TYPE elmstate_tick_duration_seconds histogram",
        "# TYPE elmstate_ticks_total counter",
        "# TYPE elmstate_consumer_lag gauge",
    }
    assert expected <= lines, sorted(expected - lines)


def _prometheus() -> Any:
    import prometheus_client  # the test extra installs it: these tests must not skip

    return prometheus_client


def test_register_with_prefix_and_labels_and_no_buffer(elm: ModuleType) -> None:
    prometheus_client = _prometheus()
    m = elm.metrics.Metrics()
    registry = prometheus_client.CollectorRegistry()
    collector = m.register(registry, prefix="orders", labels={"program": "orders", "zone": "b"})
    ctx = elm.Context()
    with elm.Buffer() as out, elm.Buffer() as source, source.new_consumer() as consumer:
        source.put(None, 1, 2)
        wrapped = m.wrap(init, adder(), lambda total: total == 3 and ctx.cancel(), out, consumer)
        with pytest.raises(elm.Canceled):
            elm.run(*wrapped, ctx=ctx)
    text = prometheus_client.generate_latest(registry).decode()
    assert 'orders_ticks_total{program="orders",zone="b"} 2.0' in text.splitlines()
    assert 'orders_messages_total{program="orders",zone="b"} 2.0' in text.splitlines()
    assert 'orders_rollbacks_total{program="orders",zone="b"} 1.0' in text.splitlines()
    assert "elmstate_" not in text
    assert "depth" not in text and "lag" not in text  # no buffer of the consumer's
    # A registry refuses a second collector of the same names; another prefix is fine.
    with pytest.raises(ValueError):
        m.register(registry, prefix="orders")
    elm.metrics.Metrics().register(registry, prefix="other")
    registry.unregister(collector)
    assert "orders_" not in prometheus_client.generate_latest(registry).decode()


def test_register_defaults_to_the_global_registry(elm: ModuleType) -> None:
    prometheus_client = _prometheus()
    m = elm.metrics.Metrics()
    collector = m.register(prefix="elmstate_test_default")
    try:
        value = prometheus_client.REGISTRY.get_sample_value("elmstate_test_default_ticks_total")
        assert value == 0.0
    finally:
        prometheus_client.REGISTRY.unregister(collector)


def test_import_does_not_import_prometheus_client(elm: ModuleType) -> None:
    import subprocess
    import sys

    from _helpers import subprocess_env

    code = (
        "import sys, elmstate.metrics\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
        "print(elmstate.compiled)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(elm), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(elm.compiled)


def test_register_without_prometheus_client_names_the_extra(
    elm: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)  # not installed
    with pytest.raises(ImportError, match=r"elmstate\[prometheus\]"):
        elm.metrics.Metrics().register()


# --------------------------------------------------------------------------- bad arguments


def test_bad_arguments(elm: ModuleType) -> None:
    Metrics = elm.metrics.Metrics
    for buckets, error in [
        ("0.1", TypeError),
        (0.1, TypeError),
        ([True], TypeError),
        (["0.1"], TypeError),
        ([], ValueError),
        ([float("inf")], ValueError),
        ([0.2, 0.1], ValueError),
        ([0.1, 0.1], ValueError),
        ([0, 1], ValueError),
        ([-1, 1], ValueError),
        ([float("nan")], ValueError),
    ]:
        with pytest.raises(error, match="buckets"):
            Metrics(buckets=buckets)
    m = Metrics()
    with elm.Buffer() as buf, buf.new_consumer() as consumer, elm.Buffer() as other:
        args: list[Any] = [init, adder(), print, buf, consumer]
        for index, name in enumerate(["init", "update", "view", "producer", "consumer"]):
            bad = list(args)
            bad[index] = object()
            with pytest.raises(TypeError, match=name):
                m.wrap(*bad)
        with pytest.raises(TypeError, match="buffer"):
            m.wrap(*args, buffer=object())
        with pytest.raises(ValueError, match="consumer must be .* of buffer"):
            m.wrap(*args, buffer=other)
        with pytest.raises(ValueError, match="buffer"):
            m.wrap(init, adder(), print, buf, _Reader(consumer), buffer=buf)
    _prometheus()
    for kwargs, error, name in [
        ({"prefix": 1}, TypeError, "prefix"),
        ({"prefix": "1x"}, ValueError, "prefix"),
        ({"prefix": ""}, ValueError, "prefix"),
        ({"labels": ["a"]}, TypeError, "labels"),
        ({"labels": {"a": 1}}, TypeError, "labels"),
        ({"labels": {"le": "x"}}, ValueError, "labels"),
        ({"labels": {"__a": "x"}}, ValueError, "labels"),
        ({"labels": {"a-b": "x"}}, ValueError, "labels"),
    ]:
        with pytest.raises(error, match=name):
            m.register(_prometheus().CollectorRegistry(), **kwargs)
    with pytest.raises(TypeError, match="registry"):
        m.register(object())


class _Reader:
    """A consumer of the user's own, around a BufferConsumer."""

    def __init__(self, consumer: Any) -> None:
        self.get, self.commit, self.rollback = consumer.get, consumer.commit, consumer.rollback


def test_wrapped_callbacks_forward_results(elm: ModuleType) -> None:
    m = elm.metrics.Metrics()
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        w_init, w_update, w_view, w_producer, w_consumer = m.wrap(
            lambda: ("model", None), lambda msg: None, lambda model: "shown", buf, consumer
        )
        w_producer.put(None, "a")
        assert w_consumer.get(None) == "a"
        w_consumer.commit()
        assert w_init() == ("model", None)
        assert w_update("a") is None
        assert w_view("model") == "shown"
        assert "Metrics ticks=0" in repr(m)
