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
