"""The one error tree of strict-singleton.

Every error the library raises on purpose derives from :class:`StrictSingletonError`,
so ``except StrictSingletonError`` catches "anything strict-singleton refused or
could not do". Each error carries the instance ID and the lock backend's name
(either may be ``None`` when not known yet, e.g. for a bad constructor argument)
and pickles with both, so errors cross process boundaries intact.

What each error promises about the Durable backend:

* :class:`InvalidArgumentError`, :class:`InvalidInstanceIdError`: raised before
  any lease was taken; nothing was scheduled.
* :class:`LockUnavailableError`, :class:`LeaseLostError`: nothing was scheduled
  by this call.
* :class:`AlreadyRunningError`: an active instance exists and the conflict policy is
  ``FAIL``; nothing was scheduled by this call (``existing`` holds what was seen).
* :class:`BackendError`: a Durable backend call failed. It makes no promise of its
  own; read ``maybe_scheduled`` (every error has it).
* :class:`StatusReadError` (a ``BackendError``): a status read failed before
  scheduling; nothing was scheduled by this call.
* :class:`TerminateError` (a ``BackendError``): ``TERMINATE_EXISTING`` could not
  replace the active instance in time; nothing was started by this call.
* :class:`ScheduleError` (a ``BackendError``): the schedule call itself failed.
  ``maybe_scheduled`` says whether the backend may nevertheless have created the
  instance (a timeout or a lost connection, and the instance did not show up while
  the starter watched for it); when it is ``False`` nothing was scheduled.

Retry rule: ``except StrictSingletonError as e: if not e.maybe_scheduled: retry``
is always safe; after ``maybe_scheduled=True`` read the instance's status first.
"""

from __future__ import annotations

from typing import Any


class StrictSingletonError(Exception):
    """Root of every error raised by strict-singleton.

    Attributes:
        instance_id: the orchestration instance ID the call was about, if known.
        backend: the lock backend's display name (never a secret), if known.
        maybe_scheduled: whether the Durable backend may have created an instance
            because of this call. ``False`` on every error except an ambiguous
            :class:`ScheduleError`, so a caller can decide whether a retry is safe
            without knowing the class.
    """

    maybe_scheduled: bool = False

    def __init__(self, message: str, *, instance_id: str | None = None, backend: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.instance_id = instance_id
        self.backend = backend

    def _extra(self) -> dict[str, Any]:
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default Exception pickling.
        kwargs = {"instance_id": self.instance_id, "backend": self.backend, **self._extra()}
        return (_rebuild, (type(self), self.message, kwargs))

    def __str__(self) -> str:
        parts = [self.message]
        if self.instance_id is not None:
            parts.append(f"instance_id={self.instance_id!r}")
        if self.backend is not None:
            parts.append(f"backend={self.backend}")
        return " ".join([parts[0], *(f"[{p}]" for p in parts[1:])]) if len(parts) > 1 else parts[0]


def _rebuild(cls: type[StrictSingletonError], message: str, kwargs: dict[str, Any]) -> StrictSingletonError:
    return cls(message, **kwargs)


class InvalidArgumentError(StrictSingletonError, ValueError):
    """A constructor or call argument is invalid. Raised before any lease is taken."""


class InvalidInstanceIdError(InvalidArgumentError):
    """The instance ID is empty, padded, contains control characters or is too long."""


class AlreadyRunningError(StrictSingletonError):
    """An active instance exists and the call's conflict policy is ``FAIL``.

    Nothing was scheduled by this call. ``existing`` holds the state that was seen.
    """

    def __init__(
        self, message: str, *, instance_id: str | None = None, backend: str | None = None, existing: Any = None
    ) -> None:
        super().__init__(message, instance_id=instance_id, backend=backend)
        self.existing = existing

    def _extra(self) -> dict[str, Any]:
        return {"existing": self.existing}


class LockUnavailableError(StrictSingletonError):
    """The lock store could not be reached or answered with an error.

    Strict-singleton fails closed: nothing was scheduled by the call that raised this.
    """


class LeaseLostError(StrictSingletonError):
    """The lease expired, may have expired, or was taken by someone else before scheduling.

    Nothing was scheduled by the call that raised this.
    """


class BackendError(StrictSingletonError):
    """A Durable Task backend call failed.

    No promise of its own about scheduling: :class:`StatusReadError` says nothing was
    scheduled, :class:`ScheduleError` says so only when ``maybe_scheduled`` is ``False``.
    """


class StatusReadError(BackendError):
    """A status read failed before scheduling. Nothing was scheduled by this call."""


class TerminateError(BackendError):
    """``on_conflict=TERMINATE_EXISTING`` could not replace the active instance: the
    terminate call failed, or the instance did not show as finished within
    ``terminate_timeout``. Nothing was started by this call (the instance may still
    end later, as the backend processes the termination)."""


class SignalError(BackendError):
    """``start_or_signal`` could not raise its event.

    Attributes:
        maybe_delivered: whether the backend may nevertheless have received the event
            (a timeout or a lost connection); ``False``: it was not delivered.
        started: whether this call created the instance before the event failed (then
            ``maybe_scheduled`` is ``True`` too: the instance exists because of this call).
    """

    def __init__(
        self,
        message: str,
        *,
        instance_id: str | None = None,
        backend: str | None = None,
        maybe_delivered: bool = False,
        started: bool = False,
    ) -> None:
        super().__init__(message, instance_id=instance_id, backend=backend)
        self.maybe_delivered = maybe_delivered
        self.started = started
        self.maybe_scheduled = started

    def _extra(self) -> dict[str, Any]:
        return {"maybe_delivered": self.maybe_delivered, "started": self.started}


class ScheduleError(BackendError):
    """The schedule call failed.

    Attributes:
        maybe_scheduled: ``True`` when the failure is ambiguous (deadline exceeded,
            connection lost, cancelled) *and* the instance did not show up while the
            starter watched for it for ``ambiguity_timeout`` seconds (plus
            ``visibility_timeout`` with the visibility hold), holding the lease:
            the backend may still create it (a request queued in the backend can
            execute later). ``False``: nothing was scheduled.
        grpc_code: the gRPC status code name, when the failure came from gRPC.
    """

    def __init__(
        self,
        message: str,
        *,
        instance_id: str | None = None,
        backend: str | None = None,
        maybe_scheduled: bool = False,
        grpc_code: str | None = None,
    ) -> None:
        super().__init__(message, instance_id=instance_id, backend=backend)
        self.maybe_scheduled = maybe_scheduled
        self.grpc_code = grpc_code

    def _extra(self) -> dict[str, Any]:
        return {"maybe_scheduled": self.maybe_scheduled, "grpc_code": self.grpc_code}


__all__ = [
    "AlreadyRunningError",
    "SignalError",
    "TerminateError",
    "BackendError",
    "InvalidArgumentError",
    "InvalidInstanceIdError",
    "LeaseLostError",
    "LockUnavailableError",
    "ScheduleError",
    "StatusReadError",
    "StrictSingletonError",
]
