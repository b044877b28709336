"""The two cores expose the same public names, with the same signatures and defaults,
and those signatures are the documented ones.

Annotations are left out of the comparison (the compiled core has none at run
time); names, kinds and defaults are what a caller, ``inspect`` or an IDE sees.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any

import pytest
from conftest import CORES, PURE_ONLY

pytestmark = pytest.mark.skipif(PURE_ONLY, reason="needs both cores: ELMSTATE_NO_EXTENSIONS is set")

# Methods a user calls, beside the public names: the context-manager protocol and len.
DUNDERS = ("__enter__", "__exit__", "__len__", "__class_getitem__")


def core_of(name: str) -> ModuleType:
    package = CORES[name]
    if isinstance(package, str):
        pytest.fail(package)
    return package._backend.core  # type: ignore[no-any-return]


def shape(obj: Any, *, bound: bool = False) -> list[tuple[str, Any, Any]]:
    """``obj``'s parameters as (name, kind, default), ``self`` left out for methods."""
    parameters = list(inspect.signature(obj).parameters.values())
    if bound:
        assert parameters[0].name == "self", parameters
        parameters = parameters[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


def public(core: ModuleType) -> set[str]:
    """The names a core defines (not imports) without a leading underscore."""
    return {
        name
        for name, value in vars(core).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == core.__name__
    }


def test_both_cores_define_the_same_public_names() -> None:
    compiled, pure = core_of("compiled"), core_of("pure")
    assert sorted(compiled.__all__) == sorted(pure.__all__)
    assert public(compiled) == public(pure) == set(pure.__all__)


def test_the_package_exposes_the_same_names_on_either_core() -> None:
    compiled, pure = CORES["compiled"], CORES["pure"]
    assert isinstance(compiled, ModuleType) and isinstance(pure, ModuleType)
    assert sorted(compiled.__all__) == sorted(pure.__all__)
    assert {n for n in dir(compiled) if not n.startswith("_")} == {
        n for n in dir(pure) if not n.startswith("_")
    }
    for name in pure.__all__:
        assert hasattr(compiled, name) and hasattr(pure, name), name


@pytest.mark.parametrize("name", ["run", "batch"])
def test_functions(name: str) -> None:
    compiled, pure = core_of("compiled"), core_of("pure")
    assert shape(getattr(compiled, name)) == shape(getattr(pure, name))


@pytest.mark.parametrize("name", ["Context", "Buffer"])
def test_constructors(name: str) -> None:
    compiled, pure = core_of("compiled"), core_of("pure")
    assert shape(getattr(compiled, name)) == shape(getattr(pure, name))


def methods(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") or n in DUNDERS}


@pytest.mark.parametrize("name", ["Context", "Buffer", "BufferConsumer"])
def test_methods_and_properties(name: str) -> None:
    compiled = getattr(core_of("compiled"), name)
    pure = getattr(core_of("pure"), name)
    assert methods(compiled) == methods(pure)
    for method in sorted(methods(pure)):
        c, p = inspect.getattr_static(compiled, method), inspect.getattr_static(pure, method)
        if isinstance(p, property):  # a read-only attribute on both
            assert inspect.isdatadescriptor(c) and not callable(c), method
            continue
        if method == "__class_getitem__":
            continue  # a classmethod on both; tests/test_typing.py checks what it returns
        assert shape(getattr(compiled, method), bound=True) == shape(
            getattr(pure, method), bound=True
        ), method


def instances(core: ModuleType) -> dict[str, object]:
    buffer = core.Buffer()
    return {"Context": core.Context(), "Buffer": buffer, "BufferConsumer": buffer.new_consumer()}


@pytest.mark.parametrize("name", ["Context", "Buffer", "BufferConsumer"])
def test_bound_methods(name: str) -> None:
    """What a caller's IDE shows for ``buf.put``: no ``self`` on either core."""
    compiled = instances(core_of("compiled"))[name]
    pure = instances(core_of("pure"))[name]
    for method in sorted(methods(type(pure))):
        p = getattr(pure, method)
        if not inspect.ismethod(p) or method == "__class_getitem__":
            continue  # a property's value
        assert shape(getattr(compiled, method)) == shape(p), method


def test_the_aggregate_module_is_private() -> None:
    """``elmstate.aggregate`` is the function; its module is ``elmstate._aggregate``."""
    import elmstate

    assert callable(elmstate.aggregate) and not isinstance(elmstate.aggregate, ModuleType)
    assert importlib.import_module("elmstate._aggregate").aggregate is elmstate.aggregate
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("elmstate.aggregate")


# ------------------------------------------------------------- each core, as documented

LOOP = ["init", "update", "view", "producer", "consumer"]


@pytest.mark.parametrize(
    "name, params",
    [("run", [*LOOP, "ctx", "replay"]), ("batch", [*LOOP, "fetcher", "ctx", "replay", "feed"])],
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
