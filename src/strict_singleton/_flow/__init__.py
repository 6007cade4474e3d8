"""The start algorithm, written once, without I/O.

``start_flow`` and ``finish_flow`` are generators that *yield* the I/O they need as
small frozen operations that carry all their arguments (:class:`Acquire`,
:class:`Read`, :class:`Schedule`, ...) and receive its result (or have its exception
thrown in). The sync and async starters are thin drivers that execute those
operations with blocking or awaiting calls, so both run the very same decisions; a
scripted driver (``tests/test_flow_unit.py``) runs them in memory. Time comes from an
injected monotonic clock (and, for comparing creation times, an injected wall clock).

Safety argument, step by step:

1. Arguments were validated, and the schedule request built (input serialized),
   before the flow runs: no lease is taken for bad input, and no lease time is spent
   serializing.
2. The lease is acquired with a fresh random token. Its validity is counted from just
   *before* the acquire request was sent, minus a clock-drift allowance, so our
   deadline never outlives the store's.
3. Under the lease, the instance's status is read; an active instance is answered
   ALREADY_RUNNING and nothing is scheduled.
4. Before scheduling, the lease is *confirmed* by the store (a token-checked extend)
   whenever more than ``confirm_after`` seconds passed since the store last confirmed
   it (a slow read, a pause), and renewed when less than ``schedule_margin`` validity
   is left or it is older than a third of its TTL. A lease whose deadline has passed
   is never renewed: a late renew can succeed on some stores even though someone else
   held the lease meanwhile. Then we raise ``LeaseLostError``.
5. The schedule op carries an absolute *send-by* time: the lease's deadline minus a
   reserve. The driver refuses to send at or after it (``NotSent`` ->
   ``LeaseLostError``), and otherwise gives the RPC the time left as its gRPC
   deadline, computed immediately before the RPC. The request carries a reuse policy
   that only replaces terminal instances (ALREADY_EXISTS becomes ALREADY_RUNNING).
6. An ambiguous failure (deadline, lost connection, cancellation) does not let go: a
   gRPC deadline ends our wait, not the server's work. The lease is kept (renewed,
   token-checked) while we watch for *our* instance for ``ambiguity_timeout``; if it
   appears the answer is STARTED, else ``ScheduleError(maybe_scheduled=True)``, and
   only then is the lease released.
7. After a successful schedule no later caller may act on a stale "no instance" read
   (hosts whose status index lags). With a lock store that keeps *start records*
   (every shipped backend), the lease is released at once together with a record of
   the start (its send time and the instance it replaced), kept for
   ``visibility_timeout``; the next holder whose status read does not show that start
   yet keeps the lease and re-reads until it does (at most ``visibility_timeout``)
   before deciding anything. So the visibility wait is paid only by a caller that
   really comes inside the lag window. Without records, or if storing the record
   failed, the lease is held (renewed) until the new instance is visible, at most
   ``visibility_timeout``. Every path ends in a token-checked release: no hold is
   unbounded, including on leases that never expire (the file lease).
8. If the caller abandons the call (async cancellation, KeyboardInterrupt), the driver
   throws :class:`Abandoned` in and runs the rest where the interruption cannot reach:
   a held lease is released, and a schedule that may be in flight is watched for as
   in step 6 first.

"Our instance" is recognised by its creation time: an instance that was not there
before (or replaced the one read in step 3, so it was created later) and was created
no earlier than ``clock_skew`` seconds before we sent the request. A start record is
"shown" by a read by the same test. durabletask's ``GetInstance``
omits tags, so the fencing tag cannot serve as evidence on that path.

Where each part lives:

- :mod:`.ops`: the operations and :data:`~.ops.CALLS`, the table from each to the call that serves it;
- :mod:`.evidence`: what a read or an error proves (whose instance, whether a start shows);
- :mod:`.context`: one call's state (the lease as counted here, a held start, the progress a clean-up reads,
  the notes a driver's metrics read);
- :mod:`.keeping`: keeping the lease (renew, confirm, read under its deadline, release);
- :mod:`.start`: the start itself, in named steps (steps 2 to 6, and 8);
- :mod:`.watch`: step 6, watching after an ambiguous schedule;
- :mod:`.start_records` and :mod:`.finish`: step 7;
- :mod:`.request_records` and :mod:`.retry`: request records (``request_id``);
- :mod:`.events`: ``start_or_signal``'s event;
- :mod:`.terminate`: ``ConflictPolicy.TERMINATE_EXISTING``.

The modules call one another through module attributes (``keeping.keep(...)``), never
names imported into another module, so each function has exactly one binding.
"""

from strict_singleton._flow.context import FIRST_WAIT, FinishFlow, Flow, FlowResult, Hold, LeaseClock, Notes
from strict_singleton._flow.evidence import AMBIGUOUS_CODES, created_us, epoch_us, is_active, rpc_code
from strict_singleton._flow.finish import finish_flow
from strict_singleton._flow.ops import (
    CALLS,
    Abandoned,
    Acquire,
    Call,
    Extend,
    NotSent,
    Op,
    RaiseEvent,
    Read,
    RecordRequest,
    RecordStart,
    Release,
    ReleaseRecording,
    Schedule,
    Sleep,
    Terminate,
    WaitRelease,
    call_of,
    targets,
)
from strict_singleton._flow.start import start_flow

__all__ = [
    "AMBIGUOUS_CODES",
    "CALLS",
    "FIRST_WAIT",
    "Abandoned",
    "Acquire",
    "Call",
    "Extend",
    "FinishFlow",
    "Flow",
    "FlowResult",
    "Hold",
    "LeaseClock",
    "NotSent",
    "Notes",
    "Op",
    "RaiseEvent",
    "Read",
    "RecordRequest",
    "RecordStart",
    "Release",
    "ReleaseRecording",
    "Schedule",
    "Sleep",
    "Terminate",
    "WaitRelease",
    "call_of",
    "created_us",
    "epoch_us",
    "finish_flow",
    "is_active",
    "rpc_code",
    "start_flow",
    "targets",
]
