from __future__ import annotations

from typing import Any

from .. import _validate as check


def key_value(key: Any, value: Any) -> bytes:
    """Check a store() call's arguments; returns the value as bytes."""
    check.key_arg("key", key)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, bytes):
        raise TypeError(f"value must be bytes, got {type(value).__name__}")
    return value
