"""Internals of the race harness behind ``strict-singleton race`` and the benchmarks.

Not public API: names here may change in any release. The documented testing API is
:mod:`strict_singleton.testing` (pytest plugin, Durable backend profiles, swarm helpers,
real servers).

* :mod:`.race`: P processes x T starters x R rounds per strategy, with a ledger;
* :mod:`.strategies`: the start strategies it compares (naive, redis-lock, strict, unlocked);
* :mod:`.procs`: a simpler process swarm used by the concurrency tests;
* :mod:`.preflight`: a short-timeout probe of a lock store before a race.
"""
