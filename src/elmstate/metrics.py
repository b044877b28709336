"""Counters, a tick-duration histogram and queue gauges for a loop (docs/metrics.md).

``Metrics.wrap`` returns wrapped callbacks to pass to ``run``, ``batch`` or
``aggregate``: nothing in the core changes, and a loop that is not wrapped pays
nothing. ``Metrics.register`` exports the figures to ``prometheus_client``,
which this module imports only there (the extra ``prometheus``).
"""

from __future__ import annotations

import bisect
import math
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, cast

from . import _validate as check
from ._backend import core
from ._errors import Canceled
from .typing import Command, Consumer, Init, Model, Msg, Producer, Update, View

__all__ = ["DEFAULT_BUCKETS", "Histogram", "Metrics", "Snapshot"]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the tick-duration buckets: 10 µs to 10 s, 1-2.5-5 steps.

A tick of the loop itself costs about a microsecond, so the low buckets tell a
program's own work apart; ``+Inf`` is always added above the last bound."""


@dataclass(frozen=True)
class Histogram:
    """Tick durations in seconds, as data.

    ``counts[i]`` is the number of ticks that took more than ``bounds[i - 1]``
    and at most ``bounds[i]`` seconds; the last entry (``len(bounds)`` of them
    before it) counts the ticks longer than the last bound. Not cumulative:
    Prometheus's ``le`` buckets are running sums of these.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int


class Snapshot(NamedTuple):
    """All the figures of a :class:`Metrics`, read at one moment.

    ``histogram.count == ticks`` always holds within one snapshot. ``depth``
    and ``lag`` are ``None`` when no buffer is known (see :meth:`Metrics.wrap`).
    """

    ticks: int
    messages: int
    rollbacks: int
    errors: int
    histogram: Histogram
    depth: int | None
    lag: int | None


# Where the loop on this thread is in its tick, as the wrapped callbacks see it.
_IDLE = 0  # between ticks, or a tick whose get has not returned yet
_INIT = 1  # the first tick: init was called
_FIRST = 2  # the first tick: view was called; the put that follows ends it
_GOT = 3  # a later tick: get returned a message (or a batch marker)
_VIEWED = 4  # a later tick: view was called; the commit that follows ends it


class _Tick(threading.local):
    """Per thread: one Metrics may count several loops, each on its own thread,
    and a batch's feeder thread puts through the same wrapped producer."""

    phase = _IDLE
    start = 0.0  # perf_counter() when the tick's work began
    failed = False  # this tick's error was counted already


class Metrics:
    """Counts what the loops it wraps do; thread-safe to read while they run.

    ``buckets`` are the upper bounds, in seconds, of the tick-duration
    histogram: finite, positive and increasing (a trailing ``inf`` is allowed
    and implied anyway). One ``Metrics`` may wrap several loops; their counts
    add up.
    """

    def __init__(self, *, buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        self._bounds = _buckets_arg(buckets)
        # The loop updates a tick's figures together under this lock, so that a
        # snapshot taken under it is consistent (ticks == histogram count).
        self._lock = threading.Lock()
        self._ticks = 0
        self._messages = 0
        self._rollbacks = 0
        self._errors = 0
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._buffer: Any = None  # a core Buffer, with _consumer one of its consumers
        self._consumer: Any = None
        self._tick = _Tick()

    # ------------------------------------------------------------------ wrap

    def wrap(
        self,
        init: Init[Model, Msg],
        update: Update[Model, Msg],
        view: View[Model],
        producer: Producer[Msg],
        consumer: Consumer[Msg],
        *,
        buffer: Any = None,
    ) -> tuple[Init[Model, Msg], Update[Model, Msg], View[Model], Producer[Msg], Consumer[Msg]]:
        """Return ``(init, update, view, producer, consumer)`` wrapped to be counted.

        Pass them to :func:`elmstate.run`, :func:`~elmstate.batch` or
        :func:`~elmstate.aggregate` in place of the originals.

        Depth and lag are read from ``buffer`` (an :class:`elmstate.Buffer`)
        and ``consumer``, which must then be a consumer of it. Without
        ``buffer``, the producer is used when it is a ``Buffer`` and the
        consumer is one of its consumers; otherwise there are no depth and lag.
        A later ``wrap`` that finds a buffer replaces the earlier one's.
        """
        check.program_args(init, update, view, producer, consumer)
        if buffer is not None:
            if type(buffer) is not core.Buffer:
                raise TypeError(
                    f"buffer must be an elmstate.Buffer or None, got {type(buffer).__name__}"
                )
            if not _reads(buffer, consumer):
                raise ValueError("consumer must be an elmstate.BufferConsumer of buffer")
        elif isinstance(producer, core.Buffer) and _reads(producer, consumer):
            buffer = producer
        if buffer is not None:
            with self._lock:
                self._buffer, self._consumer = buffer, consumer
        return (
            _Init(self, init),
            _Update(self, update),
            _View(self, view),
            _Producer(self, producer),
            _Consumer(self, consumer),
        )

    # ------------------------------------------------------------------ figures

    @property
    def ticks(self) -> int:
        """Ticks completed: the first (init's) and every later one that committed."""
        return self._ticks

    @property
    def messages(self) -> int:
        """Messages that reached ``update`` (one read again after a rollback counts again)."""
        return self._messages

    @property
    def rollbacks(self) -> int:
        """Ticks rolled back after their ``get`` had returned a message."""
        return self._rollbacks

    @property
    def errors(self) -> int:
        """Ticks that failed with an ``Exception`` other than :class:`elmstate.Canceled`."""
        return self._errors

    @property
    def histogram(self) -> Histogram:
        """The durations of the completed ticks."""
        with self._lock:
            return self._histogram()

    @property
    def depth(self) -> int | None:
        """``len(buffer)`` now: the messages the buffer holds; ``None`` without a buffer."""
        buffer = self._buffer
        return None if buffer is None else len(buffer)

    @property
    def lag(self) -> int | None:
        """``buffer.diff(consumer)`` now: messages not yet read; ``None`` without a buffer."""
        with self._lock:
            buffer, consumer = self._buffer, self._consumer
        return None if buffer is None else int(buffer.diff(consumer))

    def snapshot(self) -> Snapshot:
        """Every figure at once; the counters and histogram from one moment."""
        with self._lock:
            figures = (self._ticks, self._messages, self._rollbacks, self._errors)
            histogram = self._histogram()
            buffer, consumer = self._buffer, self._consumer
        # Read outside our lock: the buffer takes its own.
        depth = lag = None
        if buffer is not None:
            depth, lag = len(buffer), int(buffer.diff(consumer))
        return Snapshot(*figures, histogram, depth, lag)

    def register(
        self,
        registry: Any = None,
        *,
        prefix: str = "elmstate",
        labels: Mapping[str, str] | None = None,
    ) -> Any:
        """Export the figures to ``prometheus_client``; returns the collector.

        ``registry`` defaults to ``prometheus_client.REGISTRY``. Metric names
        start with ``prefix`` and an underscore; ``labels`` are constant labels
        added to every sample (to tell loops apart, give each ``Metrics`` its
        own ``prefix``: a registry refuses two collectors of the same names).
        Needs the extra ``prometheus``: ``pip install "elmstate[prometheus]"``.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if not _METRIC_NAME.fullmatch(prefix):
            raise ValueError(f"prefix must be a Prometheus metric name, got {prefix!r:.100}")
        pairs = _labels_arg(labels)
        if registry is not None:
            check.has_methods("registry", registry, "register")
        try:
            import prometheus_client
        except ImportError as exc:
            raise ImportError(
                "Metrics.register needs prometheus_client: "
                'pip install "elmstate[prometheus]" (the extra prometheus)'
            ) from exc
        collector = _Collector(self, prefix, pairs)
        (prometheus_client.REGISTRY if registry is None else registry).register(collector)
        return collector

    def __repr__(self) -> str:
        return (
            f"<elmstate.metrics.Metrics ticks={self._ticks} messages={self._messages}"
            f" rollbacks={self._rollbacks} errors={self._errors}>"
        )

    # ------------------------------------------------------------------ counting

    def _histogram(self) -> Histogram:  # under the lock
        return Histogram(self._bounds, tuple(self._counts), self._sum, self._ticks)

    def _message(self) -> None:
        with self._lock:
            self._messages += 1

    def _done(self, tick: _Tick) -> None:
        """The tick on this thread completed."""
        seconds = time.perf_counter() - tick.start
        tick.phase = _IDLE
        # bisect_left: a duration equal to a bound belongs in that bound's bucket (le)
        bucket = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            self._ticks += 1
            self._counts[bucket] += 1
            self._sum += seconds

    def _failed(self, tick: _Tick, exc: BaseException | None, rolled_back: bool) -> None:
        """The tick on this thread failed with ``exc``; counted once per tick."""
        tick.phase = _IDLE
        error = not tick.failed and isinstance(exc, Exception) and not isinstance(exc, Canceled)
        tick.failed = True
        if error or rolled_back:
            with self._lock:
                self._errors += error
                self._rollbacks += rolled_back


# --------------------------------------------------------------------------- wrappers
# Small classes rather than closures: a repr that names what they wrap, and one
# attribute lookup per call.


class _Init:
    __slots__ = ("metrics", "init")

    def __init__(self, metrics: Metrics, init: Callable[[], Any]) -> None:
        self.metrics = metrics
        self.init = init

    def __call__(self) -> Any:
        metrics = self.metrics
        tick = metrics._tick
        tick.phase, tick.failed, tick.start = _INIT, False, time.perf_counter()
        try:
            result = self.init()
        except BaseException as exc:
            metrics._failed(tick, exc, False)
            raise
        if isinstance(result, (tuple, list)) and len(result) == 2:
            # A first-tick failure rolls nothing back: its commands are watched
            # so that their errors are counted. The core checks the rest.
            return result[0], _watch(metrics, result[1])
        return result

    def __repr__(self) -> str:
        return f"<elmstate.metrics init {self.init!r:.80}>"


class _Update:
    __slots__ = ("metrics", "update")

    def __init__(self, metrics: Metrics, update: Callable[[Any], Any]) -> None:
        self.metrics = metrics
        self.update = update

    def __call__(self, message: Any) -> Any:
        self.metrics._message()  # batch markers never get here: they are no messages
        return self.update(message)

    def __repr__(self) -> str:
        return f"<elmstate.metrics update {self.update!r:.80}>"


class _View:
    __slots__ = ("metrics", "view")

    def __init__(self, metrics: Metrics, view: Callable[[Any], object]) -> None:
        self.metrics = metrics
        self.view = view

    def __call__(self, model: Any) -> object:
        metrics = self.metrics
        tick = metrics._tick
        if tick.phase == _GOT:
            tick.phase = _VIEWED  # a failure from here on is rolled back: see rollback
            return self.view(model)
        # Every later tick's get returns before its view: this is a first tick,
        # whose init may not be ours to see (aggregate's loaded model replaces it).
        if tick.phase != _INIT:
            tick.failed, tick.start = False, time.perf_counter()
        tick.phase = _FIRST
        try:
            return self.view(model)
        except BaseException as exc:
            metrics._failed(tick, exc, False)
            raise

    def __repr__(self) -> str:
        return f"<elmstate.metrics view {self.view!r:.80}>"


class _Producer:
    __slots__ = ("metrics", "producer", "_put")

    def __init__(self, metrics: Metrics, producer: Producer[Any]) -> None:
        self.metrics = metrics
        self.producer = producer
        self._put = producer.put

    def put(self, ctx: Any, *values: Any) -> object:
        tick = self.metrics._tick
        if tick.phase != _FIRST:  # a later tick's, a marker's, or the feeder thread's
            return self._put(ctx, *values)
        try:
            result = self._put(ctx, *values)
        except BaseException as exc:
            self.metrics._failed(tick, exc, False)
            raise
        self.metrics._done(tick)  # the first tick ends with its put
        return result

    def __repr__(self) -> str:
        return f"<elmstate.metrics producer {self.producer!r:.80}>"


class _Consumer:
    __slots__ = ("metrics", "consumer", "_get", "_commit", "_rollback")

    def __init__(self, metrics: Metrics, consumer: Consumer[Any]) -> None:
        self.metrics = metrics
        self.consumer = consumer
        self._get = consumer.get
        self._commit = consumer.commit
        self._rollback = consumer.rollback

    def get(self, ctx: Any) -> Any:
        message = self._get(ctx)
        # Not timed while it waits: a tick's work begins when its message is in hand.
        # A batch's marker starts one too, which its commit ends uncounted.
        tick = self.metrics._tick
        tick.phase, tick.failed, tick.start = _GOT, False, time.perf_counter()
        return message

    def commit(self) -> object:
        result = self._commit()
        tick = self.metrics._tick
        if tick.phase == _VIEWED:
            self.metrics._done(tick)
        else:
            tick.phase = _IDLE  # a marker committed (and skipped) by batch or the loop
        return result

    def rollback(self) -> object:
        tick = self.metrics._tick
        read = tick.phase in (_GOT, _VIEWED)
        # The loop rolls back from inside its handler of the tick's exception,
        # in both cores: that exception is the one being handled here.
        exc = sys.exc_info()[1]
        try:
            return self._rollback()
        finally:
            self.metrics._failed(tick, exc, read)

    def __repr__(self) -> str:
        return f"<elmstate.metrics consumer {self.consumer!r:.80}>"


class _Watched:
    """A command entry of init's: its error fails the first tick, which has no rollback."""

    __slots__ = ("metrics", "entry")

    def __init__(self, metrics: Metrics, entry: Callable[[], Any]) -> None:
        self.metrics = metrics
        self.entry = entry

    def __call__(self) -> Any:
        try:
            return self.entry()
        except BaseException as exc:
            tick = self.metrics._tick
            if tick.phase == _FIRST:
                self.metrics._failed(tick, exc, False)
            raise


def _watch(metrics: Metrics, command: Command[Any]) -> Command[Any]:
    if isinstance(command, (tuple, list)):
        return [_Watched(metrics, entry) if callable(entry) else entry for entry in command]
    if command is None or isinstance(command, check.TEXT) or not hasattr(command, "__iter__"):
        return command  # nothing to run, or the core raises its own TypeError
    return _watched(metrics, command)


def _watched(metrics: Metrics, command: Iterable[Any]) -> Iterator[Any]:
    # Lazily: the core iterates a command after view, and so does this.
    for entry in command:
        yield _Watched(metrics, entry) if callable(entry) else entry


def _reads(buffer: Any, consumer: Any) -> bool:
    """Whether ``consumer`` is a consumer of ``buffer`` (both of this core)."""
    if type(consumer) is not core.BufferConsumer:
        return False
    try:
        buffer.diff(consumer)
    except ValueError:  # another buffer's consumer
        return False
    return True


def _buckets_arg(buckets: Any) -> tuple[float, ...]:
    if isinstance(buckets, check.TEXT) or not isinstance(buckets, Iterable):
        raise TypeError(
            f"buckets must be an iterable of numbers of seconds, got {type(buckets).__name__}"
        )
    bounds: list[float] = []
    for bound in buckets:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise TypeError(f"buckets must hold numbers of seconds, got {type(bound).__name__}")
        bounds.append(float(bound))
    if bounds and bounds[-1] == math.inf:
        bounds.pop()  # +Inf is always there
    if not bounds:
        raise ValueError("buckets must hold at least one finite bound")
    for low, high in zip([0.0, *bounds], bounds):
        if not (math.isfinite(high) and high > low):
            raise ValueError(f"buckets must be finite, positive and increasing, got {bounds!r}")
    return tuple(bounds)


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _labels_arg(labels: Any) -> tuple[tuple[str, str], ...]:
    if labels is None:
        return ()
    if not isinstance(labels, Mapping):
        raise TypeError(f"labels must be a mapping of str to str, got {type(labels).__name__}")
    pairs = []
    for name, value in labels.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"labels must map str to str, got {type(name).__name__}: {type(value).__name__}"
            )
        # "le" is the histogram's own label; "__" names are Prometheus's.
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__") or name == "le":
            raise ValueError(f"labels: {name!r:.100} is not a label name one may use")
        pairs.append((name, value))
    return tuple(pairs)


# --------------------------------------------------------------------------- Prometheus


class _Collector:
    """A ``prometheus_client`` collector: the figures of one scrape come from one snapshot."""

    def __init__(self, metrics: Metrics, prefix: str, labels: tuple[tuple[str, str], ...]) -> None:
        from prometheus_client import core as families
        from prometheus_client import utils

        # Its own spelling of a bound, as its Histogram writes them ("1e-05", "0.5")
        go = cast("Callable[[float], str]", utils.floatToGoString)

        self.metrics = metrics
        self.prefix = prefix
        self.names = [name for name, _ in labels]
        self.values = [value for _, value in labels]
        self._families = families
        self._le = [go(bound) for bound in metrics._bounds] + ["+Inf"]

    def describe(self) -> Iterator[Any]:
        """The metric families by name, for the registry's check of duplicate names."""
        return self._collect(None)

    def collect(self) -> Iterator[Any]:
        """The metric families with their values now."""
        return self._collect(self.metrics.snapshot())

    def _collect(self, snap: Snapshot | None) -> Iterator[Any]:
        f, p, names, values = self._families, self.prefix, self.names, self.values
        counters: Sequence[tuple[str, str, int]] = (
            ("ticks", "Ticks completed (the first, init's, included).", 0),
            ("messages", "Messages that reached update.", 1),
            ("rollbacks", "Ticks rolled back after reading a message.", 2),
            ("errors", "Ticks failed by an exception other than the end of the context.", 3),
        )
        for name, text, index in counters:
            counter = f.CounterMetricFamily(f"{p}_{name}", text, labels=names)
            if snap is not None:
                counter.add_metric(values, snap[index])
            yield counter
        histogram = f.HistogramMetricFamily(
            f"{p}_tick_duration_seconds",
            "Tick durations: from get returning its message (init, for the first) "
            "to the commit (the first tick's put).",
            labels=names,
        )
        if snap is not None:
            running = 0
            buckets = []
            for le, count in zip(self._le, snap.histogram.counts):
                running += count
                buckets.append((le, float(running)))
            histogram.add_metric(values, buckets, snap.histogram.sum)
        yield histogram
        if snap is not None and snap.depth is None:
            return  # no buffer: no gauges
        gauges = (
            ("buffer_depth", "Messages the buffer holds.", 5),
            ("consumer_lag", "Messages the consumer has not read yet.", 6),
        )
        for name, text, index in gauges:
            gauge = f.GaugeMetricFamily(f"{p}_{name}", text, labels=names)
            if snap is not None:
                gauge.add_metric(values, snap[index])
            yield gauge
