"""The explorer's mutants: the flow broken on purpose, one known bug at a time.

A mutant re-creates one bug that was fixed in ``strict_singleton._flow`` (or a protection the
flow relies on, taken away): while the explorer searches the safe configuration named for it,
its ``patch`` swaps one private function of ``_flow`` for a broken variant, or its ``world``
and ``starter`` options turn on a broken behaviour of the simulated world or a weaker
starter option (see :class:`strict_singleton.testing.explore.Mutant`). The search must find
a schedule that violates an invariant: the mutant is then *killed*. A mutant that survives
means the explorer can no longer see that bug, so a regression of the fix would pass.

The rule: every bug fixed in the flow gets one mutant here that re-creates it, and every
mutant must be killed (``tests/test_explore.py``, and the explorer step of .ci/run).

``MUTANTS`` maps each mutant's name to it. ``strict-singleton explore --mutants
tests/explorer_mutants.py`` runs them all (``--mutant NAME`` one of them; ``--list`` lists
them). Every swap replaces an attribute of one ``_flow`` submodule (``keeping.keep``,
``watch.watch``, ...): the flow's modules call one another through module attributes, so the
swap reaches every caller; a renamed or moved function shows up here, in one file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from strict_singleton import _flow
from strict_singleton.errors import TerminateError
from strict_singleton.lock_backends.base import RequestRecord
from strict_singleton.testing.explore import Mutant


@contextlib.contextmanager
def _patched(target: Any, name: str, value: Any) -> Iterator[None]:
    """``target.name`` is ``value`` while the search runs, and the real one again after it."""
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


def _no_patch() -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def _keep_without_confirmation() -> contextlib.AbstractContextManager[Any]:
    real = _flow.keeping.keep

    def keep(ctx: Any, lease: Any, *, confirm: bool) -> Any:
        if confirm:
            yield from _nothing()
            return None
        return (yield from real(ctx, lease, confirm=confirm))

    return _patched(_flow.keeping, "keep", keep)


def _nothing() -> Iterator[Any]:
    """``yield from _nothing()`` makes a replacement a generator, as the flow's steps are, that yields no operation."""
    yield from ()


def _release_on_ambiguity() -> contextlib.AbstractContextManager[Any]:
    def watch(ctx: Any, lease: Any) -> Any:
        yield from _nothing()
        return None, None

    return _patched(_flow.watch, "watch", watch)


def _renew_after_expiry() -> contextlib.AbstractContextManager[Any]:
    real_remaining = _flow.LeaseClock.remaining

    def remaining(self: Any, now: float) -> float | None:
        value = real_remaining(self, now)
        return value if value is None or value > 0 else 1e-9  # "still valid": renew it anyway

    return _patched(_flow.LeaseClock, "remaining", remaining)


def _claim_unconfirmed() -> contextlib.AbstractContextManager[Any]:
    def confirm(ctx: Any, lease: Any) -> Any:
        yield from _nothing()
        return None

    return _patched(_flow.keeping, "confirm_while_watching", confirm)


def _ignore_start_record() -> contextlib.AbstractContextManager[Any]:
    def await_record(ctx: Any, lease: Any, record: Any, state: Any) -> Any:
        yield from _nothing()
        return state

    return _patched(_flow.start_records, "await_record", await_record)


def _no_record_before_watch() -> contextlib.AbstractContextManager[Any]:
    def record_start(ctx: Any, lease: Any, ttl: float) -> Any:
        yield from _nothing()

    return _patched(_flow.start_records, "record_start", record_start)


def _no_tombstone() -> contextlib.AbstractContextManager[Any]:
    real = _flow.request_records.write_start

    def write_start(ctx: Any, request_id: Any, **kw: Any) -> Any:
        if request_id is None:  # a start without a request ID leaves the earlier record in place
            yield from _nothing()
            return None
        return (yield from real(ctx, request_id, **kw))

    return _patched(_flow.request_records, "write_start", write_start)


def _retry_unconfirmed() -> contextlib.AbstractContextManager[Any]:
    def confirm_retry(ctx: Any, lease: Any) -> Any:
        yield from _nothing()

    return _patched(_flow.retry, "_confirm_retry", confirm_retry)


def _signal_displaces_start() -> contextlib.AbstractContextManager[Any]:
    real = _flow.request_records._base_record

    def base_record(ctx: Any) -> Any:
        return replace(real(ctx), request_id=None)  # a signal forgets the start it does not create

    return _patched(_flow.request_records, "_base_record", base_record)


def _dedupe_unseen() -> contextlib.AbstractContextManager[Any]:
    return _patched(_flow.evidence, "created_by_request", lambda state, record, skew: True)


def _record_drops_newest() -> contextlib.AbstractContextManager[Any]:
    real = RequestRecord.encode

    def encode(self: RequestRecord) -> str:
        return real(replace(self, signals=tuple(reversed(self.signals))))  # the newest entries are left out first

    return _patched(RequestRecord, "encode", encode)


def _plain_release_on_cancel() -> contextlib.AbstractContextManager[Any]:
    def let_go(ctx: Any) -> Any:
        ctx.progress.started = None
        if ctx.progress.may_hold:
            yield from _flow.keeping.release(ctx)  # no start record, whatever happened before

    return _patched(_flow.finish, "let_go", let_go)


def _event_before_record() -> contextlib.AbstractContextManager[Any]:
    real = _flow.start_records.record_start

    def record_start(ctx: Any, lease: Any, ttl: float) -> Any:
        if ctx.progress.started is not None:  # after the schedule's answer: raise the event first
            yield from _nothing()
            return None
        return (yield from real(ctx, lease, ttl))

    return _patched(_flow.start_records, "record_start", record_start)


def _one_second_unchecked() -> contextlib.AbstractContextManager[Any]:
    return _patched(_flow.evidence, "same_second_as_replaced", lambda state, record: False)


def _terminate_by_clock() -> contextlib.AbstractContextManager[Any]:
    def began_with(ctx: Any, state: Any) -> bool:
        # an instance created after the call began, allowing clock_skew, is the wave's
        began_us = _flow.epoch_us(ctx.wall_clock()) - round((ctx.clock() - ctx.t0) * 1_000_000)
        created = _flow.created_us(state)
        return created is None or created < began_us - round(ctx.cfg.clock_skew * 1_000_000)

    return _patched(_flow.terminate, "_began_with", began_with)


def _terminate_variant(*, confirm: bool, watch: bool) -> Callable[..., Any]:
    """``_flow.terminate.terminate`` with its lease confirmation or its watch after an ambiguous answer taken out."""
    real = _flow.terminate.terminate

    def terminate(ctx: Any, lease: Any, state: Any) -> Any:
        if confirm and watch:
            return (yield from real(ctx, lease, state))
        if confirm:
            reason = yield from _flow.keeping.keep(ctx, lease, confirm=True)
            if reason is not None:
                raise ctx.lost(reason)
        window = max(ctx.call.terminate_timeout, ctx.cfg.ambiguity_timeout)
        ctx.progress.terminating = None if not watch else ctx.clock() + window
        try:
            yield _flow.Terminate(ctx.iid, "mutant", _flow.context.send_by(ctx))
        except Exception as exc:
            if not watch:
                raise TerminateError(f"terminate failed: {exc}", instance_id=ctx.iid, backend=ctx.backend) from exc
        current, ended = yield from _flow.keeping.reread_until(
            ctx, lease, ctx.clock() + window, lambda s: not _flow.is_active(s), waiting_for="end"
        )
        ctx.progress.terminating = None
        if not ended:
            raise TerminateError("did not end", instance_id=ctx.iid, backend=ctx.backend)
        return current

    return terminate


def _terminate_unconfirmed() -> contextlib.AbstractContextManager[Any]:
    return _patched(_flow.terminate, "terminate", _terminate_variant(confirm=False, watch=True))


def _terminate_unwatched() -> contextlib.AbstractContextManager[Any]:
    return _patched(_flow.terminate, "terminate", _terminate_variant(confirm=True, watch=False))


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in [
        Mutant("no-lease", "the store grants every acquire", "overwrite", _no_patch, world={"no_lease": True}),
        Mutant(
            "no-validity-check",
            "no confirmation before scheduling and the driver ignores send-by: a pause after the last check",
            "overwrite",
            _keep_without_confirmation,
            world={"ignore_send_by": True},
        ),
        Mutant(
            "no-confirmation",
            "no confirmation after a slow read: the lease lost during the read goes unseen",
            "overwrite",
            _keep_without_confirmation,
        ),
        Mutant(
            "no-visibility-hold",
            "release as soon as the schedule returns",
            "eventual",
            _no_patch,
            starter={"confirm_visible": False},
        ),
        Mutant(
            "ignore-start-record",
            "the next holder acts on a read that does not show the recorded start yet",
            "eventual",
            _ignore_start_record,
        ),
        Mutant(
            "no-record-before-watch",
            "after an ambiguous failure, watch without leaving a start record",
            "eventual-long-lag",
            _no_record_before_watch,
        ),
        Mutant(
            "no-tombstone",
            "a start without a request ID leaves an earlier request's record in place (row 23)",
            "requests",
            _no_tombstone,
        ),
        Mutant(
            "retry-unconfirmed",
            "a retry claims its request's instance on a read made after its lease may have expired (row 23)",
            "requests",
            _retry_unconfirmed,
        ),
        Mutant(
            "signal-displaces-start",
            "a start_or_signal that signals replaces the record of the start before it",
            "requests-signal",
            _signal_displaces_start,
        ),
        Mutant(
            "dedupe-unseen",
            "a retry claims its request's instance without a read that shows it (row 23)",
            "requests",
            _dedupe_unseen,
        ),
        Mutant(
            "record-drops-newest",
            "a full request record leaves out the signal entry just written (large request IDs)",
            "records-full",
            _record_drops_newest,
        ),
        Mutant(
            "plain-release-on-cancel",
            "a call cancelled after its start releases without leaving the start record",
            "signals",
            _plain_release_on_cancel,
        ),
        Mutant(
            "event-before-record",
            "start_or_signal raises its event before leaving the start record",
            "signals",
            _event_before_record,
        ),
        Mutant(
            "one-second-unchecked",
            "a retry on one-second creation times takes its own instance for the one it replaced",
            "one-second",
            _one_second_unchecked,
        ),
        Mutant(
            "terminate-by-clock",
            "TERMINATE_EXISTING takes an instance created within clock_skew of the call's start as the wave's",
            "terminate-young",
            _terminate_by_clock,
        ),
        Mutant(
            "terminate-unconfirmed",
            "TERMINATE_EXISTING sends its terminate on a read that may have outlived the lease",
            "terminate-young",
            _terminate_unconfirmed,
        ),
        Mutant(
            "terminate-unwatched",
            "TERMINATE_EXISTING lets go at once after a terminate whose answer was cut at its deadline",
            "terminate-young",
            _terminate_unwatched,
        ),
        Mutant(
            "no-reuse-policy",
            "requests may replace active instances (terminate-and-replace)",
            "atomic",
            _no_patch,
            world={"replace_active": True, "no_lease": True},
        ),
        Mutant(
            "release-on-ambiguous-failure",
            "release at once after DEADLINE_EXCEEDED: a delayed request lands after the lease",
            "overwrite",
            _release_on_ambiguity,
        ),
        Mutant(
            "renew-after-expiry",
            "renew a lease whose deadline passed (on a store that allows it, as Blob does)",
            "overwrite",
            _renew_after_expiry,
            world={"lenient_renew": True},
        ),
        Mutant(
            "claim-unconfirmed",
            "after an ambiguous failure, claim an instance without confirming the lease",
            "overwrite",
            _claim_unconfirmed,
        ),
        Mutant(
            "queued-finish",
            "the finish (recording release or visibility hold) waits in a queue past the TTL (backlogged finishes)",
            "eventual-long-lag",
            _no_patch,
            world={"queued_finish": True},
        ),
    ]
}
