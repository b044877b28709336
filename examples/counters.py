"""Two counters in one program: nested components, the Elm way, in all three modes.

A *counter* is a self-contained component: its own model, its own messages, its
own ``update`` and its own commands (every 10th increment it emits a
``Milestone`` through a command). The *parent* holds two counters, "left" and
"right", and lifts each child's messages and commands into its own message type
with ``elmstate.tag``: the shape of the Go original's teaching example.

The input is a stream of clicks: two on the left counter for every one on the
right. Run it as

    python examples/counters.py                 # the demo: run, batch, aggregate
    python examples/counters.py run             # loops until we cancel its Context
    python examples/counters.py batch           # stops once the input has drained
    python examples/counters.py aggregate       # a batch resumed from, and saved to, SQLite
    python examples/counters.py aggregate --db /tmp/demo.sqlite3 --count 90

Run ``aggregate`` twice: the second run starts from the first one's snapshot.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Callable, Literal, Union

import elmstate
from elmstate.typing import Command, Transform

# --------------------------------------------------------------------- the child
# A counter knows nothing about the program it is part of.


@dataclass(frozen=True)
class Increment:
    pass


@dataclass(frozen=True)
class Milestone:
    reached: int


CounterMsg = Union[Increment, Milestone]


@dataclass(frozen=True)
class Counter:
    count: int = 0
    milestones: int = 0


def counter_update(msg: CounterMsg) -> Transform[Counter, CounterMsg] | None:
    """Phase 1: pick what to do for ``msg``; phase 2 (the transform) does it."""
    if isinstance(msg, Increment):

        def increment(model: Counter) -> tuple[Counter, Command[CounterMsg]]:
            count = model.count + 1
            # A command is deferred work whose results are fed back as messages.
            # new_command(m) is the simplest one: "then deliver m".
            command = elmstate.new_command(Milestone(count)) if count % 10 == 0 else None
            return replace(model, count=count), command

        return increment
    if isinstance(msg, Milestone):
        return lambda model: (replace(model, milestones=model.milestones + 1), None)
    return None  # not ours: ignored, the model stays as it is


# -------------------------------------------------------------------- the parent


@dataclass(frozen=True)
class Left:
    msg: CounterMsg


@dataclass(frozen=True)
class Right:
    msg: CounterMsg


Msg = Union[Left, Right]


@dataclass(frozen=True)
class Counters:
    left: Counter = Counter()
    right: Counter = Counter()

    def __str__(self) -> str:
        return (
            f"left={self.left.count} ({self.left.milestones} milestones), "
            f"right={self.right.count} ({self.right.milestones} milestones)"
        )


# tag() calls its target for every command entry, also when the entry returned
# None ("no message"): keep None as None, or the parent would get Left(None).
def to_left(msg: CounterMsg | None) -> Left | None:
    return None if msg is None else Left(msg)


def to_right(msg: CounterMsg | None) -> Right | None:
    return None if msg is None else Right(msg)


def init() -> tuple[Counters, Command[Msg]]:
    return Counters(), None


def update(msg: Msg) -> Transform[Counters, Msg] | None:
    """Phase 1 for the parent: route the message to the child it is for."""
    if isinstance(msg, Left):
        return lift(msg.msg, "left", to_left)
    if isinstance(msg, Right):
        return lift(msg.msg, "right", to_right)
    return None


def lift(
    msg: CounterMsg,
    name: Literal["left", "right"],
    target: Callable[[CounterMsg | None], Msg | None],
) -> Transform[Counters, Msg] | None:
    """Run the child's update on its part of the model; tag its command as ours."""
    child = counter_update(msg)
    if child is None:
        return None

    def transform(model: Counters) -> tuple[Counters, Command[Msg]]:
        counter, command = child(getattr(model, name))
        changes: dict[str, Counter] = {name: counter}  # str keys: older mypy wants them
        return replace(model, **changes), elmstate.tag(command, target)

    return transform


class Screen:
    """The view: called after every tick. Prints milestones as they happen and
    remembers the last model (``run`` never returns one, so this is how we see it)."""

    def __init__(self) -> None:
        self.last: Counters | None = None
        self._changed = threading.Condition()

    def __call__(self, model: Counters) -> None:
        before = self.last
        if before is not None:
            for name in ("left", "right"):
                old, new = getattr(before, name), getattr(model, name)
                if new.milestones > old.milestones:
                    print(f"  milestone: {name} passed {new.milestones * 10}")
        with self._changed:
            self.last = model
            self._changed.notify_all()

    def wait_for(self, done: Callable[[Counters], bool], ctx: elmstate.Context) -> None:
        with self._changed:
            while not ctx.done and (self.last is None or not done(self.last)):
                self._changed.wait(0.05)


# ------------------------------------------------------------------- the input


def click(i: int) -> Msg:
    """The i-th click: two on the left for every one on the right."""
    return Right(Increment()) if i % 3 == 2 else Left(Increment())


class Clicks:
    """A batch fetcher: ``count`` clicks, handed out ten at a time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sent = 0

    def __call__(self, ctx: elmstate.Context) -> tuple[list[Msg], bool]:
        page = [click(i) for i in range(self.sent, min(self.sent + 10, self.count))]
        self.sent += len(page)
        return page, self.sent < self.count  # (messages, more may follow)


def expected(count: int) -> Counters:
    """What ``count`` clicks on a fresh model end in; run mode stops on it."""
    right = count // 3
    left = count - right
    return Counters(Counter(left, left // 10), Counter(right, right // 10))


# --------------------------------------------------------------------- the modes


def run_mode(count: int) -> int:
    print(f"== run: {count} clicks from a producer thread, stopped by cancelling a Context")
    screen = Screen()
    goal = expected(count)
    # A Context is the loop's off switch. The timeout is only a safety net.
    ctx = elmstate.Context(timeout=60)
    # Buffer[Msg]: a type checker sees what it holds, so a stray put is an error.
    with elmstate.Buffer[Msg]() as buf, buf.new_consumer() as consumer:

        def produce() -> None:  # another thread feeding the program
            try:
                for i in range(count):
                    buf.put(ctx, click(i))
            except elmstate.Canceled:
                pass  # stopped early (the safety-net timeout): nothing to report

        def stop_when_done() -> None:
            screen.wait_for(lambda model: model == goal, ctx)
            # The default cleaner drops what every consumer has committed, so an
            # empty buffer means the final tick committed too: we cancel between
            # ticks. Cancelling mid-tick would be safe as well: that tick's put
            # raises Canceled and the consumer rolls back, so its message stays
            # uncommitted, to be read again (at-least-once).
            while len(buf) and not ctx.done:
                time.sleep(0.001)
            ctx.cancel()

        threads = [threading.Thread(target=produce), threading.Thread(target=stop_when_done)]
        for thread in threads:
            thread.start()
        try:
            elmstate.run(init, update, screen, buf, consumer, ctx=ctx)
        except elmstate.Canceled as exc:  # run never returns: a cancel is how it ends
            print(f"run stopped by {type(exc).__name__}: {exc}")
        finally:
            ctx.cancel()
            for thread in threads:
                thread.join()
    print(f"run final: {screen.last}")
    return 0 if screen.last == goal else 1


def batch_mode(count: int) -> int:
    print(f"== batch: {count} clicks from a fetcher; returns once everything has drained")
    with elmstate.Buffer[Msg]() as buf, buf.new_consumer() as consumer:
        model = elmstate.batch(init, update, Screen(), buf, consumer, Clicks(count))
    print(f"batch final: {model}")
    return 0


KEY = "counters"


def dehydrate(ctx: elmstate.Context, key: str, model: Counters) -> bytes:
    return json.dumps(asdict(model)).encode()


def decode(value: bytes) -> Counters:
    data = json.loads(value)
    return Counters(Counter(**data["left"]), Counter(**data["right"]))


def hydrate(ctx: elmstate.Context, key: str, value: bytes) -> tuple[Counters, None]:
    return decode(value), None  # None: this model refers to no other (read-only) models


def aggregate_mode(count: int, db: str) -> int:
    print(f"== aggregate: {count} clicks on the snapshot {KEY!r} in {db}")
    with elmstate.SQLiteStore(db) as store:
        raw = store.load(None, KEY)
        loaded = "nothing, starting from init" if raw is None else decode(raw)
        print(f"aggregate loaded: {loaded}")
        with elmstate.Buffer[Msg]() as buf, buf.new_consumer() as consumer:
            model = elmstate.aggregate(
                init,
                update,
                Screen(),
                buf,
                consumer,
                Clicks(count),
                store,
                hydrate,
                dehydrate,
                KEY,
            )
    print(f"aggregate stored: {model}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="elmstate's nested-counters example")
    parser.add_argument(
        "mode",
        nargs="?",
        choices=["run", "batch", "aggregate"],
        help="one mode; without it, the demo runs all three",
    )
    parser.add_argument(
        "--db",
        default="./elmstate-demo.sqlite3",
        help="the SQLite file for aggregate (default: %(default)s)",
    )
    parser.add_argument(
        "--count", type=int, default=60, help="how many clicks to feed (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must be >= 0")
    print(f"elmstate {elmstate.__version__}, core: {'compiled' if elmstate.compiled else 'pure'}")
    status = 0
    if args.mode in (None, "run"):
        status |= run_mode(args.count)
    if args.mode in (None, "batch"):
        status |= batch_mode(args.count)
    if args.mode in (None, "aggregate"):
        status |= aggregate_mode(args.count, args.db)
    return status


if __name__ == "__main__":
    sys.exit(main())
