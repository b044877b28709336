"""``supervise``: ``run`` restarted after a failed tick, from the last committed model.

Built on the live core's ``run``, unchanged: the view and the consumer are
wrapped to learn which model each tick showed and which tick committed.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Generic, NoReturn

from . import _validate as check
from ._backend import core
from .typing import (
    Command,
    Consumer,
    DeadLetter,
    Init,
    Model,
    Msg,
    Producer,
    Replay,
    Update,
    View,
)

if TYPE_CHECKING:
    from ._core_py import Context
else:
    Context = core.Context  # for typing.get_type_hints at run time

_log = logging.getLogger("elmstate")


class _Ledger(Generic[Model]):
    """The supervisor's view of a run: the model the current tick showed
    (pending), the model as of the last tick that committed, and the failures
    since then."""

    __slots__ = (
        "view",
        "pending",
        "committed",
        "started",
        "holding",
        "failures",
        "streak",
        "error",
    )

    def __init__(self, view: View[Model]) -> None:
        self.view = view
        self.pending: Any = None
        self.committed: Any = None
        self.started = False  # the first attempt's first tick (init) has completed
        self.holding = False  # the tick in progress has read a message
        self.failures = 0  # failed attempts that had read the head message
        self.streak = 0  # failed attempts of any kind (and dead-letter steps): the backoff
        self.error: Exception | None = None  # the last failed attempt's at the head message

    def show(self, model: Model) -> object:
        self.pending = model  # before the user's view: a view that raises fails the tick
        return self.view(model)

    def restart(self) -> tuple[Model, Command[Any]]:
        """A restart's init: the committed model, and no commands (init's ran once)."""
        return self.committed, None


class _Supervised:
    """The loop's consumer: a commit that succeeds promotes the tick's model."""

    __slots__ = ("consumer", "ledger")

    def __init__(self, consumer: Consumer[Any], ledger: _Ledger[Any]) -> None:
        self.consumer = consumer
        self.ledger = ledger

    def get(self, ctx: Context | None) -> Any:
        ledger = self.ledger
        if not ledger.started:
            # The loop reads its first message only once the first tick (init,
            # view, init's commands and their put) is through: that is the
            # initial model, kept until a tick commits.
            ledger.started = True
            ledger.committed = ledger.pending
        message = self.consumer.get(ctx)
        ledger.holding = True
        return message

    def commit(self) -> None:
        self.consumer.commit()
        ledger = self.ledger
        ledger.committed = ledger.pending
        ledger.holding = False
        ledger.failures = ledger.streak = 0
        ledger.error = None  # not kept alive (its frames hold models) once a tick succeeds

    def rollback(self) -> None:
        self.consumer.rollback()


def supervise(
    init: Init[Model, Msg],
    update: Update[Model, Msg],
    view: View[Model],
    producer: Producer[Msg],
    consumer: Consumer[Msg],
    *,
    ctx: Context | None = None,
    replay: Replay | None = None,
    max_failures: int = 3,
    on_dead_letter: DeadLetter[Msg] | None = None,
    backoff: tuple[float, float] = (0.01, 1.0),
) -> NoReturn:
    """Run the program; after a failed tick, wait and run again from the last
    committed model, dead-lettering a message that fails ``max_failures`` times.

    A failed tick's model is never kept, even when its ``view`` already saw it:
    the consumer rolled the message back, so it is read again and applied once.
    ``init`` and its commands run once; a failure in that first tick propagates.
    After ``max_failures`` consecutive failed attempts at a message, it is read
    again, passed to ``on_dead_letter(message, exc)`` with the last attempt's
    exception, and committed. An attempt that failed before it read a message
    (``get`` itself, or a restart's ``view`` or ``put``) is retried but never
    dead-letters one. Never returns: it raises ``ctx.err`` when ``ctx`` ends,
    or whatever ``on_dead_letter`` raises.
    """
    check.program_args(init, update, view, producer, consumer)
    check.optional_callable_arg("replay", replay)
    limit = _max_failures_arg(max_failures)
    check.optional_callable_arg("on_dead_letter", on_dead_letter)
    low, high = _backoff_arg(backoff)
    ctx = core._context_arg(ctx)

    ledger: _Ledger[Model] = _Ledger(view)
    supervised = _Supervised(consumer, ledger)
    start: Init[Model, Msg] = init
    while True:
        # Each pass: dead-letter the head if it failed too often, then one attempt.
        # Waits happen outside the except blocks: a ctx.err raised there would
        # carry the tick's error (and its frames) as __context__ for ctx's lifetime.
        delay: float | None = None
        if ledger.error is not None and ledger.failures >= limit:
            try:
                refused = _dead_letter(ctx, consumer, on_dead_letter, ledger.error)
            except Exception as exc:
                _stop_if_ended(ctx, exc)
                # get or commit failed: back off, then try the dead letter again
                ledger.streak += 1
                delay = _delay(low, high, ledger.streak)
                _log.warning(
                    "elmstate.supervise: dead-lettering failed: %s; retrying in %.3gs",
                    _describe(exc),
                    delay,
                )
            else:
                if refused is not None:
                    raise refused  # on_dead_letter's own error, unchanged
                ledger.failures = ledger.streak = 0
                ledger.error = None
        if delay is None:
            try:
                core.run(start, update, ledger.show, producer, supervised, ctx=ctx, replay=replay)
            except Exception as exc:
                _stop_if_ended(ctx, exc)
                if not ledger.started:
                    raise  # init, its view, its commands or their put: nothing to go back to
                delay = _failed(ledger, exc, limit, low, high)
                if ledger.holding:
                    ledger.error = exc
                ledger.holding = False
            start = ledger.restart
        if delay is not None:
            _pause(ctx, delay)


def _failed(
    ledger: _Ledger[Any], exc: Exception, limit: int, low: float, high: float
) -> float | None:
    """Count a failed attempt and log it; returns the backoff, or None when the
    head message is to be dead-lettered now."""
    ledger.streak += 1
    if not ledger.holding:
        # No message was read (get failed, or a restart's view or put): nothing to
        # blame. A broker that is down must never get a healthy message dead-lettered.
        delay = _delay(low, high, ledger.streak)
        _log.warning(
            "elmstate.supervise: tick failed before reading a message: %s; retrying in %.3gs",
            _describe(exc),
            delay,
        )
        return delay
    ledger.failures += 1
    if ledger.failures >= limit:
        _log.warning(
            "elmstate.supervise: tick failed (attempt %d of %d): %s; dead-lettering",
            ledger.failures,
            limit,
            _describe(exc),
        )
        return None
    delay = _delay(low, high, ledger.streak)
    _log.warning(
        "elmstate.supervise: tick failed (attempt %d of %d): %s; retrying in %.3gs",
        ledger.failures,
        limit,
        _describe(exc),
        delay,
    )
    return delay


def _dead_letter(
    ctx: Context, consumer: Consumer[Any], on_dead_letter: DeadLetter[Any] | None, error: Exception
) -> Exception | None:
    """Read the message at the head, hand it to on_dead_letter, commit past it.

    Returns on_dead_letter's own error (the message rolled back, still at the
    head) for the caller to raise; an error from get or commit propagates.
    """
    message = consumer.get(ctx)
    if on_dead_letter is not None:
        try:
            on_dead_letter(message, error)
        except Exception as exc:
            _quiet_rollback(consumer)
            return exc
        except BaseException:
            _quiet_rollback(consumer)
            raise
    try:
        consumer.commit()
    except BaseException:
        _quiet_rollback(consumer)
        raise
    _log.error(
        "elmstate.supervise: dead-lettered a message (a %s) after its tick failed: %s",
        type(message).__name__,
        _describe(error),
    )
    return None


def _quiet_rollback(consumer: Consumer[Any]) -> None:
    try:
        consumer.rollback()
    except Exception:
        pass  # the error that failed the step is the one to report


def _stop_if_ended(ctx: Context, exc: Exception) -> None:
    """Once ctx has ended, supervision stops with ctx.err, whatever the tick raised
    (DeadlineExceeded is a TimeoutError: the type alone cannot tell)."""
    err = ctx.err
    if err is None:
        return
    if exc is not err:  # a failure that raced the end: not retried, only logged
        _log.warning("elmstate.supervise: tick failed as ctx ended: %s", _describe(exc))
    raise err.with_traceback(None) from None


def _delay(low: float, high: float, failures: int) -> float:
    """``low`` doubled per consecutive failure after the first, at most ``high``."""
    return min(high, low * 2.0 ** min(failures - 1, 64))


def _pause(ctx: Context, delay: float) -> None:
    """Wait ``delay`` seconds, or until ctx ends: then raise ctx.err at once."""
    if ctx.wait(delay):
        raise ctx.err.with_traceback(None)  # type: ignore[union-attr]  # ended: err is set


def _describe(exc: BaseException) -> str:
    """The error's type and where it was raised, not its text: that may quote a
    message's data or a credential (a connection string, say)."""
    tb = exc.__traceback__
    if tb is None:
        return type(exc).__qualname__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    where = os.path.basename(code.co_filename)
    return f"{type(exc).__qualname__} raised in {code.co_name} ({where}:{tb.tb_lineno})"


def _max_failures_arg(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_failures must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"max_failures must be at least 1, got {value}")
    return value


def _backoff_arg(value: Any) -> tuple[float, float]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(
            f"backoff must be a (low, high) pair of seconds, got {type(value).__name__}"
        )
    low = check.seconds_arg("backoff's low", value[0])
    high = check.seconds_arg("backoff's high", value[1])
    if low > high:
        raise ValueError(f"backoff's low must not exceed its high, got {value!r}")
    return low, high
