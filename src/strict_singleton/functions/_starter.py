"""The Functions starter: :class:`~strict_singleton.AsyncSingletonStarter` over :class:`FunctionsClient`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import azure.functions as func

from strict_singleton._defaults import DEFAULT_TERMINATE_TIMEOUT
from strict_singleton.async_starter import AsyncSingletonStarter
from strict_singleton.errors import InvalidArgumentError
from strict_singleton.functions._client import FunctionsClient
from strict_singleton.functions._locks import shared_lock
from strict_singleton.functions._urls import (
    validate_functions_event_name,
    validate_functions_instance_id,
    validate_functions_name,
)
from strict_singleton.options import DEFAULT_LEASE_TTL, StarterOptions
from strict_singleton.policies import ConflictPolicy, ReusePolicy
from strict_singleton.result import StartOutcome, StartResult

if TYPE_CHECKING:
    from strict_singleton.lock_backends.base import AsyncLeaseBackend


class DurableFunctionsStarter:
    """Start an orchestration from an Azure Functions trigger at most once per start wave.

    Args:
        client: the ``DurableOrchestrationClient`` the binding gives
            (``@app.durable_client_input(client_name="client")``). A new client and a new
            starter per invocation is fine (that is how Functions calls you), and so is one
            starter reused.
        lock: an async lease backend; default ``shared_lock()``: one :func:`default_lock` per
            event loop (a Blob lease on the app's ``AzureWebJobsStorage`` account, no new
            infrastructure). Use ``AsyncRedisLease``
            if you have Redis: fewer round trips than Blob.
        lease_ttl: as for :class:`~strict_singleton.AsyncSingletonStarter`.
        wait: as for :class:`~strict_singleton.AsyncSingletonStarter`.
        options: a :class:`~strict_singleton.options.StarterOptions` (default
            ``StarterOptions.AZURE_FUNCTIONS``). Its ``namespace`` defaults to the binding's
            ``taskHubName``, so Functions apps (or slots) with their own task hubs never wait
            on each other's leases on a shared storage account.

    Same outcomes, errors and guarantees as the async starter; see the module docstring for
    what this path cannot do.
    """

    def __init__(
        self,
        client: Any,
        *,
        lock: AsyncLeaseBackend | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        wait: float | None = None,
        options: StarterOptions | None = None,
    ) -> None:
        self._client = FunctionsClient(client)
        chosen = lock if lock is not None else shared_lock()
        self._starter = AsyncSingletonStarter(
            self._client,
            lock=chosen,
            lease_ttl=lease_ttl,
            wait=wait,
            options=StarterOptions.AZURE_FUNCTIONS if options is None else options,
        )

    @property
    def lock(self) -> Any:
        return self._starter.lock

    @property
    def namespace(self) -> str:
        return self._starter.namespace

    async def start(
        self,
        function_name: str,
        *,
        instance_id: str,
        input: Any = None,
        version: str | None = None,
        reuse: ReusePolicy = ReusePolicy.ALLOW_DUPLICATE,
        on_conflict: ConflictPolicy = ConflictPolicy.USE_EXISTING,
        terminate_timeout: float = DEFAULT_TERMINATE_TIMEOUT,
        request_id: str | None = None,
    ) -> StartResult:
        """Start ``function_name`` as ``instance_id`` unless an active instance exists.

        As :meth:`SingletonStarter.start <strict_singleton.SingletonStarter.start>`. Bad input
        (including instance IDs and function names the 1.x client cannot put into its URLs
        unchanged: see the module docstring) raises ``InvalidArgumentError`` before any lease
        or host request.
        """
        iid = validate_functions_instance_id(instance_id)
        name = validate_functions_name(function_name, instance_id=iid)
        return await self._starter.start(
            name,
            instance_id=iid,
            input=input,
            version=version,
            reuse=reuse,
            on_conflict=on_conflict,
            terminate_timeout=terminate_timeout,
            request_id=request_id,
        )

    async def start_or_signal(
        self,
        function_name: str,
        *,
        instance_id: str,
        event_name: str,
        event_data: Any = None,
        input: Any = None,
        reuse: ReusePolicy = ReusePolicy.ALLOW_DUPLICATE,
        request_id: str | None = None,
    ) -> StartResult:
        """As :meth:`SingletonStarter.start_or_signal <strict_singleton.SingletonStarter.start_or_signal>`.

        Instance IDs, function names and event names are checked as :meth:`start` checks them
        (see the module docstring), before any lease or host request.
        """
        iid = validate_functions_instance_id(instance_id)
        name = validate_functions_name(function_name, instance_id=iid)
        event = validate_functions_event_name(event_name, instance_id=iid)
        try:  # the 1.x client sends event data with json.dumps (not the input's serializer)
            json.dumps(event_data)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"event_data cannot be sent by the 1.x client (json.dumps): {exc}", instance_id=iid
            ) from None
        return await self._starter.start_or_signal(
            name,
            instance_id=iid,
            event_name=event,
            event_data=event_data,
            input=input,
            reuse=reuse,
            request_id=request_id,
        )

    def http_response(self, req: func.HttpRequest, result: StartResult) -> func.HttpResponse:
        """The trigger's answer: STARTED (and SIGNALED) the client's own 202 check-status
        response; ALREADY_RUNNING 409 with the instance ID (as the docs' example);
        ALREADY_COMPLETED 409 too; BUSY 503 with ``Retry-After``."""
        iid = result.instance_id
        if result.outcome in (StartOutcome.STARTED, StartOutcome.SIGNALED):
            response: func.HttpResponse = self._client.client.create_check_status_response(req, iid)
            return response
        if result.outcome is StartOutcome.ALREADY_RUNNING:
            return func.HttpResponse(f"An instance with ID '{iid}' already exists.", status_code=409)
        if result.outcome is StartOutcome.ALREADY_COMPLETED:
            return func.HttpResponse(
                f"An instance with ID '{iid}' already completed and the reuse policy keeps it.", status_code=409
            )
        retry = max(1, round(self._starter.lease_ttl))
        return func.HttpResponse(
            f"Another caller is starting instance '{iid}'; try again.",
            status_code=503,
            headers={"Retry-After": str(retry)},
        )

    async def aclose(self) -> None:
        """Wait for pending background finishes (the lease's release with its start record)."""
        await self._starter.aclose()

    async def __aenter__(self) -> DurableFunctionsStarter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
