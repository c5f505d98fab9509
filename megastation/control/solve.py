"""Stage 3 of a cycle, solve: the dispatch LP (:func:`megastation.dispatch.solve`).

On a live event loop the solve runs in a worker thread, so the loop keeps serving
chargers; an accelerated clock that can hold (the demo's) stands still meanwhile, as a
solve of tens of milliseconds takes no station time worth counting at 1x. The
socket-free simulator solves inline. The controller's ``solver`` is
:func:`megastation.dispatch.solve` warm-started from its last plan's basis (one
:class:`~megastation.dispatch.WarmStart` per controller; cycles never overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from megastation.core.clock import Clock
from megastation.dispatch import Plan, Problem, solve

Solver = Callable[[Problem], Plan]


async def solve_plan(
    problem: Problem, clock: Clock, *, inline: bool, solver: Solver = solve
) -> Plan:
    """The plan of ``problem`` by ``solver`` (see the module docstring)."""
    if inline:
        return solver(problem)
    hold = getattr(clock, "hold", None)
    with hold() if hold is not None else contextlib.nullcontext():
        return await asyncio.to_thread(solver, problem)
