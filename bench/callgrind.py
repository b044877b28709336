"""Instructions per message, counted by valgrind's callgrind, against the hand-written floor.

    python bench/callgrind.py                 # N = 100,000, every case
    python bench/callgrind.py -n 200000 --only compiled --keep /tmp/cg

Needs valgrind on the PATH; runs the interpreter it is run with (``sys.executable``)
and, for the pure rows, the same interpreter with ``ELMSTATE_NO_EXTENSIONS=1``.
Wall time is noisy on a shared machine; instruction counts are not, so they tell
whether a change to the loop made it do less work. They do not tell where the
time goes that is not instructions (cache misses, lock hand-offs, the GIL):
compare.py measures that.

Cases, on the workload of workload.py (int messages, a transform adding 1 to the
model, a view that stores it): the hand-written floor (``workload.floor`` over a
list), and ``run`` over a Buffer pre-filled with every message, its transforms
returning ``None`` or ``()`` as the command, on the compiled and on the pure core;
``await aio.run(...)`` the same way, over a pre-filled ``aio.Buffer`` in asyncio's
default event loop (made in the set-up; its fairness yield, once per
millisecond natively, is turned off: see ``aio_run``);
the same over a bounded Buffer (``maxsize`` = the messages: full, never waiting);
and the Buffer's two per-message calls alone in a Python loop: an empty ``put``
and a ``get`` of a held message, unbounded and bounded. The bounded rows are
left out where the installed elmstate has no ``Buffer(maxsize)``, so that an
older install can be measured with this script.

Method. Each case runs in a child process (this script with ``--child``) under
``valgrind --tool=callgrind --separate-threads=yes``, four times: with N messages
and with none (only the stop message), each once in full and once doing only the
set-up (import, message list, Buffer and its pre-fill, gc.collect, teardown)
without the loop. Then

    per message = ((full(N) - setup(N)) - (full(0) - setup(0))) / N

the first difference removes start-up, pre-fill and teardown (which grow with
N), the second the loop's fixed cost per call (argument checks, Context, init,
the stop message's exception). Before the measured part, everything alive is
frozen out of the garbage collector's reach (``gc.freeze``), so that its full
collections do not cost more per message when more modules are loaded. No
marker functions or toggles are needed, so it works on any CPython, with or
without symbols. Children run with
``PYTHONHASHSEED=0`` after a native warm-up run of each (which also checks the
result and writes the bytecode caches); elmstate's shared threads are started in
the set-up, so that their creation is not counted in one run and not the other.

Threads are counted apart: the loop's own thread ("loop thread", the headline
figure and its ratio to the floor) and every other thread ("other threads":
elmstate's timer and worker threads, where the Buffer's cleaner drops committed
messages, a pass at most every ``cooldown`` seconds). The loop thread's figure
is stable to a few instructions per message. The other threads' is not: a run
under valgrind is some 50x slower than natively, so it sees many more cleaner
passes, and how many, and on which thread they land, depends on wall time;
read it as "the cleaner's work exists", not as a cost per message (compare.py
times it). ``--repeat`` repeats the whole measurement and reports medians.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# ------------------------------------------------------------------------- child


def settle() -> None:
    """Collect, then freeze every object alive (the modules, the messages) out of the
    collector's reach: the loop's collections then scan only what it allocates, and
    a change in how much the interpreter has loaded (another submodule imported by
    ``import elmstate``) does not move the figures."""
    gc.collect()
    gc.freeze()


def child(case: str, mode: str, n: int, core: str) -> None:
    """One measured process: set up, run the loop unless ``mode`` is "setup", tear down."""
    sys.path.insert(0, str(HERE))
    import workload

    import elmstate

    if (core == "compiled") != bool(elmstate.compiled):
        raise SystemExit(f"asked for the {core} core, elmstate loaded the other")
    # elmstate's shared threads (the timer, and the worker where deferred cleaner
    # passes run, if the core has one), started here in every run, set-up only or
    # not: the first pass to be deferred would otherwise start them in some runs
    # only. The second commit comes within the cooldown, so its pass is deferred.
    with elmstate.Buffer() as buf, buf.new_consumer() as consumer:
        for m in (1, 2):
            buf.put(None, m)
            consumer.get()
            consumer.commit()
        elmstate.Context(timeout=0.2).wait()  # meanwhile the deferred pass runs
    msgs = workload.messages(n)
    workload.last[0] = None
    if case == "floor":
        settle()
        if mode == "full":
            workload.floor(msgs)
    elif case in ("put-empty", "get", "get-bounded"):
        # The Buffer's two per-message calls on their own, in a Python loop
        # (whose cost the floor shows): an empty put, the loop's after a tick
        # that produced nothing, and a get of a message already there.
        bound = len(msgs) if case == "get-bounded" else None  # full, never waiting
        with workload.new_buffer(bound) as buf, buf.new_consumer() as consumer:
            if case != "put-empty":
                buf.put(None, *msgs)
            settle()
            if mode == "full":
                if case != "put-empty":
                    get = consumer.get
                    for _ in range(n):
                        get()
                else:
                    put = buf.put
                    for _ in range(n):
                        put(None)
                held = len(msgs) if case != "put-empty" else 0
                workload.last[0] = n if len(buf) == held else None
    elif case in ("aio-run-none", "aio-run-empty"):
        aio_run(elmstate, workload, case, mode, msgs)
    else:
        update = {
            "run-none": workload.update,
            "run-empty": workload.update_empty,
            "run-bounded": workload.update,
        }[case]
        bound = len(msgs) if case == "run-bounded" else None
        with workload.new_buffer(bound) as buf, buf.new_consumer() as consumer:
            buf.put(None, *msgs)
            settle()
            if mode == "full":
                try:
                    elmstate.run(workload.init, update, workload.view, buf, consumer)
                except workload.Stop:
                    pass
    if mode == "full" and workload.last[0] != n:
        raise SystemExit(f"{case}: the last view saw {workload.last[0]!r}, not {n}")


def aio_run(elmstate: Any, workload: Any, case: str, mode: str, msgs: list[int]) -> None:
    """``await aio.run(...)`` over an ``aio.Buffer`` pre-filled with every message, in
    asyncio's default event loop, made (and closed) in the set-up of every run.

    The loop's fairness yield (one per ``elmstate.aio._loop.SLICE`` seconds of
    work) is set to come never: under valgrind, some 50 times slower, it would
    come every hundred-odd messages instead of every several thousand, and how
    often depends on wall time. Natively it is one event-loop turn per
    millisecond; compare.py's times include it.
    """
    import asyncio

    import elmstate.aio
    from elmstate.aio import _loop

    if not isinstance(getattr(_loop, "SLICE", None), float):
        raise SystemExit("elmstate.aio._loop.SLICE is gone: update bench/callgrind.py")
    _loop.SLICE = 1e9
    update = workload.update if case == "aio-run-none" else workload.update_empty
    loop = asyncio.new_event_loop()
    try:
        with elmstate.aio.Buffer() as buf, buf.new_consumer() as consumer:
            buf.put(None, *msgs)

            async def main() -> None:
                try:
                    await elmstate.aio.run(workload.init, update, workload.view, buf, consumer)
                except workload.Stop:
                    pass

            settle()
            if mode == "full":
                loop.run_until_complete(main())
    finally:
        loop.close()


# ------------------------------------------------------------------------ driver


@dataclass
class Case:
    name: str
    case: str  # the child's case
    core: str  # "compiled" or "pure"

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONHASHSEED="0")
        env.pop("ELMSTATE_NO_EXTENSIONS", None)
        if self.core == "pure":
            env["ELMSTATE_NO_EXTENSIONS"] = "1"
        return env


CASES = [
    Case("hand-written loop (floor)", "floor", "compiled"),
    Case("run, None command, compiled", "run-none", "compiled"),
    Case("run, () command, compiled", "run-empty", "compiled"),
    Case("run, None command, pure", "run-none", "pure"),
    Case("run, () command, pure", "run-empty", "pure"),
    Case("aio.run, None command, compiled", "aio-run-none", "compiled"),
    Case("aio.run, () command, compiled", "aio-run-empty", "compiled"),
    Case("aio.run, None command, pure", "aio-run-none", "pure"),
    Case("aio.run, () command, pure", "aio-run-empty", "pure"),
    Case("Buffer put(ctx), no values, compiled", "put-empty", "compiled"),
    Case("Buffer get(), message held, compiled", "get", "compiled"),
    Case("Buffer put(ctx), no values, pure", "put-empty", "pure"),
    Case("Buffer get(), message held, pure", "get", "pure"),
    Case("bounded Buffer get(), message held, compiled", "get-bounded", "compiled"),
    Case("bounded Buffer get(), message held, pure", "get-bounded", "pure"),
    Case("run, None command, bounded Buffer, compiled", "run-bounded", "compiled"),
    Case("run, None command, bounded Buffer, pure", "run-bounded", "pure"),
]


def command(c: Case, mode: str, n: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", c.case, mode, str(n), c.core]


def callgrind(c: Case, mode: str, n: int, out: Path) -> tuple[int, int]:
    """Instructions (loop thread, other threads) of one child run under callgrind."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = Path(tempfile.mkdtemp(prefix=f"{c.case}-{c.core}-{mode}-{n}-", dir=out)) / "out"
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={prefix}",
            *command(c, mode, n),
        ],
        env=c.env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{c.name} ({mode}, N={n}) failed:\n{proc.stdout}{proc.stderr}")
    main, others = 0, 0
    files = sorted(prefix.parent.glob(f"{prefix.name}*"))
    if not files:
        raise RuntimeError(f"callgrind wrote no output for {prefix.name}")
    for f in files:
        # --separate-threads: a file per thread, <prefix>-<thread> (and an empty
        # <prefix>); valgrind's thread 1 is the main thread, the loop's
        thread, total = None, None
        with open(f) as fh:
            for line in fh:
                if line.startswith("thread:"):
                    thread = int(line.split()[1])
                elif line.startswith("totals:"):
                    total = int(line.split()[1])
        if thread is None and total is None:
            continue
        if thread is None or total is None:
            raise RuntimeError(f"{f}: no thread or no totals line")
        if thread == 1:
            main += total
        else:
            others += total
    return main, others


def per_message(c: Case, n: int, out: Path, jobs: int) -> tuple[float, float]:
    runs = [("full", n), ("setup", n), ("full", 0), ("setup", 0)]
    with ThreadPoolExecutor(jobs) as pool:
        got = list(pool.map(lambda r: callgrind(c, r[0], r[1], out), runs))
    (fm, fo), (sm, so), (f0m, f0o), (s0m, s0o) = got
    return ((fm - sm) - (f0m - s0m)) / n, ((fo - so) - (f0o - s0o)) / n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="messages (default 100,000)")
    parser.add_argument("--repeat", type=int, default=1, help="measure this many times; medians")
    parser.add_argument(
        "--jobs", type=int, default=1, help="valgrind runs at once (more is faster, noisier)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="only cases whose name contains TEXT (repeatable); the floor always runs",
    )
    parser.add_argument("--keep", type=Path, help="keep callgrind's output files here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, mode, n, core = args.child
        child(case, mode, int(n), core)
        return 0
    if args.n < 1000:
        parser.error("-n must be at least 1000")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not on the PATH (apt-get install valgrind)")

    sys.path.insert(0, str(HERE))
    import workload

    bounded = workload.bounded_supported()
    cases = CASES[:1] + [
        c
        for c in CASES[1:]
        if (not args.only or any(t in c.name for t in args.only))
        and (bounded or "bounded" not in c.case)
    ]
    for c in cases:  # natively first: checks each case works, writes the bytecode caches
        subprocess.run(command(c, "full", 1000), env=c.env(), check=True)

    out = args.keep or Path(tempfile.mkdtemp(prefix="elmstate-callgrind-"))
    loop: dict[str, list[float]] = {c.name: [] for c in cases}
    other: dict[str, list[float]] = {c.name: [] for c in cases}
    try:
        for r in range(args.repeat):
            for c in cases:
                m, o = per_message(c, args.n, out, args.jobs)
                loop[c.name].append(m)
                other[c.name].append(o)
                print(
                    f"[{r + 1}/{args.repeat}] {c.name}: {m:,.1f} loop thread, {o:,.1f} other",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)

    floor = statistics.median(loop[cases[0].name])
    print(
        f"Instructions per message, callgrind, N = {args.n:,}, median of {args.repeat}; "
        f"{sys.executable}, Python {sys.version.split()[0]}\n"
    )
    print("| case | loop thread | × floor | other threads (cleaner): median | min | max |")
    print("|---|--:|--:|--:|--:|--:|")
    for c in cases:
        m = statistics.median(loop[c.name])
        others = [round(x, 1) + 0.0 for x in other[c.name]]  # + 0.0: no "-0.0"
        print(
            f"| {c.name} | {m:,.1f} | {m / floor:.2f} "
            f"| {statistics.median(others):,.1f} | {min(others):,.1f} | {max(others):,.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
