"""Helpers shared by the test modules (one copy each)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

# Timing-dependent checks poll with generous deadlines and measure latencies as the
# best of several attempts, so a noisy CI machine does not make them flaky; every
# call that could block carries a ``Context`` timeout as a safety net, so a bug
# fails the test instead of hanging it.
SAFETY = 5.0  # seconds: a blocked call that should have woken fails instead of hanging


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(0.002)
    return True


def subprocess_env(elm: ModuleType) -> dict[str, str]:
    """The environment for a child interpreter that imports this ``elm``, on its core."""
    env = dict(os.environ)
    # Import elmstate from wherever this session did (a src checkout or an install).
    package_parent = str(Path(str(elm.__file__)).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    if elm.compiled:
        env.pop("ELMSTATE_NO_EXTENSIONS", None)
    else:
        env["ELMSTATE_NO_EXTENSIONS"] = "1"
    return env


class InThread:
    """Runs ``fn()`` in a daemon thread; records its result or exception and when it ended."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.started = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(SAFETY)

    def _run(self) -> None:
        self.started.set()
        try:
            self.result = self.fn()
        except BaseException as exc:  # recorded for the test to inspect
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout: float = SAFETY + 2) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the blocked call never returned"


def buffer_pair(elm: ModuleType) -> tuple[Any, Any]:
    """A new Buffer and a consumer of it."""
    buf = elm.Buffer()
    return buf, buf.new_consumer()


def drain(consumer: Any, n: int) -> list[Any]:
    """Read ``n`` messages that are already available."""
    return [consumer.get() for _ in range(n)]


def to_bytes(ctx: Any, key: str, model: Any) -> bytes:
    """A dehydrator: the model's str, encoded."""
    return str(model).encode()


def aggregate_once(elm: ModuleType, store: Any, hydrator: Any, key: str) -> Any:
    """One aggregate of ``key`` in ``store`` with no messages to read; returns its model."""
    buf = elm.Buffer()
    return elm.aggregate(
        lambda: ("init", None),
        lambda message: None,
        lambda model: None,
        buf,
        buf.new_consumer(),
        lambda ctx: ([], False),
        store,
        hydrator,
        to_bytes,
        key,
        ctx=elm.Context(timeout=SAFETY),
    )


class ArmedCleaner:
    """A cleaner that drops nothing until armed, then raises ``error`` on each call."""

    def __init__(self, error: BaseException, armed: bool = False) -> None:
        self.error = error
        self.armed = armed

    def __call__(self, size: int, offsets: Sequence[int]) -> int:
        if self.armed:
            raise self.error
        return 0


def run_example(
    path: Path, core: str, *args: str, cwd: Path | None = None, returncode: int = 0
) -> list[str]:
    """Run an example script with ``core`` live; returns its output lines after the banner.

    It must exit with ``returncode``, its banner (the first line) must name the
    core, and nothing may reach stderr."""
    from conftest import PURE_ONLY  # tests/ is on sys.path when a test runs

    if core == "compiled" and PURE_ONLY:
        import pytest

        pytest.skip("ELMSTATE_NO_EXTENSIONS is set")
    env = dict(os.environ)
    env.pop("ELMSTATE_NO_EXTENSIONS", None)
    if core == "pure":
        env["ELMSTATE_NO_EXTENSIONS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == returncode, proc.stdout + proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("elmstate ")
    assert lines[0].endswith(f", core: {core}")
    return lines[1:]


def load_example(path: Path, name: str, monkeypatch: Any) -> ModuleType:
    """Import an example script as module ``name``, for the time of one test."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module
