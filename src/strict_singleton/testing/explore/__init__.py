"""A deterministic explorer: the real start flow run through interleavings and faults.

N starters each run the real ``start_flow`` / ``finish_flow`` generators of
``strict_singleton._flow`` against the in-memory world of
:mod:`strict_singleton.testing.world` (virtual clock, lock store with TTLs, Durable backend
with a ledger). A scheduler owns every source of nondeterminism (which starter acts next,
which fault strikes which operation, when time passes), and the invariants are checked
after every step. The search is a bounded depth-first search with state hashing; a seeded
random mode samples larger configurations; every run is a schedule string that
:func:`replay` and :func:`describe` run again step by step.

Where each part lives:

- :mod:`.configs`: :class:`Config` and the named configurations :data:`CONFIGS`, each
  *safe* (0 violations is the claim) or *residual* (a documented window: the explorer must
  find a counterexample); the :class:`Mutant` type and :func:`load_mutants`;
- :mod:`.engine`: one schedule step by step: the choices at each step (starters, faults),
  their effect on the world, the invariants (:class:`Violation`);
- :mod:`.search`: :func:`explore`, :func:`random_walks`, :func:`replay`, and
  :func:`run_all`, what ``strict-singleton explore`` runs;
- :mod:`.report`: :class:`Report`, and a schedule told step by step (:func:`describe`).

Mutants (deliberately broken flows, each of which must be caught) are not part of this
package: the tests keep their registry (``tests/explorer_mutants.py``), and
``strict-singleton explore --mutants PATH`` loads one.
"""

from strict_singleton.testing.explore.configs import CONFIGS, Config, Mutant, load_mutants
from strict_singleton.testing.explore.engine import Violation
from strict_singleton.testing.explore.report import Report, describe
from strict_singleton.testing.explore.search import explore, random_walks, replay, run_all

__all__ = [
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
]
