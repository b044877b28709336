"""A producer thread ahead of a loop: memory and throughput, unbounded against bounded.

    python bench/backpressure.py                   # 10,000,000 messages, compiled core
    python bench/backpressure.py -n 1000000 --pure

One producer thread puts N int messages, one per ``put``, into a Buffer read by
``run`` (whose update checks that each message is the next one). Each
configuration runs in a child process of its own, so that its resident memory
is its own: ``Buffer()`` (the producer runs ahead and the buffer holds what the
loop has not reached yet) and ``Buffer(maxsize=M)`` for each ``--maxsize``,
where the producer waits for the loop. Resident memory is sampled by the loop
every 250,000 messages; "growth" is the largest minus the smallest sample after
the first tenth of the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any


class Stop(Exception):
    pass


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(n: int, maxsize: int | None) -> None:
    """One configuration: prints one tab-separated line of figures."""
    import elmstate

    buf: Any = elmstate.Buffer() if maxsize is None else elmstate.Buffer(maxsize)
    consumer = buf.new_consumer()
    samples: list[int] = []
    held = [0]
    expected = [0]

    def produce() -> None:
        put = buf.put
        for i in range(n):
            put(None, i)
        put(None, -1)

    def update(message: int) -> None:
        if message == -1:
            raise Stop
        if message != expected[0]:
            raise SystemExit(f"got {message}, expected {expected[0]}")
        expected[0] += 1
        if message % 250_000 == 0:
            samples.append(rss_bytes())
            held[0] = max(held[0], len(buf))
        return None

    began = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        elmstate.run(lambda: (0, None), update, lambda m: None, elmstate.Buffer(), consumer)
    except Stop:
        pass
    producer.join()
    seconds = time.perf_counter() - began
    if expected[0] != n:
        raise SystemExit(f"{expected[0]} of {n} messages applied")
    settled = samples[len(samples) // 10 :] or samples
    print(
        f"{seconds}\t{min(settled)}\t{max(settled)}\t{max(settled) - min(settled)}\t{held[0]}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000_000, help="messages (default 10,000,000)")
    parser.add_argument(
        "--maxsize",
        type=int,
        action="append",
        help="a bounded configuration (repeatable; default 10,000)",
    )
    parser.add_argument("--pure", action="store_true", help="the pure-Python core")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        size = None if args.child[1] == "none" else int(args.child[1])
        child(int(args.child[0]), size)
        return 0
    if args.n < 1:
        parser.error("-n must be at least 1")
    sizes: list[int | None] = [None, *(args.maxsize or [10_000])]
    env = dict(os.environ)
    env.pop("ELMSTATE_NO_EXTENSIONS", None)
    if args.pure:
        env["ELMSTATE_NO_EXTENSIONS"] = "1"
    core = "pure" if args.pure else "compiled"
    python = sys.version.split()[0]
    print(f"{args.n:,} messages, one producer thread, {core} core; Python {python}\n")
    print("| buffer | seconds | M messages/s | RSS (MiB) | growth (MiB) | most held |")
    print("|---|--:|--:|--:|--:|--:|")
    for size in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(args.n), str(size or "none")],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split("\t")
        seconds, low, high, growth, held = float(out[0]), *map(int, out[1:])
        name = "Buffer()" if size is None else f"Buffer(maxsize={size:,})"
        print(
            f"| {name} | {seconds:.2f} | {args.n / seconds / 1e6:.2f} "
            f"| {low / 2**20:.1f}–{high / 2**20:.1f} | {growth / 2**20:.2f} | {held:,} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
