"""Where ``aggregate(feed="inline")`` spends what the same work by hand does not.

    python bench/aggregate_profile.py                  # callgrind, 2,000 keys, both cores
    python bench/aggregate_profile.py --top 25         # + the functions the difference is made of
    python bench/aggregate_profile.py --cprofile       # cProfile of the inline arm, both cores

The work is compare.py's (aggregates.py): per key, load a ~1 KB snapshot from a
``MemoryStore``, hydrate it, fold 10 messages, dehydrate, save by compare-and-set;
once through ``elmstate.aggregate(..., feed="inline")``, once by hand (the same
store's ``load_versioned`` / ``store_versioned`` called directly). A MemoryStore,
so that the store's own cost is small and the same in both.

callgrind (needs valgrind): each arm runs in a child process (this script with
``--child``) under ``valgrind --tool=callgrind --separate-threads=yes``, twice:
in full, and doing only the set-up (import, store, seeded keys, one warm-up
aggregate of that arm). Instructions per aggregate = (full - set-up) / keys, on
the main thread (``feed="inline"`` starts none). ``--top N`` then lists the N
functions whose own (exclusive) instructions per aggregate grow the most from
by hand to inline, from ``callgrind_annotate``: that is where the overhead goes.
On the compiled core Cython's functions appear under their C names
(``__pyx_pw_8elmstate_5_core_...``); on the pure core, as the interpreter's.

cProfile: Python-level calls of the inline arm per aggregate (calls and own
time). On the compiled core it sees the pure-Python parts (``_aggregate.py``,
``_validate.py``, the store) and the calls into the core, not inside it. cProfile
inflates the cost of small calls: read it for counts, callgrind for costs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORES = ("compiled", "pure")
ARMS = ("inline", "hand")


def env(core: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONHASHSEED="0")
    e.pop("ELMSTATE_NO_EXTENSIONS", None)
    if core == "pure":
        e["ELMSTATE_NO_EXTENSIONS"] = "1"
    return e


def child(arm: str, mode: str, keys: int, core: str, top: int = 25) -> None:
    """One measured process: set up, then (unless ``mode`` is "setup") the arm over ``keys``."""
    sys.path.insert(0, str(HERE))
    import aggregates

    import elmstate

    if (core == "compiled") != bool(elmstate.compiled):
        raise SystemExit(f"asked for the {core} core, elmstate loaded the other")
    with elmstate.MemoryStore() as store:
        mine = aggregates.Elmstate(store)
        work = mine.aggregate("inline") if arm == "inline" else mine.by_hand
        names = [f"key-{i}" for i in range(keys)]
        mine.seed(["warm-up", *names])
        work(["warm-up"])
        if mode == "full":
            work(names)
        elif mode == "profile":
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(work, names)
            stats = pstats.Stats(prof)
            rows = []
            for (file, line, func), (_, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
                where = f"{Path(file).name}:{line}({func})" if line else func
                rows.append((tt, nc, ct, where))
            rows.sort(reverse=True)
            total = sum(r[0] for r in rows)
            print(
                "| function | calls per aggregate | own µs per aggregate | % of own "
                "| cumulative µs |"
            )
            print("|---|--:|--:|--:|--:|")
            for tt, nc, ct, where in rows[:top]:
                print(
                    f"| `{where}` | {nc / keys:.1f} | {tt / keys * 1e6:.2f} "
                    f"| {tt / total * 100:.1f}% | {ct / keys * 1e6:.2f} |"
                )
            print(f"\nall own time: {total / keys * 1e6:.2f} µs per aggregate under cProfile")
        elif mode == "split":
            split(mine, keys)
        if mode not in ("setup", "split"):
            mine.check([names[0], names[-1]])
        mine.close()


def repeat(fn: Any, times: int) -> None:
    for _ in range(times):
        fn()


def split(mine: Any, keys: int) -> None:
    """Wall time per aggregate of the parts, by difference (best of 7 runs over ``keys``)."""
    import time

    from workload import aggregate_update, hydrator, view

    import elmstate

    model = hydrator(None, "", mine.store.load(None, "warm-up"))[0]
    page = mine.page

    def init() -> Any:
        return model, None

    def fold() -> None:
        m = model
        view(m)
        for msg in page:
            t = aggregate_update(msg)
            m, cmd = t(m)
            view(m)

    def batch() -> None:
        elmstate.batch(
            init, aggregate_update, view, mine.buf, mine.consumer, mine.fetcher, feed="inline"
        )

    inline, hand = mine.aggregate("inline"), mine.by_hand
    sets = {name: [f"{name}-{i}" for i in range(keys)] for name in ("inline", "hand")}
    for names in sets.values():
        mine.seed(names)
    best: dict[str, float] = {}
    for _ in range(7):
        for name, fn in (
            ("inline", lambda: inline(sets["inline"])),
            ("hand", lambda: hand(sets["hand"])),
            ("fold", lambda: repeat(fold, keys)),
            ("batch", lambda: repeat(batch, keys)),
        ):
            t = time.perf_counter()
            fn()
            t = (time.perf_counter() - t) / keys * 1e6
            best[name] = min(best.get(name, t), t)
    a, h, f, b = best["inline"], best["hand"], best["fold"], best["batch"]
    print("| part | µs per aggregate |")
    print("|---|--:|")
    print(f"| aggregate(feed='inline'), whole | {a:.2f} |")
    print(f"| by hand, whole | {h:.2f} |")
    print(f"| overhead (inline - by hand) | {a - h:+.2f} |")
    print(
        f"| of which batch(feed='inline') over the same fold by hand ({b:.2f} - {f:.2f}) "
        f"| {b - f:+.2f} |"
    )
    print(
        "| of which aggregate's own (load/save wrapper, checks, loader): the rest "
        f"| {a - h - b + f:+.2f} |"
    )


def callgrind(arm: str, mode: str, keys: int, core: str, out: Path) -> Path:
    """Run one child under callgrind; returns its main thread's output file."""
    prefix = Path(tempfile.mkdtemp(prefix=f"{arm}-{core}-{mode}-", dir=out)) / "out"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", arm, mode, str(keys), core]
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={prefix}",
            *cmd,
        ],
        env=env(core),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} {core} {mode} failed:\n{proc.stdout}{proc.stderr}")
    for f in sorted(prefix.parent.glob(f"{prefix.name}*")):
        text = f.read_text(errors="replace")
        if re.search(r"^thread: 1$", text, re.M):
            return f
    raise RuntimeError(f"callgrind wrote no main-thread output for {prefix.name}")


def total(f: Path) -> int:
    m = re.search(r"^totals: (\d+)", f.read_text(errors="replace"), re.M)
    if m is None:
        raise RuntimeError(f"{f}: no totals line")
    return int(m.group(1))


def functions(f: Path) -> dict[str, int]:
    """Exclusive instructions per function, from callgrind_annotate."""
    proc = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(f)],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            name = re.sub(r"\s+\[[^\]]*\]$", "", m.group(2))  # drop the object file
            # one name per function: no source directory, no recursion depth ('2: the
            # interpreter re-entered from C, as when the compiled loop calls update)
            name = re.sub(r"'\d+$", "", name.rsplit("/", 1)[-1])
            out[name] = out.get(name, 0) + int(m.group(1).replace(",", ""))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2_000, help="aggregates per run")
    parser.add_argument("--top", type=int, default=0, help="list the N functions of the difference")
    parser.add_argument("--cores", default="compiled,pure", help="which cores, comma-separated")
    parser.add_argument("--cprofile", action="store_true", help="cProfile instead of callgrind")
    parser.add_argument(
        "--split", action="store_true", help="wall time of the overhead's parts, instead"
    )
    parser.add_argument("--keep", type=Path, help="keep callgrind's output files here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        arm, mode, keys, core = args.child
        child(arm, mode, int(keys), core, args.top or 25)
        return 0
    cores = [c for c in args.cores.split(",") if c]
    if any(c not in CORES for c in cores):
        parser.error(f"--cores: one of {', '.join(CORES)}")
    script = [sys.executable, str(Path(__file__).resolve()), "--child"]
    if args.cprofile:
        for core in cores:
            print(f"\n## cProfile, aggregate(feed='inline'), MemoryStore, {core} core\n")
            sys.stdout.flush()
            top = ["--top", str(args.top or 25)]
            cmd = [*script, "inline", "profile", str(args.keys), core, *top]
            subprocess.run(cmd, env=env(core), check=True)
        return 0
    if args.split:
        for core in cores:
            print(f"\n## aggregate(feed='inline') by parts, MemoryStore, {core} core\n")
            sys.stdout.flush()
            subprocess.run(
                [*script, "inline", "split", str(args.keys), core], env=env(core), check=True
            )
        return 0
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not on the PATH (apt-get install valgrind)")
    for core in cores:  # natively first: checks each arm works, writes the bytecode caches
        for arm in ARMS:
            subprocess.run([*script, arm, "full", "50", core], env=env(core), check=True)
    out = args.keep or Path(tempfile.mkdtemp(prefix="elmstate-aggregate-cg-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        print(
            f"Instructions per aggregate, callgrind, MemoryStore, {args.keys:,} keys, main "
            f"thread; {sys.executable}, Python {sys.version.split()[0]}\n"
        )
        print("| core | by hand | aggregate(feed='inline') | overhead | × by hand |")
        print("|---|--:|--:|--:|--:|")
        files: dict[tuple[str, str, str], Path] = {}
        for core in cores:
            per: dict[str, float] = {}
            for arm in ARMS:
                for mode in ("full", "setup"):
                    files[arm, mode, core] = callgrind(arm, mode, args.keys, core, out)
                full, setup = files[arm, "full", core], files[arm, "setup", core]
                per[arm] = (total(full) - total(setup)) / args.keys
            print(
                f"| {core} | {per['hand']:,.0f} | {per['inline']:,.0f} "
                f"| {per['inline'] - per['hand']:+,.0f} | {per['inline'] / per['hand']:.2f} |",
                flush=True,
            )
        if args.top:
            for core in cores:
                cost: dict[str, dict[str, float]] = {}
                for arm in ARMS:
                    f_full = functions(files[arm, "full", core])
                    f_setup = functions(files[arm, "setup", core])
                    cost[arm] = {
                        k: (f_full.get(k, 0) - f_setup.get(k, 0)) / args.keys
                        for k in f_full.keys() | f_setup.keys()
                    }
                diff = {
                    k: cost["inline"].get(k, 0) - cost["hand"].get(k, 0)
                    for k in cost["inline"].keys() | cost["hand"].keys()
                }
                print(
                    f"\n{core} core: the {args.top} functions whose own instructions per "
                    "aggregate grow the most from by hand to inline\n"
                )
                print("| function | by hand | inline | difference |")
                print("|---|--:|--:|--:|")
                for k, d in sorted(diff.items(), key=lambda kv: -kv[1])[: args.top]:
                    print(
                        f"| `{k}` | {cost['hand'].get(k, 0):,.0f} "
                        f"| {cost['inline'].get(k, 0):,.0f} | {d:+,.0f} |"
                    )
                print(f"| (sum of all functions) | | | {sum(diff.values()):+,.0f} |")
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
