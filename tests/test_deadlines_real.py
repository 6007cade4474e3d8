"""RPCs made under the lease carry a deadline inside it, on the real client and backend: a status
read that the backend answers later than the lease lasts is cut at the lease's send-by time, and
the call fails closed with ``LeaseLostError``, nothing scheduled (it does not hang on the read, nor
decide on it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from durabletask.client import AsyncTaskHubGrpcClient, TaskHubGrpcClient

from strict_singleton import AsyncSingletonStarter, SingletonStarter
from strict_singleton.errors import LeaseLostError
from strict_singleton.lock_backends.redis import AsyncRedisLease, RedisLease
from strict_singleton.options import StarterOptions
from strict_singleton.testing import DurableTestBackend, RedisServer


def deadline_code(exc: BaseException) -> Any:
    cause = exc.__cause__
    code = getattr(cause, "code", None)
    return code().name if callable(code) else None


@pytest.mark.redis
@pytest.mark.parametrize("api", ["sync", "async"])
def test_a_read_slower_than_the_lease_is_cut_at_its_deadline(tmp_path: Path, api: str) -> None:
    with DurableTestBackend(latency=3.0) as backend, RedisServer() as server:
        import redis
        import redis.asyncio as aioredis

        if api == "sync":
            client = TaskHubGrpcClient(host_address=backend.address)
            lock = RedisLease(redis.Redis(port=server.port))
            starter = SingletonStarter(
                client, lock=lock, lease_ttl=1.0, options=StarterOptions(background_finish=False)
            )
            with pytest.raises(LeaseLostError) as failed:
                starter.start("orch", instance_id="slow-read")
            client.close()
        else:

            async def go() -> BaseException:
                aclient = AsyncTaskHubGrpcClient(host_address=backend.address)
                alock = AsyncRedisLease(aioredis.Redis(port=server.port))
                try:
                    async with AsyncSingletonStarter(aclient, lock=alock, lease_ttl=1.0) as starter:
                        with pytest.raises(LeaseLostError) as raised:
                            await starter.start("orch", instance_id="slow-read")
                        return raised.value
                finally:
                    await aclient.close()

            failed_value = asyncio.run(go())
        error = failed.value if api == "sync" else failed_value
        assert deadline_code(error) == "DEADLINE_EXCEEDED", repr(error.__cause__)
        assert not error.maybe_scheduled
        assert backend.ledger.snapshot().created["slow-read"] == 0
