"""Stage 3 of a cycle, solve: the dispatch LP (:func:`megastation.dispatch.solve`).

On a live event loop the solve runs in a worker thread, so the loop keeps serving
chargers; an accelerated clock that can hold (the demo's) stands still meanwhile, as a
solve of tens of milliseconds takes no station time worth counting at 1x. The
socket-free simulator solves inline.
"""

from __future__ import annotations

import asyncio
import contextlib

from megastation.core.clock import Clock
from megastation.dispatch import Plan, Problem, solve


async def solve_plan(problem: Problem, clock: Clock, *, inline: bool) -> Plan:
    """The plan of ``problem`` (see the module docstring)."""
    if inline:
        return solve(problem)
    hold = getattr(clock, "hold", None)
    with hold() if hold is not None else contextlib.nullcontext():
        return await asyncio.to_thread(solve, problem)
