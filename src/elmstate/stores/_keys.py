"""Argument checks every store shares, so that all of them word their errors alike."""

from __future__ import annotations

from typing import Any

from .. import _validate as check


def key_value(key: Any, value: Any) -> bytes:
    """Check a store() call's arguments; returns the value as bytes."""
    check.key_arg("key", key)
    return check.bytes_value(value, "value must be bytes")


def version_arg(version: Any) -> int:
    """A store_versioned() version: an int (not a bool), 0 or more."""
    if type(version) is bool or not isinstance(version, int):
        raise TypeError(f"version must be an int, got {type(version).__name__}")
    if version < 0:
        raise ValueError(f"version must be 0 (absent) or more, got {version}")
    return int(version)


def keys_arg(keys: Any) -> list[str]:
    """A load_many_versioned() key list: an iterable (not a str or bytes) of
    distinct str keys; returns them as a list."""
    given = _sequence("keys", keys, "str keys")
    for i, key in enumerate(given):
        if not isinstance(key, str):
            raise TypeError(f"keys[{i}] must be a str, got {type(key).__name__}")
    _distinct("keys", given)
    return given


def items_arg(items: Any) -> tuple[list[str], list[bytes], list[int]]:
    """A store_many_versioned() item list: an iterable of ``(key, value, version)``
    with distinct keys; returns the keys, the values (as bytes) and the versions."""
    keys: list[str] = []
    values: list[bytes] = []
    versions: list[int] = []
    for i, item in enumerate(_sequence("items", items, "(key, value, version) tuples")):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            shape = f"a {len(item)}-tuple" if isinstance(item, (tuple, list)) else None
            raise TypeError(
                f"items[{i}] must be a (key, value, version) tuple, "
                f"got {shape or type(item).__name__}"
            )
        key, value, version = item
        try:
            values.append(key_value(key, value))
            versions.append(version_arg(version))
        except (TypeError, ValueError) as exc:
            error = type(exc)(f"items[{i}]: {exc}")
        else:
            keys.append(key)
            continue
        raise error  # outside the except block: the message says it all
    _distinct("items", keys)
    return keys, values, versions


def _sequence(name: str, given: Any, of: str) -> list[Any]:
    # A str is an iterable of str, and bytes one of ints: surely a mistake here.
    if isinstance(given, check.TEXT):
        raise TypeError(f"{name} must be a sequence of {of}, got {type(given).__name__}")
    try:
        return list(given)
    except TypeError:
        pass
    raise TypeError(f"{name} must be a sequence of {of}, got {type(given).__name__}")


def _distinct(name: str, keys: list[str]) -> None:
    if len(set(keys)) == len(keys):
        return
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            raise ValueError(
                f"{name}[{i}] repeats the key {key!r:.100} of {name}[{first[key]}]: "
                "each key may be given once"
            )
        first[key] = i
