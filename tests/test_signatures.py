"""Both cores show the same parameters to ``inspect.signature`` (and to IDEs)."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

LOOP = ["init", "update", "view", "producer", "consumer"]


@pytest.mark.parametrize(
    "name, params",
    [("run", [*LOOP, "ctx", "replay"]), ("batch", [*LOOP, "fetcher", "ctx", "replay"])],
)
def test_entry_points(elm: ModuleType, name: str, params: list[str]) -> None:
    signature = inspect.signature(getattr(elm, name))
    assert list(signature.parameters) == params
    for keyword in ("ctx", "replay"):
        assert signature.parameters[keyword].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    "owner, method, params",
    [
        ("Buffer", "put", ["self", "ctx", "values"]),
        ("Buffer", "set_cleaner", ["self", "cleaner", "cooldown"]),
        ("Buffer", "diff", ["self", "consumer"]),
        ("BufferConsumer", "get", ["self", "ctx"]),
        ("BufferConsumer", "commit", ["self"]),
        ("Context", "wait", ["self", "timeout"]),
    ],
)
def test_methods(elm: ModuleType, owner: str, method: str, params: list[str]) -> None:
    signature = inspect.signature(getattr(getattr(elm, owner), method))
    assert list(signature.parameters) == params
