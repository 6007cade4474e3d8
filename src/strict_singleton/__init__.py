"""strict-singleton: start a Durable Task orchestration under a fixed instance ID exactly once.

>>> from strict_singleton import SingletonStarter
>>> starter = SingletonStarter(client, lock=RedisLease(redis_client))      # doctest: +SKIP
>>> result = starter.start(my_orchestrator, instance_id="nightly-report")  # doctest: +SKIP
>>> result.outcome                                                          # doctest: +SKIP
<StartOutcome.STARTED: 'started'>
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public names load lazily (PEP 562), so that importing a submodule, such as the pytest
# plugin ``strict_singleton.testing.plugin`` that pytest loads in every session of a
# project that installs us, does not pay for durabletask and gRPC.
_EXPORTS = {
    "FENCING_TAG": "strict_singleton._validation",
    "MAX_INSTANCE_ID_LENGTH": "strict_singleton._validation",
    "validate_instance_id": "strict_singleton._validation",
    "AsyncSingletonStarter": "strict_singleton.async_starter",
    "SingletonStarter": "strict_singleton.starter",
    "StarterOptions": "strict_singleton.options",
    "Transport": "strict_singleton.transport",
    "StartOutcome": "strict_singleton.result",
    "StartResult": "strict_singleton.result",
    "AlreadyRunningError": "strict_singleton.errors",
    "BackendError": "strict_singleton.errors",
    "ConflictPolicy": "strict_singleton.policies",
    "ReusePolicy": "strict_singleton.policies",
    "InvalidArgumentError": "strict_singleton.errors",
    "InvalidInstanceIdError": "strict_singleton.errors",
    "LeaseLostError": "strict_singleton.errors",
    "LockUnavailableError": "strict_singleton.errors",
    "ScheduleError": "strict_singleton.errors",
    "StatusReadError": "strict_singleton.errors",
    "SignalError": "strict_singleton.errors",
    "StrictSingletonError": "strict_singleton.errors",
    "TerminateError": "strict_singleton.errors",
}

if TYPE_CHECKING:
    from strict_singleton._validation import FENCING_TAG, MAX_INSTANCE_ID_LENGTH, validate_instance_id
    from strict_singleton.async_starter import AsyncSingletonStarter
    from strict_singleton.errors import (
        AlreadyRunningError,
        BackendError,
        InvalidArgumentError,
        InvalidInstanceIdError,
        LeaseLostError,
        LockUnavailableError,
        ScheduleError,
        SignalError,
        StatusReadError,
        StrictSingletonError,
        TerminateError,
    )
    from strict_singleton.options import StarterOptions
    from strict_singleton.policies import ConflictPolicy, ReusePolicy
    from strict_singleton.result import StartOutcome, StartResult
    from strict_singleton.starter import SingletonStarter
    from strict_singleton.transport import Transport

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'strict_singleton' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "FENCING_TAG",
    "MAX_INSTANCE_ID_LENGTH",
    "AlreadyRunningError",
    "AsyncSingletonStarter",
    "BackendError",
    "ConflictPolicy",
    "InvalidArgumentError",
    "InvalidInstanceIdError",
    "LeaseLostError",
    "LockUnavailableError",
    "ReusePolicy",
    "ScheduleError",
    "SingletonStarter",
    "StartOutcome",
    "StartResult",
    "StarterOptions",
    "StatusReadError",
    "SignalError",
    "StrictSingletonError",
    "TerminateError",
    "Transport",
    "validate_instance_id",
]
