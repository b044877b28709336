"""Exception types shared by both cores (one set of classes, whichever core is live)."""

from __future__ import annotations


class Canceled(Exception):
    """A :class:`~elmstate.Context` ended because it was cancelled."""


class DeadlineExceeded(Canceled, TimeoutError):
    """A :class:`~elmstate.Context` ended because its timeout elapsed."""


class Closed(Exception):
    """The :class:`~elmstate.Buffer` or consumer was closed."""


class Lagged(LookupError):
    """The cleaner dropped messages that this consumer had not read yet.

    The consumer stays in this state: every later ``get`` raises again. Close it
    and open a new one to resume from the oldest message the buffer still holds.
    """


class NothingUncommitted(RuntimeError):
    """``commit()`` or ``rollback()`` was called with no uncommitted reads."""


class Conflict(Exception):
    """A versioned save found another version than the one it was based on.

    Raised by ``store_versioned`` (and so by :func:`~elmstate.aggregate` on a
    versioned store) when another writer saved ``key`` since it was loaded:
    ``expected`` is the version the save was based on, ``actual`` the version
    found. Nothing was stored; load again and redo the work to retry.
    """

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(key, expected, actual)
        self.key = key
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return (
            f"conflict on key {self.key!r}: the save expected version {self.expected}, "
            f"the store has version {self.actual}"
        )
