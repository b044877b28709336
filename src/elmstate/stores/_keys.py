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
