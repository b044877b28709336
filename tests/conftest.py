"""Every test that takes ``elm`` runs twice: against the compiled and the pure core.

``elm`` is the top-level ``elmstate`` package as imported with that core live.
Both generations are imported once per session; the compiled one stays in
``sys.modules`` (so a plain ``import elmstate`` sees it), the pure one is
reached through the fixture. With ``ELMSTATE_NO_EXTENSIONS`` set the compiled leg
is skipped; otherwise a compiled core that fails to import fails that leg.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _modes import MODES, AioElm

PURE_ONLY = bool(os.environ.get("ELMSTATE_NO_EXTENSIONS"))


def _elmstate_modules() -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in sys.modules.items()
        if name == "elmstate" or name.startswith("elmstate.")
    }


def _import_generation(pure: bool) -> ModuleType:
    for name in _elmstate_modules():
        if name != "elmstate._core":  # a C extension is initialised once per process
            del sys.modules[name]
    saved = os.environ.pop("ELMSTATE_NO_EXTENSIONS", None)
    if pure:
        os.environ["ELMSTATE_NO_EXTENSIONS"] = "1"
    try:
        package = importlib.import_module("elmstate")
        # elmstate.redis binds the generation's aggregate, the server stores its
        # Conflict, elmstate.aio its core: elm.aio, elm.redis and
        # elm.stores.postgres/redis are the generation's own.
        for module in (
            "elmstate.aio",
            "elmstate.redis",
            "elmstate.stores.postgres",
            "elmstate.stores.redis",
        ):
            try:
                importlib.import_module(module)
            except ImportError:  # a client missing: the tests that need it skip
                pass
        return package
    finally:
        os.environ.pop("ELMSTATE_NO_EXTENSIONS", None)
        if saved is not None:
            os.environ["ELMSTATE_NO_EXTENSIONS"] = saved


def _load_cores() -> dict[str, ModuleType | str]:
    cores: dict[str, ModuleType | str] = {}
    pure = _import_generation(pure=True)
    assert not pure.compiled
    cores["pure"] = pure
    if PURE_ONLY:
        cores["compiled"] = "skipped: ELMSTATE_NO_EXTENSIONS is set"
        return cores
    compiled = _import_generation(pure=False)  # imported last: it stays in sys.modules
    if not compiled.compiled:
        try:
            importlib.import_module("elmstate._core")
        except ImportError as exc:
            cores["compiled"] = f"the compiled core failed to import: {exc!r}"
        else:
            cores["compiled"] = "the compiled core imports but was not selected"
    else:
        cores["compiled"] = compiled
    return cores


CORES = _load_cores()


@pytest.fixture(scope="session")
def elm_mode() -> str:
    """How ``elm``'s run, batch and aggregate run: "sync" unless the module sets
    ``AIO_MODES`` (then also "asyncio" and "uvloop": tests/_modes.py)."""
    return "sync"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "elm" in metafunc.fixturenames and getattr(metafunc.module, "AIO_MODES", False):
        metafunc.parametrize("elm_mode", MODES, scope="session")


@pytest.fixture(
    scope="session",
    params=[pytest.param("compiled", marks=pytest.mark.compiled), "pure"],
)
def elm(request: pytest.FixtureRequest, elm_mode: str) -> Iterator[Any]:
    core = CORES[request.param]
    if isinstance(core, str):
        if PURE_ONLY:
            pytest.skip(core)
        pytest.fail(core)
    yield core if elm_mode == "sync" else AioElm(core, elm_mode)


@pytest.fixture(params=["memory", "sqlite"])
def store(elm: ModuleType, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A test that takes ``store`` runs over a MemoryStore and over an SQLiteStore."""
    if request.param == "memory":
        yield elm.MemoryStore()
    else:
        with elm.SQLiteStore(tmp_path / "snapshots.sqlite3") as sqlite:
            yield sqlite


class Hang(Exception):
    """Raised in the main thread by the watchdog."""


@pytest.fixture(autouse=True)
def watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Turn a hang of the main thread (say, a get that never wakes) into a failure.

    SIGALRM interrupts a blocked lock acquire on POSIX and its handler raises
    there. A test module may set ``WATCHDOG`` (seconds) to change the default 60.
    """
    seconds = float(getattr(request.module, "WATCHDOG", 60.0))
    main = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "setitimer") or not main:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"the test was still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``sync_only`` runs in the synchronous mode only (tests/_modes.py):
    its other modes are deselected, not skipped."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("elm_mode") if callspec is not None else None
        if mode not in (None, "sync") and item.get_closest_marker("sync_only"):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
