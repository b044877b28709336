"""elmstate against a hand-written loop and the queues a user would otherwise pick.

    pip install '.[bench]' && python bench/compare.py

Everything runs in this one process, round-robin: each round times every
contender once, in the same order, so slow drift on a shared machine touches
them all alike. A contender's ratio is the median, over rounds, of its time
divided by the floor's time in the same round.

The workload (the issue's): N int messages; ``update`` picks a transform that
adds 1 to the model; ``view`` stores the model; no commands. The last message is
0, whose transform raises ``Stop``: that is how the loops that never return
(``run``, the queue loops) are ended, and the floor pays the same test. The
"() command" rows run the same workload with transforms that return ``()``
instead of ``None`` as the command (``workload.update_empty``): what an empty
command costs the loop. Their floor is the same hand-written loop.

The ``aio.run`` rows await ``elmstate.aio.run`` over an ``aio.Buffer`` filled
before the clock starts, in an event loop made (untimed) for the call: asyncio's
default loop, or uvloop's (informative; left out where uvloop is not
installed); the clock is around the ``await`` only. The pure row imports a
second generation of ``elmstate.aio`` bound to the pure core (aio_cores.py).
The "asyncio.Queue loop" peer is the same loop written by hand over an
``asyncio.Queue``, in asyncio's default loop.

What the clock sees of the Buffer's cleaner: it drops committed messages in a
pass on another thread (elmstate's timer or worker thread), at most once per
cooldown (0.01 s); that thread waits up to ``sys.getswitchinterval()`` (0.005 s)
for the GIL, so a pass comes about every 15 ms, and the loop waits for it. A
run over 10^6 messages sees about six passes; the messages committed after the
last one are released after the clock stops, and a run shorter than ~15 ms
(N = 10^4, as in test_bench.py and the first ``--scaling`` row) sees none: such
figures leave the cleaner's cost out. The floor releases nothing either (its list
outlives the clock); releasing its messages on the clock measured +0.5% of the
floor's time. bench/callgrind.py counts instructions per message instead.

Prints a table (ns per message: min / median / max over rounds, messages per
second at the median, ratio to the floor), then writes a bar chart (PNG) when
matplotlib is installed. ``--scaling`` adds the per-message cost of compiled
``run`` at N = 10^4 .. 10^7 and resident memory while 10^7 messages stream
through it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import aggregates
import aio_cores
import workload
from aggregates import AGGREGATE_BATCH, AggregateGroup
from workload import (
    Stop,
    init,
    last,
    messages,
    update,
    update_empty,
    view,
)

import elmstate
from elmstate import _core_py as pure

compiled: ModuleType | None  # by name: the extension has no stub for mypy to read
try:
    compiled = importlib.import_module("elmstate._core")
except ImportError:  # a pure build: the compiled contenders are left out
    compiled = None


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    try:
        fn()
    except Stop:
        pass
    return time.perf_counter() - start


# ------------------------------------------------------------------ the contenders
# Each takes the message list, sets up untimed, and returns the seconds it took
# to process every message. The model must end at N - 1: checked after each run.


def floor(msgs: list[int]) -> float:
    return timed(lambda: workload.floor(msgs))


def core_run(core: Any, update: Callable[[int], Any] = update) -> Callable[[list[int]], float]:
    def contender(msgs: list[int]) -> float:
        with core.Buffer() as buf, buf.new_consumer() as consumer:
            buf.put(None, *msgs)
            return timed(lambda: core.run(init, update, view, buf, consumer))

    return contender


def core_run_producer(core: Any) -> Callable[[list[int]], float]:
    """run while another thread puts one message per call, concurrently."""

    def contender(msgs: list[int]) -> float:
        go = threading.Event()
        with core.Buffer() as buf, buf.new_consumer() as consumer:

            def produce() -> None:
                put = buf.put
                go.wait()
                for m in msgs:
                    put(None, m)

            def loop() -> None:
                go.set()
                core.run(init, update, view, buf, consumer)

            producer = threading.Thread(target=produce)
            producer.start()
            try:
                return timed(loop)
            finally:
                producer.join()

    return contender


def core_batch(
    core: Any, chunk: int = 1000, update: Callable[[int], Any] = update
) -> Callable[[list[int]], float]:
    def contender(msgs: list[int]) -> float:
        body = msgs[:-1]  # batch ends by itself: no stop message
        pages = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        final = len(pages) - 1
        index = [0]

        def fetcher(ctx: Any) -> tuple[list[int], bool]:
            i = index[0]
            index[0] = i + 1
            return pages[i], i < final

        with core.Buffer() as buf, buf.new_consumer() as consumer:
            return timed(lambda: core.batch(init, update, view, buf, consumer, fetcher))

    return contender


def core_round_trip(core: Any) -> Callable[[list[int]], float]:
    """The Buffer alone: put one message, get it back, commit; no loop, no callbacks."""

    def contender(msgs: list[int]) -> float:
        reached: list[Any] = [None]
        with core.Buffer() as buf, buf.new_consumer() as consumer:
            put, get, commit = buf.put, consumer.get, consumer.commit

            def loop() -> None:
                m = None
                for m in msgs:
                    put(None, m)
                    if get() is not m:
                        raise RuntimeError("the Buffer returned another message")
                    commit()
                reached[0] = m

            seconds = timed(loop)
        if reached[0] is not msgs[-1]:
            raise RuntimeError("the round trip did not reach the last message")
        return seconds

    return contender


def simple_queue(msgs: list[int]) -> float:
    q: queue.SimpleQueue[int] = queue.SimpleQueue()
    for m in msgs:
        q.put(m)

    def loop() -> None:
        get = q.get
        model, _ = init()
        view(model)
        while True:
            t = update(get())
            model, cmd = t(model)
            view(model)

    return timed(loop)


def asyncio_queue(msgs: list[int]) -> float:
    async def main() -> float:
        q: asyncio.Queue[int] = asyncio.Queue()
        for m in msgs:
            q.put_nowait(m)

        async def loop() -> None:
            model, _ = init()
            view(model)
            while True:
                t = update(await q.get())
                model, cmd = t(model)
                view(model)

        start = time.perf_counter()
        try:
            await loop()
        except Stop:
            pass
        return time.perf_counter() - start

    return asyncio.run(main())


def aio_run(
    aio: ModuleType,
    update: Callable[[int], Any] = update,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> Callable[[list[int]], float]:
    """``await aio.run(...)`` over a pre-filled ``aio.Buffer``, in an event loop made
    untimed (``loop_factory``'s, else asyncio's default); the clock is around the
    await only."""

    def contender(msgs: list[int]) -> float:
        async def main() -> float:
            with aio.Buffer() as buf, buf.new_consumer() as consumer:
                buf.put(None, *msgs)
                start = time.perf_counter()
                try:
                    await aio.run(init, update, view, buf, consumer)
                except Stop:
                    pass
                return time.perf_counter() - start

        loop = (loop_factory or asyncio.new_event_loop)()
        try:
            return loop.run_until_complete(main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    return contender


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop``, or None where uvloop is not installed."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def pydux_store(msgs: list[int]) -> float:
    import pydux

    actions = [{"type": "msg", "value": m} for m in msgs]  # pydux actions are dicts

    def reducer(state: Any, action: dict[str, Any]) -> Any:
        if action["type"] != "msg":
            return state if state is not None else init()[0]
        model, _ = update(action["value"])(state)
        return model

    store = pydux.create_store(reducer)
    get_state = store.get_state
    store.subscribe(lambda: view(get_state()))
    dispatch = store.dispatch

    def loop() -> None:
        for action in actions:
            dispatch(action)

    return timed(loop)


def reactivex_subject(msgs: list[int]) -> float:
    from reactivex import operators as ops
    from reactivex.subject import Subject

    def step(model: int, message: int) -> int:
        return update(message)(model)[0]

    subject: Subject[int] = Subject()
    failure: list[BaseException] = []
    subject.pipe(ops.scan(step, seed=init()[0])).subscribe(view, failure.append)
    on_next = subject.on_next

    def loop() -> None:
        for m in msgs:
            on_next(m)

    seconds = timed(loop)
    if not failure or not isinstance(failure[0], Stop):
        raise RuntimeError(f"reactivex did not stop as expected: {failure!r}")
    return seconds


# ------------------------------------------------------------------------ scaling

SCALING_NS = (10_000, 100_000, 1_000_000, 10_000_000)
STREAM_N = 10_000_000
STREAM_CHUNK = 1_000
STREAM_HIGH_WATER = 100_000  # the producer waits while the buffer holds more


def rss_mb() -> float:
    """Resident memory of this process (Linux: /proc; elsewhere, peak RSS)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scaling(compiled: ModuleType, rounds: int) -> str:
    """Per-message cost of compiled run over a pre-filled Buffer, N = 10^4 .. 10^7.

    Each run is a whole call (a fresh Buffer, Context and first tick), repeated
    at small N so that a sample spans 10^6 messages. The floor runs at each N
    too, in the same round: at 10^7 the messages alone (ints, list, ring)
    outgrow the caches, for every loop alike.
    """
    run = core_run(compiled)
    times: dict[int, list[float]] = {n: [] for n in SCALING_NS}
    floors: dict[int, list[float]] = {n: [] for n in SCALING_NS}
    for n in SCALING_NS:
        msgs = messages(n - 1)
        repeat = max(1, 1_000_000 // n)  # every sample spans at least 10^6 messages
        for _ in range(rounds):
            gc.collect()
            floors[n].append(sum(floor(msgs) for _ in range(repeat)) / (repeat * (n - 1)))
            gc.collect()
            times[n].append(sum(run(msgs) for _ in range(repeat)) / (repeat * (n - 1)))
            if last[0] != n - 1:
                raise RuntimeError(f"scaling N={n}: the last view saw {last[0]!r}")
        del msgs
    base = statistics.median(times[1_000_000]) * 1e9
    rows = [
        "| N | ns/msg min | median | max | vs N = 10^6 | floor, median | × floor |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for n in SCALING_NS:
        ns = [t * 1e9 for t in times[n]]
        med = statistics.median(ns)
        floor_med = statistics.median(floors[n]) * 1e9
        ratio = statistics.median(t / f for t, f in zip(times[n], floors[n]))
        rows.append(
            f"| {n:,} | {min(ns):,.0f} | {med:,.0f} | {max(ns):,.0f} | {med / base - 1:+.1%} "
            f"| {floor_med:,.0f} | {ratio:.2f} |"
        )
    return "\n".join(rows)


def streaming(compiled: ModuleType) -> str:
    """Resident memory while STREAM_N fresh messages stream through compiled run.

    A producer thread puts pages of fresh ints and waits while the buffer holds
    more than STREAM_HIGH_WATER (a producer that outran the loop would grow the
    buffer by design, not leak). Memory is sampled by the producer.
    """
    samples: list[tuple[int, float]] = []
    with compiled.Buffer() as buf, buf.new_consumer() as consumer:

        def produce() -> None:
            put = buf.put
            for start in range(1, STREAM_N, STREAM_CHUNK):
                while len(buf) > STREAM_HIGH_WATER:
                    time.sleep(0.0005)
                put(None, *range(start, min(start + STREAM_CHUNK, STREAM_N)))
                if start // STREAM_CHUNK % 500 == 0:
                    samples.append((start, rss_mb()))
            put(None, 0)

        def stream() -> None:
            producer.start()
            compiled.run(init, update, view, buf, consumer)

        producer = threading.Thread(target=produce)
        gc.collect()
        before = rss_mb()
        try:
            seconds = timed(stream)
        finally:
            producer.join()
    if last[0] != STREAM_N - 1:
        raise RuntimeError(f"streaming: the last view saw {last[0]!r}")
    warm = [mb for i, mb in samples if i >= STREAM_N // 10]
    return (
        f"{STREAM_N:,} fresh messages streamed through compiled run in {seconds:.2f} s "
        f"({seconds / STREAM_N * 1e9:,.0f} ns/msg, producer thread, pages of {STREAM_CHUNK:,}); "
        f"RSS {before:,.1f} MB before, {warm[0]:,.1f} MB after 10%, "
        f"{max(warm):,.1f} MB at most, {warm[-1]:,.1f} MB at the end"
    )


# ---------------------------------------------------------------------- harness


@dataclass
class Contender:
    name: str
    fn: Callable[[list[int]], float]
    n: int  # messages it processes per round (the pure cores get fewer)
    target: float | None = None  # the target ratio to the floor, if it sets one
    target_ns: float | None = None  # or its target in ns per message
    counts: bool = True  # its last view sees the model N - 1 (checked every round)
    times: list[float] = field(default_factory=list)  # seconds per message, per round
    ratios: list[float] = field(default_factory=list)


def contenders(n: int, pure_n: int, keys: int, postgres: str, redis: str) -> list[Contender]:
    out = [Contender("hand-written loop (floor)", floor, n)]
    if compiled is not None:
        out += [
            Contender("elmstate run, compiled", core_run(compiled), n, 1.2),
            Contender(
                "elmstate run, () command, compiled", core_run(compiled, update_empty), n, 1.2
            ),
            Contender(
                "elmstate run + producer thread, compiled", core_run_producer(compiled), n, 1.5
            ),
            Contender("elmstate batch (pages of 1,000), compiled", core_batch(compiled), n, 1.2),
            Contender(
                "elmstate batch (pages of 1,000), () command, compiled",
                core_batch(compiled, update=update_empty),
                n,
                1.2,
            ),
            Contender(
                "elmstate Buffer put + get + commit, compiled (no loop)",
                core_round_trip(compiled),
                n,
                counts=False,
                target_ns=60,
            ),
        ]
    compiled_aio = aio_cores.compiled_aio()
    if compiled_aio is None:
        if compiled is not None:
            print("skipped the compiled aio.run rows: elmstate.aio runs on the pure core here")
    else:
        out += [
            Contender("elmstate aio.run, compiled", aio_run(compiled_aio), n, 1.5),
            Contender(
                "elmstate aio.run, () command, compiled",
                aio_run(compiled_aio, update_empty),
                n,
                1.5,
            ),
        ]
        factory = uvloop_factory()
        if factory is None:
            print("skipped elmstate aio.run, uvloop: uvloop is not installed (pip install uvloop)")
        else:
            out.append(
                Contender(
                    "elmstate aio.run, uvloop, compiled",
                    aio_run(compiled_aio, loop_factory=factory),
                    n,
                )
            )
    out += [
        Contender("elmstate run, pure", core_run(pure), pure_n, 5.0),
        Contender("elmstate run, () command, pure", core_run(pure, update_empty), pure_n, 5.0),
        Contender("elmstate batch (pages of 1,000), pure", core_batch(pure), pure_n),
        Contender(
            "elmstate batch (pages of 1,000), () command, pure",
            core_batch(pure, update=update_empty),
            pure_n,
        ),
        Contender("elmstate aio.run, pure", aio_run(aio_cores.pure_aio()), pure_n),
    ]
    out += [
        Contender(
            f"elmstate aggregate inline, {g.backend.label} "
            f"({keys:,} keys x {AGGREGATE_BATCH} msgs)",
            g,
            n,
            counts=False,
        )
        for g in aggregates.groups(keys, postgres, redis)
    ]
    out += [
        Contender("queue.SimpleQueue loop", simple_queue, n),
        Contender("asyncio.Queue loop", asyncio_queue, n),
    ]
    for name, fn, module in (
        ("pydux dispatch + subscriber", pydux_store, "pydux"),
        ("reactivex Subject + scan", reactivex_subject, "reactivex"),
    ):
        try:
            __import__(module)
        except ImportError:
            print(f"skipped {name}: {module} is not installed (pip install '.[bench]')")
        else:
            out.append(Contender(name, fn, n))
    return out


def measure(cs: Sequence[Contender], rounds: int) -> None:
    lists = {c.n: messages(c.n - 1) for c in cs}
    for r in range(rounds):
        floor_time = None
        for c in cs:
            gc.collect()
            last[0] = None
            seconds = c.fn(lists[c.n]) / (c.n - 1)
            if c.counts and last[0] != c.n - 1:
                raise RuntimeError(f"{c.name}: the last view saw {last[0]!r}, not {c.n - 1}")
            c.times.append(seconds)
            if floor_time is None:
                floor_time = seconds
            c.ratios.append(seconds / floor_time)
        line = " ".join(f"{c.times[-1] * 1e9:,.0f}" for c in cs)
        print(f"round {r + 1}/{rounds}, ns/msg: {line}", file=sys.stderr, flush=True)


def table(cs: Sequence[Contender]) -> str:
    head = "| contender | N | ns/msg min | median | max | msg/s | × floor | target | met |"
    rows = [head, "|---|--:|--:|--:|--:|--:|--:|--:|:-:|"]
    for c in cs:
        ns = [t * 1e9 for t in c.times]
        med = statistics.median(ns)
        ratio = statistics.median(c.ratios)
        target, met = "", ""
        if c.target is not None:
            target, met = f"≤ {c.target:g}×", "yes" if ratio <= c.target else "no"
        elif c.target_ns is not None:
            target, met = f"≤ {c.target_ns:g} ns", "yes" if med <= c.target_ns else "no"
        rows.append(
            f"| {c.name} | {c.n:,} | {min(ns):,.0f} | {med:,.0f} | {max(ns):,.0f} "
            f"| {1e9 / med / 1e6:,.2f} M | {ratio:.2f} | {target} | {met} |"
        )
    return "\n".join(rows)


def chart(cs: Sequence[Contender], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is not installed (pip install '.[bench]')")
        return False
    names = [c.name for c in cs]
    med = [statistics.median(c.times) * 1e9 for c in cs]
    colors = [
        "#888888" if i == 0 else "#2b6cb0" if "elmstate" in n else "#c05621"
        for i, n in enumerate(names)
    ]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(cs) + 1.2))
    bars = ax.barh(names[::-1], med[::-1], color=colors[::-1])
    ax.bar_label(bars, labels=[f"{m:,.0f}" for m in med[::-1]], padding=3, fontsize=8)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="#888888", label="the floor"),
            Patch(color="#2b6cb0", label="elmstate"),
            Patch(color="#c05621", label="peers"),
        ],
        loc="lower right",
        fontsize=8,
    )
    ax.set_xscale("log")
    ax.set_xlabel("ns per message (median, log scale; lower is better)")
    ax.set_title("elmstate vs. a hand-written loop and common peers", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs; {platform.python_implementation()} "
        f"{platform.python_version()}; elmstate {elmstate.__version__} "
        f"({'compiled' if compiled is not None else 'pure only'})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="messages per round")
    parser.add_argument("--pure-n", type=int, default=200_000, help="messages per round, pure core")
    parser.add_argument("--keys", type=int, default=2_000, help="aggregate: keys per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (at least 5 for the table)")
    parser.add_argument(
        "--chart",
        type=Path,
        default=Path(__file__).resolve().parent / "compare.png",
        help="where to write the PNG chart (default: compare.png next to this script)",
    )
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--postgres",
        default=aggregates.POSTGRES,
        metavar="CONNINFO",
        help=f"aggregate: the PostgreSQL to use (default {aggregates.POSTGRES!r})",
    )
    parser.add_argument(
        "--redis",
        default=aggregates.REDIS,
        metavar="URL",
        help=f"aggregate: the Redis to use (default {aggregates.REDIS})",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="also: compiled run at N = 10^4 .. 10^7, and RSS over a 10^7 stream",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="time only contenders whose name contains TEXT (repeatable); the floor always runs",
    )
    args = parser.parse_args(argv)
    for name in ("n", "pure_n", "keys", "rounds"):
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} must be at least 2")

    every = contenders(args.n, args.pure_n, args.keys, args.postgres, args.redis)
    cs = every
    if args.only:
        cs = cs[:1] + [c for c in cs[1:] if any(text in c.name for text in args.only)]
    try:
        print(machine())
        print(f"{args.rounds} rounds, round-robin, one process", flush=True)
        measure(cs, args.rounds)
    finally:  # drop every aggregate group's table, schema or keys
        for c in every:
            if isinstance(c.fn, AggregateGroup):
                c.fn.close()
    print()
    print(table(cs))
    groups = [c.fn for c in cs if isinstance(c.fn, AggregateGroup)]
    if groups:
        print()
        print(aggregates.report(groups))
    if not args.no_chart and chart(cs, args.chart):
        print(f"\nchart: {args.chart}")
    if args.scaling:
        if compiled is None:
            print("\nno scaling: the compiled core is not installed")
        else:
            print(f"\nPer-message cost by N, compiled run, {args.rounds} rounds:\n")
            print(scaling(compiled, args.rounds))
            print()
            print(streaming(compiled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
