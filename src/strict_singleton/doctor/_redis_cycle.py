"""The Redis (and Redlock) lease cycle on a scratch instance ID, its wake-up, its clean-up.

The scratch ID is ``strict-singleton-doctor-<uuid4>``, under the lease's real key scheme
and prefix (``<prefix>{strict-singleton-doctor-<uuid>}:lock`` and its ``:fence``,
``:start``, ``:request`` keys, release channel ``...:released``): any ACL that lets real
leases work lets the cycle work, and no real ID can be a fresh UUID's.

Every scratch key expires on its own from the moment it is written, so even a doctor
killed mid-cycle leaves nothing for longer than :data:`SCRATCH_TTL`: the lock and the
records are written with ``PX`` by the lease itself; the fence (which the lease keeps
forever) is created first with ``SET ... 0 PX NX``, and ``INCR`` keeps a key's TTL. The
keys are deleted in a ``finally`` on every way out, interrupts included.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from strict_singleton.doctor._cycle import lease_cycle
from strict_singleton.doctor._measure import monotonic
from strict_singleton.doctor._model import Check, Status
from strict_singleton.doctor._redis_read import describe, text
from strict_singleton.lock_backends._redis_common import RedisKeys, ttl_ms

SCRATCH_TTL = 15.0
INFORMATIONAL = "informational"
_ROW_WAKEUPS = "release wake-ups (else waiters poll)"
# What each step of the lease cycle sends, for a failure's message.
CYCLE_USES = {
    "acquire": "EVALSHA or SCRIPT LOAD; in Lua SET NX PX, INCR, GET, PTTL",
    "renew": "EVALSHA; in Lua GET, PEXPIRE",
    "record": "EVALSHA; in Lua GET, SET PX",
    "release": "EVALSHA; in Lua GET, DEL, SET PX, PUBLISH",
}


def scratch_id() -> str:
    """An instance ID no real caller uses (a fresh UUID), shaped like any other ID."""
    return f"strict-singleton-doctor-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Scratch:
    """A scratch instance ID and its names under the lease's real key scheme."""

    instance_id: str
    keys: RedisKeys

    @property
    def names(self) -> list[str]:
        return self.keys.acquire_keys(self.instance_id)

    @property
    def fence(self) -> str:
        return self.keys.fence(self.instance_id)

    @property
    def channel(self) -> str:
        return self.keys.channel(self.instance_id)


def new_scratch(prefix: str, target: str) -> Scratch:
    return Scratch(scratch_id(), RedisKeys(prefix, target))


def scratch_cycle(
    lease: Any, clients: list[Any], subscriber: Any | None, scratch: Scratch, *, target: str, timeout: float
) -> list[Check]:
    """The lease cycle on ``scratch`` with ``lease``, the wake-up check through
    ``subscriber`` (the client a waiter would subscribe with), then every scratch key
    deleted on ``clients``, whatever happened."""
    checks: list[Check] = []
    try:
        arm_fences(clients, scratch)
        with release_listener(subscriber, scratch, timeout) as heard:
            cycle = lease_cycle(lease, target=target, instance_id=scratch.instance_id, ttl=SCRATCH_TTL, uses=CYCLE_USES)
            checks.append(cycle)
            if cycle.status is Status.OK:
                checks.append(wakeup_check(heard, target))
    finally:
        checks += cleanup(clients, target, scratch.names)
    return checks


def arm_fences(clients: list[Any], scratch: Scratch) -> None:
    """Create the fence with a TTL before the lease's ``INCR`` does (without one); a
    refusal is left to the lease cycle to report, as the lease would meet it."""
    for client in clients:
        with contextlib.suppress(Exception):
            client.set(scratch.fence, 0, px=ttl_ms(SCRATCH_TTL), nx=True)


class _Heard:
    """What the scratch release's subscription heard (``error``: it could not subscribe)."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.wait: Callable[[], bool] = lambda: False


@contextlib.contextmanager
def release_listener(subscriber: Any | None, scratch: Scratch, timeout: float) -> Iterator[_Heard]:
    """Subscribe as the lease's waiters do (``SUBSCRIBE`` of the scratch ID's release
    channel) before the cycle; ``heard.wait()`` after the release says whether its message
    arrived within ``timeout``."""
    heard = _Heard()
    if subscriber is None:
        heard.error = "no node to subscribe on"
        yield heard
        return
    pubsub = None
    try:
        pubsub = subscriber.pubsub()
        pubsub.subscribe(scratch.channel)
        confirmed = False
        deadline = monotonic() + timeout
        while not confirmed and monotonic() < deadline:
            message = pubsub.get_message(timeout=max(0.0, deadline - monotonic()))
            confirmed = message is not None and message["type"] == "subscribe"
        if not confirmed:
            heard.error = f"no SUBSCRIBE confirmation within {timeout:g} s"
    except Exception as exc:
        heard.error = describe(exc)

    def wait() -> bool:
        deadline = monotonic() + timeout
        while pubsub is not None and monotonic() < deadline:
            message = pubsub.get_message(timeout=max(0.0, deadline - monotonic()))
            if message is not None and message["type"] == "message" and text(message["channel"]) == scratch.channel:
                return True
        return False

    if heard.error is None:
        heard.wait = wait
    try:
        yield heard
    finally:
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()


def wakeup_check(heard: _Heard, target: str) -> Check:
    if heard.error is not None:
        return Check(
            target,
            "wake-ups",
            Status.WARNING,
            f"could not subscribe to a release channel ({heard.error}): waiters are not woken by a release "
            "and poll instead (a freed ID is taken up to 50 ms later)",
            fix="grant +subscribe, +unsubscribe and the two release channel patterns (see the permissions check)",
            guarantee=_ROW_WAKEUPS,
            measured="not subscribed",
        )
    if not heard.wait():
        return Check(
            target,
            "wake-ups",
            Status.WARNING,
            "subscribed as a waiter, but the scratch lease's release message never arrived: waiters poll instead",
            fix="check that PUBLISH reaches subscribers (no proxy that drops pub/sub)",
            guarantee=_ROW_WAKEUPS,
            measured="not received",
        )
    return Check(
        target,
        "wake-ups",
        Status.OK,
        "subscribed as the lease's waiters do, and received the scratch release's message",
        guarantee=_ROW_WAKEUPS,
        measured="received",
    )


def cleanup(clients: list[Any], target: str, keys: list[str]) -> list[Check]:
    """Delete the scratch keys on every client. Reports only keys that could not be
    deleted and are still there (a user that never wrote any has nothing to report);
    they expire on their own anyway."""
    left: list[str] = []
    for client in clients:
        try:
            client.delete(*keys)
        except Exception as exc:
            try:
                remaining = int(client.exists(*keys))
            except Exception:
                continue  # nothing provably left; every scratch key expires on its own
            if remaining:
                left.append(describe(exc))
    if not left:
        return []
    return [
        Check(
            target,
            "scratch keys",
            Status.OK,
            f"could not delete the scratch keys {', '.join(keys)} ({'; '.join(left)}); they expire on their "
            f"own within {SCRATCH_TTL:g} s",
            guarantee=INFORMATIONAL,
            measured="expiring",
        )
    ]
