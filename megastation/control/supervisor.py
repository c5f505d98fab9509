"""The supervisor: runs a control loop and restarts it with backoff when it crashes.

Everything the loop needs after a restart is in the store (open transactions, needs,
overrides, profiles already sent), so a fresh :class:`megastation.control.controller.Controller`
carries on where the crashed one stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from megastation.core import events as ev
from megastation.core.clock import Clock

log = logging.getLogger(__name__)

DEFAULT_BACKOFF_S = (1, 2, 5, 10, 30)  # waits before restart 1, 2, ... (then the last)
STABLE_RUN_S = 600.0  # a loop that ran this long before crashing starts the backoff over


class ControlLoop(Protocol):
    """What the supervisor runs (:class:`megastation.control.controller.Controller`)."""

    def notify(self, event: ev.Event) -> None: ...

    async def run(self) -> None: ...


class ControlSupervisor:
    """Runs a controller and restarts it with backoff when it crashes.

    ``make`` builds a fresh controller (which resumes from the store). Events go to
    whichever controller is running; the OCPP server is never affected.
    """

    def __init__(
        self,
        make: Callable[[], ControlLoop],
        clock: Clock,
        *,
        backoff_s: Sequence[float] = DEFAULT_BACKOFF_S,
    ) -> None:
        self.make = make
        self.clock = clock
        self.backoff_s = tuple(backoff_s)
        self.controller: ControlLoop | None = None
        self.restarts = 0
        self.errors: list[str] = []

    def notify(self, event: ev.Event) -> None:
        if self.controller is not None:
            self.controller.notify(event)

    async def run(self) -> None:
        failures = 0
        while True:
            self.controller = self.make()
            started = self.clock.now()
            try:
                await self.controller.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("control loop crashed; restarting")
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if (self.clock.now() - started).total_seconds() > STABLE_RUN_S:
                    failures = 0
                delay = self.backoff_s[min(failures, len(self.backoff_s) - 1)]
                failures += 1
                self.restarts += 1
                await self.clock.sleep(delay)
