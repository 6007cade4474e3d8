"""The public surface, pinned: every public module and the names it exports.

A change here is a change to what users may import: make it on purpose, and say so in the
changelog. A module is public when no part of its dotted name starts with an underscore.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import strict_singleton

EXPORTED: dict[str, list[str]] = {
    "strict_singleton": [
        "AlreadyRunningError",
        "AsyncSingletonStarter",
        "BackendError",
        "ConflictPolicy",
        "FENCING_TAG",
        "InvalidArgumentError",
        "InvalidInstanceIdError",
        "LeaseLostError",
        "LockUnavailableError",
        "MAX_INSTANCE_ID_LENGTH",
        "ReusePolicy",
        "ScheduleError",
        "SignalError",
        "SingletonStarter",
        "StartOutcome",
        "StartResult",
        "StarterOptions",
        "StatusReadError",
        "StrictSingletonError",
        "TerminateError",
        "Transport",
        "validate_instance_id",
    ],
    "strict_singleton.async_starter": ["AsyncSingletonStarter"],
    "strict_singleton.cli": [
        "EXIT_OK",
        "EXIT_RACE_FAILED",
        "EXIT_UNAVAILABLE",
        "EXIT_USAGE",
        "EXIT_VIOLATION",
        "EXIT_WARNINGS",
        "entry_point",
        "main",
    ],
    "strict_singleton.doctor": [
        "Check",
        "DoctorReport",
        "Status",
        "acheck_deployment",
        "check_deployment",
        "format_report",
        "report_json",
    ],
    "strict_singleton.errors": [
        "AlreadyRunningError",
        "BackendError",
        "InvalidArgumentError",
        "InvalidInstanceIdError",
        "LeaseLostError",
        "LockUnavailableError",
        "ScheduleError",
        "SignalError",
        "StatusReadError",
        "StrictSingletonError",
        "TerminateError",
    ],
    "strict_singleton.functions": [
        "DurableFunctionsStarter",
        "FunctionsClient",
        "HostError",
        "MAX_FUNCTIONS_EVENT_NAME_LENGTH",
        "MAX_FUNCTIONS_INSTANCE_ID_LENGTH",
        "MAX_FUNCTIONS_NAME_LENGTH",
        "default_lock",
        "shared_lock",
        "validate_functions_event_name",
        "validate_functions_instance_id",
        "validate_functions_name",
    ],
    "strict_singleton.lock_backends": [
        "AsyncBlobLease",
        "AsyncFileLease",
        "AsyncLeaseBackend",
        "AsyncRedisLease",
        "AsyncRedlockLease",
        "BlobLease",
        "FileLease",
        "Grant",
        "LeaseBackend",
        "RedisLease",
        "RedlockLease",
        "from_url",
    ],
    "strict_singleton.lock_backends.base": [
        "AsyncLeaseBackend",
        "Grant",
        "LeaseBackend",
        "REQUEST_RECORD_MAX",
        "RequestRecord",
        "StartRecord",
    ],
    "strict_singleton.lock_backends.blob": ["AsyncBlobLease", "BlobLease"],
    "strict_singleton.lock_backends.file": ["AsyncFileLease", "DEFAULT_DIRECTORY", "ENV_DIRECTORY", "FileLease"],
    "strict_singleton.lock_backends.redis": ["AsyncRedisLease", "RedisLease"],
    "strict_singleton.lock_backends.redlock": ["AsyncRedlockLease", "RedlockLease"],
    "strict_singleton.options": ["DEFAULT_LEASE_TTL", "StarterOptions"],
    "strict_singleton.policies": ["ConflictPolicy", "ReusePolicy"],
    "strict_singleton.result": ["StartOutcome", "StartResult"],
    "strict_singleton.starter": ["SingletonStarter"],
    "strict_singleton.testing": [
        "BackendLedger",
        "DurableTestBackend",
        "LedgerSnapshot",
        "PROFILES",
        "RedisServer",
        "free_port",
        "redis_server_binary",
    ],
    "strict_singleton.testing.azurite": ["Azurite", "DEV_KEY", "azurite_binary", "dev_connection_string"],
    "strict_singleton.testing.backend": [
        "BackendCalls",
        "BackendLedger",
        "CallCounts",
        "DurableTestBackend",
        "LedgerSnapshot",
        "PROFILES",
    ],
    "strict_singleton.testing.explore": [
        "CONFIGS",
        "Config",
        "Mutant",
        "Report",
        "Violation",
        "describe",
        "explore",
        "load_mutants",
        "random_walks",
        "replay",
        "run_all",
    ],
    "strict_singleton.testing.explore.configs": ["CONFIGS", "Config", "Mutant", "SAFE_FAULTS", "load_mutants"],
    "strict_singleton.testing.explore.engine": ["Violation"],
    "strict_singleton.testing.explore.report": ["Report", "describe"],
    "strict_singleton.testing.explore.search": ["explore", "random_walks", "replay", "run_all"],
    "strict_singleton.testing.functions_host": [
        "FunctionsHost",
        "HostCounts",
        "PROFILES",
        "Profile",
        "RPC_PREFIX",
        "binding_json",
        "close_client_session",
        "grpc_binding_json",
        "host_route_segments",
        "reset_client_session",
        "route",
        "run",
    ],
    "strict_singleton.testing.plugin": ["StarterSwarm", "SwarmResult"],
    "strict_singleton.testing.redis_cluster": ["RedisCluster3", "RedisClusterNode", "free_cluster_port"],
    "strict_singleton.testing.redis_server": ["RedisServer", "describe_redis_server", "redis_server_binary"],
    "strict_singleton.testing.swarm": ["CallRecord", "describe", "fire_tasks", "fire_threads"],
    "strict_singleton.testing.world": [
        "DEFAULT",
        "RpcError",
        "SimBackend",
        "SimLockStore",
        "VirtualClock",
        "World",
        "drive",
    ],
    "strict_singleton.transport": ["DurableTaskTransport", "Transport"],
}


def _public_modules() -> set[str]:
    found = {"strict_singleton"}
    for info in pkgutil.walk_packages(strict_singleton.__path__, "strict_singleton."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            found.add(info.name)
    return found


def test_the_public_modules_are_the_pinned_ones() -> None:
    assert _public_modules() == set(EXPORTED)


@pytest.mark.parametrize("module", sorted(EXPORTED))
def test_each_public_module_exports_exactly_the_pinned_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == EXPORTED[module]
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name} is listed but not importable"
        assert not name.startswith("_")


def test_every_public_name_has_a_docstring_or_is_a_constant() -> None:
    missing = []
    for module in EXPORTED:
        mod = importlib.import_module(module)
        for name in mod.__all__:
            value = getattr(mod, name)
            if (inspect.isclass(value) or inspect.isroutine(value)) and not (value.__doc__ or "").strip():
                missing.append(f"{module}.{name}")
    assert missing == []
