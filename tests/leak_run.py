"""Stream N messages through ``elmstate.run`` and check that memory stays flat.

Usage: python leak_run.py [N]     (default 5,000,000; Linux only: reads /proc)

A Buffer is both the producer and the consumer, self-fed: each update's command
produces the next message, until view cancels the context after N messages.
Resident memory is sampled after a warm-up (10% of N) and at the end; the script
exits 1, printing the figures, if it grew by more than LIMIT_MB. The core in use
follows ``ELMSTATE_NO_EXTENSIONS`` as usual and is printed on the first line.

Not collected by pytest (its name does not start with ``test_``); tests/test_leaks.py
runs it in a subprocess.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any, Callable

LIMIT_MB = 10.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str]) -> int:
    import elmstate

    n = int(argv[1]) if len(argv) > 1 else 5_000_000
    warm_up = max(1, n // 10)
    print(f"core: {'compiled' if elmstate.compiled else 'pure'}", flush=True)
    print(f"module: {elmstate.run.__module__}", flush=True)

    buf = elmstate.Buffer()
    consumer = buf.new_consumer()
    ctx = elmstate.Context()
    samples: dict[str, int] = {}

    def next_message(i: int) -> Callable[[], Any]:
        # A fresh object per message, and a fresh command per tick.
        return lambda: ("tick", i)

    def step(model: int) -> tuple[int, list[Callable[[], Any] | None]]:
        return model + 1, [next_message(model + 1), None]

    def init() -> tuple[int, list[Callable[[], Any]]]:
        return 0, [next_message(0)]

    def update(message: Any) -> Callable[[int], tuple[int, list[Callable[[], Any] | None]]]:
        assert message[0] == "tick"
        return step

    def view(model: int) -> None:
        if model == warm_up:
            gc.collect()
            samples["warm"] = rss_bytes()
        elif model >= n:
            ctx.cancel()

    began = time.monotonic()
    try:
        elmstate.run(init, update, view, buf, consumer, ctx=ctx)
    except elmstate.Canceled:
        pass
    elapsed = time.monotonic() - began
    deadline = time.monotonic() + 2.0  # committed messages are reaped within ~cooldown
    while len(buf) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    gc.collect()
    end = rss_bytes()
    warm = samples["warm"]
    growth_mb = (end - warm) / 2**20
    held = len(buf)
    print(f"messages: {n}")
    print(f"seconds: {elapsed:.2f}")
    print(f"rss_warm_mb: {warm / 2**20:.2f}")
    print(f"rss_end_mb: {end / 2**20:.2f}")
    print(f"growth_mb: {growth_mb:.2f}")
    print(f"held_at_end: {held}")
    if held > 1:  # only the message put by the last tick is left uncommitted
        print(f"FAIL: the buffer still holds {held} messages", flush=True)
        return 1
    if growth_mb > LIMIT_MB:
        print(f"FAIL: resident memory grew by {growth_mb:.2f} MB (limit {LIMIT_MB} MB)")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
