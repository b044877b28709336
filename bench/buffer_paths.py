"""The Buffer's per-message paths in wall time, against the hand-written floor, in one process.

    python bench/buffer_paths.py                  # N = 1,000,000, 7 rounds
    python bench/buffer_paths.py -n 200000 --rounds 3

Rows: an empty ``put(ctx)`` (the loop's put after a tick that produced
nothing), a ``get()`` of a held message, a put of one value, each in a Python
loop of N calls; and ``run`` over a Buffer pre-filled with N messages (the
workload of workload.py), unbounded and bounded (``maxsize`` = N + 1: full,
never waiting). Each row is timed ``--rounds`` times, interleaved with the
floor (``workload.floor``, the same ticks written by hand), and reported as
the median µs per call and the median of the per-round ratios to the floor's
µs per message. The bounded rows are left out on a core without
``Buffer(maxsize)``, so the script also measures an older install.
callgrind.py counts the same paths' instructions, which do not swing with the
machine's load.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402

import elmstate  # noqa: E402


def time_floor(n: int) -> float:
    msgs = workload.messages(n)
    gc.collect()
    began = time.perf_counter()
    workload.floor(msgs)
    return (time.perf_counter() - began) / n


def time_put_empty(n: int) -> float:
    with elmstate.Buffer() as buf:
        put = buf.put
        gc.collect()
        began = time.perf_counter()
        for _ in range(n):
            put(None)
        return (time.perf_counter() - began) / n


def time_put_one(n: int) -> float:
    with elmstate.Buffer() as buf, buf.new_consumer():
        put = buf.put
        gc.collect()
        began = time.perf_counter()
        for i in range(n):
            put(None, i)
        return (time.perf_counter() - began) / n


def time_get(n: int, bounded: bool = False) -> float:
    with workload.new_buffer(n if bounded else None) as buf, buf.new_consumer() as consumer:
        buf.put(None, *range(n))
        get = consumer.get
        gc.collect()
        began = time.perf_counter()
        for _ in range(n):
            get()
        return (time.perf_counter() - began) / n


def time_run(n: int, bounded: bool = False) -> float:
    msgs = workload.messages(n)
    with workload.new_buffer(len(msgs) if bounded else None) as buf, buf.new_consumer() as consumer:
        buf.put(None, *msgs)
        gc.collect()
        began = time.perf_counter()
        try:
            elmstate.run(workload.init, workload.update, workload.view, buf, consumer)
        except workload.Stop:
            pass
        return (time.perf_counter() - began) / n


def rows(bounded: bool) -> list[tuple[str, Callable[[int], float]]]:
    out: list[tuple[str, Callable[[int], float]]] = [
        ("Buffer put(ctx), no values", time_put_empty),
        ("Buffer get(), message held", time_get),
        ("Buffer put(ctx, value)", time_put_one),
        ("run, None command", time_run),
    ]
    if bounded:
        out += [
            ("bounded Buffer get(), message held", lambda n: time_get(n, True)),
            ("run, None command, bounded Buffer", lambda n: time_run(n, True)),
        ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="calls per row (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; medians (default 7)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        parser.error("-n and --rounds must be at least 1")
    table = rows(workload.bounded_supported())
    per: dict[str, list[float]] = {name: [] for name, _ in table}
    ratio: dict[str, list[float]] = {name: [] for name, _ in table}
    floors: list[float] = []
    for _ in range(args.rounds):
        for name, fn in table:
            floor = time_floor(args.n)
            floors.append(floor)
            got = fn(args.n)
            per[name].append(got)
            ratio[name].append(got / floor)
    core = "compiled" if elmstate.compiled else "pure"
    print(
        f"elmstate {elmstate.__version__} ({core} core), N = {args.n:,}, "
        f"median of {args.rounds}; Python {sys.version.split()[0]}\n"
    )
    print("| row | µs per call | × floor's µs per message |")
    print("|---|--:|--:|")
    floor_us = statistics.median(floors) * 1e6
    print(f"| hand-written loop (floor), per message | {floor_us:.3f} | 1.00 |")
    for name, _ in table:
        print(
            f"| {name} | {statistics.median(per[name]) * 1e6:.3f} "
            f"| {statistics.median(ratio[name]):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
