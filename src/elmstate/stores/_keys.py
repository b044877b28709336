from __future__ import annotations

from typing import Any

from .. import _validate as check


def key_value(key: Any, value: Any) -> bytes:
    """Check a store() call's arguments; returns the value as bytes."""
    check.key_arg("key", key)
    return check.bytes_value(value, "value must be bytes")
