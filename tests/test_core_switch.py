"""ELMSTATE_NO_EXTENSIONS really switches the core (frozenlist's re-import test).

Each test re-imports ``elmstate`` from scratch: every ``elmstate`` module is
removed from ``sys.modules`` through ``monkeypatch`` (so the originals come back
afterwards), except the C extension itself, which CPython initialises only once
per process; the chooser finds it in ``sys.modules`` as an import would.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Callable

import pytest
from conftest import PURE_ONLY

Reimport = Callable[[], ModuleType]


@pytest.fixture
def reimport(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reimport]:
    def is_ours(name: str) -> bool:
        return name == "elmstate" or name.startswith("elmstate.")

    original = {name for name in sys.modules if is_ours(name)}

    def do() -> ModuleType:
        for name in [n for n in sys.modules if is_ours(n)]:
            if name != "elmstate._core":
                monkeypatch.delitem(sys.modules, name)
        return importlib.import_module("elmstate")

    yield do
    # monkeypatch puts the original modules back after this; drop the ones that
    # only the re-import brought in, so nothing of it lingers either (but the C
    # extension: once initialised, it stays, as conftest keeps it too).
    for name in [n for n in sys.modules if is_ours(n) and n not in original]:
        if name != "elmstate._core":
            del sys.modules[name]


def test_env_var_selects_the_pure_core(monkeypatch: pytest.MonkeyPatch, reimport: Reimport) -> None:
    monkeypatch.setenv("ELMSTATE_NO_EXTENSIONS", "1")
    elmstate = reimport()
    assert elmstate.compiled is False
    assert elmstate.run.__module__ == "elmstate._core_py"
    assert elmstate.batch.__module__ == "elmstate._core_py"
    assert elmstate.Buffer.__module__ == "elmstate._core_py"
    assert elmstate.Context.__module__ == "elmstate._core_py"
    assert elmstate.core is sys.modules["elmstate._core_py"]


def test_without_the_env_var_the_compiled_core_is_used(
    monkeypatch: pytest.MonkeyPatch, reimport: Reimport
) -> None:
    monkeypatch.delenv("ELMSTATE_NO_EXTENSIONS", raising=False)
    if sys.implementation.name != "cpython":
        pytest.skip("the compiled core is CPython-only")
    elmstate = reimport()
    try:
        importlib.import_module("elmstate._core")
    except ImportError as exc:
        if PURE_ONLY:
            pytest.skip(f"the compiled core is not built: {exc!r}")
        pytest.fail(f"the compiled core failed to import: {exc!r}")
    assert elmstate.compiled is True
    assert elmstate.run.__module__ == "elmstate._core"
    assert elmstate.batch.__module__ == "elmstate._core"
    assert elmstate.Buffer.__module__ == "elmstate._core"
    assert elmstate.Context.__module__ == "elmstate._core"


def test_a_missing_extension_falls_back_to_the_pure_core(
    monkeypatch: pytest.MonkeyPatch, reimport: Reimport
) -> None:
    monkeypatch.delenv("ELMSTATE_NO_EXTENSIONS", raising=False)
    monkeypatch.setitem(sys.modules, "elmstate._core", None)  # makes its import fail
    elmstate = reimport()
    assert elmstate.compiled is False
    assert elmstate.run.__module__ == "elmstate._core_py"
    assert elmstate.Buffer.__module__ == "elmstate._core_py"


def test_the_env_var_is_read_at_import_only(
    monkeypatch: pytest.MonkeyPatch, reimport: Reimport
) -> None:
    monkeypatch.setenv("ELMSTATE_NO_EXTENSIONS", "1")
    elmstate = reimport()
    monkeypatch.delenv("ELMSTATE_NO_EXTENSIONS")
    assert elmstate.compiled is False  # unchanged until the next fresh import


def test_the_session_modules_are_untouched_by_the_reimports() -> None:
    # Runs after the tests above (file order): the package the rest of the suite
    # imports is the one the session started with, with a consistent core.
    elmstate = importlib.import_module("elmstate")
    expected = "elmstate._core" if elmstate.compiled else "elmstate._core_py"
    assert elmstate.run.__module__ == expected
    assert sys.modules["elmstate._backend"].core is elmstate.core
