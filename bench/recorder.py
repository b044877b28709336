"""What elmstate.trace costs: a loop with and without a Recorder, in one process.

    python bench/recorder.py [--messages N] [--rounds R] [--pure]

A loop without a recorder runs the cores' code unchanged (no branch, no hook:
nothing in them knows about tracing), so "without" is the loop's own cost.
Three arms per mode, timed round-robin so that drift on a shared machine
touches them alike; each figure is the median over rounds, in µs per message:

- ``bare``: ``run``/``batch`` on a Buffer, as in bench/compare.py;
- ``forwarding``: the same loop through wrappers that only hand each call on
  (what any wrapper costs: a Python frame per callback);
- ``recorded``: through ``Recorder.wrap``, writing one JSON line per tick to
  a temporary file (an unbuffered write each, as the recorder always does).

The workload is bench/workload.py's: int messages, a transform that adds 1,
no commands. ``run`` ends on the message 0 (``Stop``); ``batch`` gets the
messages as pages of 1,000 with ``feed="inline"``. Every arm's final model is
checked, and the recorded trace is replayed and checked once per mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Callable

import workload
from workload import Stop, init, update, view

import elmstate

PAGE = 1000

Loop = Callable[[ModuleType, list[int], Any], float]  # (package, messages, wrap) -> seconds


class Forward:
    """A wrapper that hands every call on: the floor for any wrapping of the callbacks."""

    def wrap(self, init: Any, update: Any, view: Any, producer: Any, consumer: Any) -> Any:
        return (
            lambda: init(),
            lambda message: update(message),
            lambda model: view(model),
            _ForwardProducer(producer),
            _ForwardConsumer(consumer),
        )


class _ForwardProducer:
    def __init__(self, producer: Any) -> None:
        self._put = producer.put

    def put(self, ctx: Any, *values: Any) -> None:
        self._put(ctx, *values)


class _ForwardConsumer:
    def __init__(self, consumer: Any) -> None:
        self._get, self._commit, self._rollback = consumer.get, consumer.commit, consumer.rollback

    def get(self, ctx: Any) -> Any:
        return self._get(ctx)

    def commit(self) -> None:
        self._commit()

    def rollback(self) -> None:
        self._rollback()


def timed_run(elm: ModuleType, msgs: list[int], wrapper: Any) -> float:
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, *msgs)
        parts = (init, update, view, buf, consumer)
        if wrapper is not None:
            parts = wrapper.wrap(*parts)
        start = time.perf_counter()
        try:
            elm.run(*parts)
        except Stop:
            pass
        seconds = time.perf_counter() - start
    assert workload.last[0] == len(msgs) - 1, workload.last[0]
    return seconds


def timed_batch(elm: ModuleType, msgs: list[int], wrapper: Any) -> float:
    body = msgs[:-1]  # batch ends by itself: no Stop message
    pages = [body[i : i + PAGE] for i in range(0, len(body), PAGE)] or [[]]
    fetched = iter(range(len(pages)))

    def fetcher(ctx: Any) -> tuple[list[int], bool]:
        index = next(fetched)
        return pages[index], index < len(pages) - 1

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        parts = (init, update, view, buf, consumer)
        if wrapper is not None:
            parts = wrapper.wrap(*parts)
        start = time.perf_counter()
        model = elm.batch(*parts, fetcher, feed="inline")
        seconds = time.perf_counter() - start
    assert model == len(body), model
    return seconds


MODES: dict[str, Loop] = {"run": timed_run, "batch": timed_batch}
ARMS = ("bare", "forwarding", "recorded")


def measure(elm: ModuleType, count: int, rounds: int, folder: str) -> dict[str, dict[str, float]]:
    """Median seconds per message, by mode and arm."""
    msgs = workload.messages(count)
    times: dict[str, dict[str, list[float]]] = {m: {a: [] for a in ARMS} for m in MODES}
    for _ in range(rounds):
        for mode, loop in MODES.items():
            for arm in ARMS:
                path = os.path.join(folder, f"{mode}.jsonl")
                if arm == "recorded":
                    with elm.trace.Recorder(path) as rec:
                        seconds = loop(elm, msgs, rec)
                    assert rec.ticks >= count, rec.ticks
                else:
                    seconds = loop(elm, msgs, Forward() if arm == "forwarding" else None)
                times[mode][arm].append(seconds / count)
    for mode in MODES:  # the trace says what happened: replay it once
        model = elm.trace.replay(os.path.join(folder, f"{mode}.jsonl"), init, update)
        assert model == count, (mode, model)
    return {m: {a: statistics.median(times[m][a]) for a in ARMS} for m in MODES}


def core_package(pure: bool) -> ModuleType:
    if not pure:
        return elmstate
    os.environ["ELMSTATE_NO_EXTENSIONS"] = "1"  # a fresh generation on the pure core
    for name in [n for n in sys.modules if n == "elmstate" or n.startswith("elmstate.")]:
        if name != "elmstate._core":
            del sys.modules[name]
    import elmstate as pure_package

    return pure_package


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (medians are taken)")
    parser.add_argument("--pure", action="store_true", help="time the pure-Python core")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rounds < 1:
        parser.error("--messages and --rounds must be >= 1")
    elm = core_package(args.pure)
    core = "compiled" if elm.compiled else "pure"
    print(
        f"elmstate {elm.__version__}, {core} core, Python {sys.version.split()[0]}: "
        f"{args.messages:,} messages, median of {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="elmstate-trace-bench-") as folder:
        medians = measure(elm, args.messages, args.rounds, folder)
    print(f"{'mode':<6} {'arm':<11} {'µs/message':>11} {'× bare':>7}")
    for mode, arms in medians.items():
        for arm, seconds in arms.items():
            ratio = seconds / arms["bare"]
            print(f"{mode:<6} {arm:<11} {seconds * 1e6:>11.3f} {ratio:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
