"""Keeping passwords out of what a store shows: its repr and the errors it raises.

The drivers' own messages do not quote passwords as a rule, but some parse
errors quote the whole connection string (libpq does for a malformed URI), so
every error raised while connecting passes through :func:`redacted` first.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)

MASK = "***"


def redacted(exc: E, secret: str | None) -> E:
    """``exc`` itself when it does not quote ``secret``; else a new exception of
    the same type whose message has the secret masked.

    Raise the result outside the ``except`` block that caught ``exc``: raised
    inside it, the original would ride along as ``__context__``.
    """
    if not secret or (secret not in str(exc) and secret not in repr(exc.args)):
        return exc
    message = str(exc).replace(secret, MASK)
    try:
        clean = type(exc)(message)
    except Exception:  # an exception type that takes other arguments
        clean = RuntimeError(f"{type(exc).__name__}: {message}")  # type: ignore[assignment]
    return clean
