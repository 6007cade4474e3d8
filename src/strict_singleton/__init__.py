"""strict-singleton: start a Durable Task orchestration under a fixed instance ID exactly once.

>>> from strict_singleton import SingletonStarter
>>> starter = SingletonStarter(client, lock=RedisLease(redis_client))      # doctest: +SKIP
>>> result = starter.start(my_orchestrator, instance_id="nightly-report")  # doctest: +SKIP
>>> result.outcome                                                          # doctest: +SKIP
<StartOutcome.STARTED: 'started'>
"""

from strict_singleton._validation import FENCING_TAG, MAX_INSTANCE_ID_LENGTH, validate_instance_id
from strict_singleton.async_starter import AsyncSingletonStarter
from strict_singleton.errors import (
    BackendError,
    InvalidArgumentError,
    InvalidInstanceIdError,
    LeaseLostError,
    LockUnavailableError,
    ScheduleError,
    StatusReadError,
    StrictSingletonError,
)
from strict_singleton.result import StartOutcome, StartResult
from strict_singleton.starter import SingletonStarter

__version__ = "0.1.0"

__all__ = [
    "FENCING_TAG",
    "MAX_INSTANCE_ID_LENGTH",
    "AsyncSingletonStarter",
    "BackendError",
    "InvalidArgumentError",
    "InvalidInstanceIdError",
    "LeaseLostError",
    "LockUnavailableError",
    "ScheduleError",
    "SingletonStarter",
    "StartOutcome",
    "StartResult",
    "StatusReadError",
    "StrictSingletonError",
    "validate_instance_id",
]
