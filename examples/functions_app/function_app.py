"""The singleton HTTP starter from the Durable Functions docs (Python v2 programming model), strict.

The docs' version reads the status, then starts if there is none or it finished: two
invocations can both start (one start lost, or a running instance replaced). Here the
check-and-start is one call to :class:`~strict_singleton.functions.DurableFunctionsStarter`,
under a lease per instance ID. Same route, same answers: 202 with the check-status payload,
409 when an instance is already running; also 400 for a function the host does not know, or
for a route value the 1.x client cannot put into its URLs as it is (an instance ID Durable
Functions refuses, a ``functionName`` that is no Azure Functions function name: ``orch?`` or
``../x`` would reach another route of the host's HTTP API), with the message saying what is
allowed; 503 (with ``Retry-After``) when the lock store cannot be reached, the outcome of a
start is unknown, or another caller holds the lease for longer than ``wait``; and 500 when the
app's lock is misconfigured.

The lock: by default a Blob lease on the app's own storage account (``AzureWebJobsStorage``,
container ``strict-singleton-locks``; Azurite when run locally). Set the app setting
``STRICT_SINGLETON_LOCK_URL`` to use another one, for example ``redis://my-redis:6379/0``
(fewer round trips than Blob); empty or unset means the default.

The orchestrator ``orch`` and its activity ``hello`` are registered here too, so the folder is a
whole app: ``POST /api/orchestrators/orch/nightly`` starts ``orch`` under the ID ``nightly``,
once, however many requests race. README.md beside this file: running it with ``func start``,
and shipping strict-singleton (which is not on a package index) with the app.
"""

from __future__ import annotations

import os

import azure.durable_functions as df
import azure.functions as func

from strict_singleton import InvalidArgumentError, ScheduleError, StrictSingletonError
from strict_singleton.functions import (
    DurableFunctionsStarter,
    shared_lock,
    validate_functions_instance_id,
    validate_functions_name,
)

myApp = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@myApp.route(route="orchestrators/{functionName}/{instanceId}")
@myApp.durable_client_input(client_name="client")
async def http_start_single(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:  # the caller's route values, checked before anything else: nothing is locked or sent
        instance_id = validate_functions_instance_id(req.route_params.get("instanceId"))
        function_name = validate_functions_name(req.route_params.get("functionName"), instance_id=instance_id)
    except InvalidArgumentError as exc:
        return func.HttpResponse(exc.message, status_code=400)
    try:
        lock = shared_lock(os.environ.get("STRICT_SINGLETON_LOCK_URL") or None)
    except InvalidArgumentError as exc:  # the app's configuration, not the caller's request
        return func.HttpResponse(exc.message, status_code=500)
    try:
        body = req.get_body().decode("utf-8") or None
    except UnicodeDecodeError:
        return func.HttpResponse("the request body must be UTF-8 text", status_code=400)
    starter = DurableFunctionsStarter(client, lock=lock)
    try:
        result = await starter.start(function_name, instance_id=instance_id, input=body)
    except InvalidArgumentError as exc:  # other bad input (e.g. an input the client cannot send): nothing started
        return func.HttpResponse(exc.message, status_code=400)
    except ScheduleError as exc:
        if not exc.maybe_scheduled:  # the host refused the start (an unknown function): nothing started
            return func.HttpResponse(exc.message, status_code=400)
        return func.HttpResponse(exc.message, status_code=503, headers={"Retry-After": "5"})
    except StrictSingletonError as exc:  # nothing was started (lock store down, lease lost, status read failed)
        return func.HttpResponse(exc.message, status_code=503, headers={"Retry-After": "5"})
    return starter.http_response(req, result)


@myApp.orchestration_trigger(context_name="context")
def orch(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    result = yield context.call_activity("hello", context.get_input() or "world")
    return result


@myApp.activity_trigger(input_name="name")
def hello(name: str) -> str:
    return f"Hello {name}!"
