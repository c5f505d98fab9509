"""Injected time: every loop, simulator and store asks a clock, never ``datetime.now``.

Three clocks share one small protocol:

- :class:`SystemClock` is the wall clock, for production.
- :class:`SimClock` only moves when told (:meth:`SimClock.advance`); tests and the
  socket-free simulator step a whole day through it in milliseconds.
- :class:`ScaledClock` runs ``speed`` times faster than the wall clock, for the demo,
  where real WebSocket chargers and the controller run side by side.

All timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import asyncio


@runtime_checkable
class Clock(Protocol):
    """What time it is, and a way to wait for it."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


def _asyncio():
    # lazy: asyncio adds tens of ms to every CLI command's start-up, and only sleeps need it
    import asyncio

    return asyncio


def utc(ts: datetime) -> datetime:
    """Return ``ts`` in UTC; naive datetimes are refused, not guessed."""
    tz = ts.tzinfo
    if tz is UTC:  # already UTC (most calls): astimezone would return ts itself
        return ts
    if tz is None:
        raise ValueError(f"naive datetime {ts.isoformat()}: give a time zone")
    return ts.astimezone(UTC)


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await _asyncio().sleep(max(0.0, seconds))


class SimClock:
    """A clock that moves only when :meth:`advance` (or :meth:`set`) is called.

    Coroutines sleeping on it wake, in time order, as the clock passes their
    wake-up time; ``advance`` yields to the event loop after each wake-up so that
    woken tasks run before time moves on.
    """

    def __init__(self, start: datetime) -> None:
        self._now = utc(start)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await _asyncio().sleep(0)
            return
        fut: asyncio.Future[None] = _asyncio().get_running_loop().create_future()
        heapq.heappush(
            self._sleepers, (self._now + timedelta(seconds=seconds), next(self._seq), fut)
        )
        await fut

    def set(self, ts: datetime) -> None:
        """Jump to ``ts`` without waking sleepers (only for synchronous use)."""
        self._now = utc(ts)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper due on the way."""
        target = self._now + timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= target:
            wake, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake)
            if not fut.done():
                fut.set_result(None)
            # Let the woken task (and whatever it schedules) run at this instant.
            for _ in range(5):
                await _asyncio().sleep(0)
        self._now = target
        await _asyncio().sleep(0)


class ScaledClock:
    """Runs ``speed`` times faster than the wall clock, starting at ``start``.

    :meth:`hold` stops it while a block runs (the demo holds it while the controller
    solves: a 50 ms solve is nothing at 1x but more than a station minute at 1440x).
    ``held=True`` creates it stopped at ``start`` until :meth:`release` (the demo's
    chargers boot and get their fail-safe profiles before the first car); sleeps begun
    before the release end ``seconds / speed`` after it. Thread-safe: the demo's
    simulated chargers read it from another thread.
    """

    #: how often a sleep begun before :meth:`release` checks for it [s of wall time]
    RELEASE_POLL_S = 0.01

    def __init__(self, start: datetime, speed: float, *, held: bool = False) -> None:
        if speed <= 0:
            raise ValueError(f"speed: must be > 0, got {speed}")
        self._start = utc(start)
        self._t0 = time.monotonic()
        self.speed = float(speed)
        self._lock = threading.Lock()
        self._held_at: float | None = None  # wall time the clock stopped at
        self._holds = 0
        self._released = threading.Event()
        if held:
            self._stop()
        else:
            self._released.set()

    def now(self) -> datetime:
        with self._lock:
            t = self._held_at if self._held_at is not None else time.monotonic()
            return self._start + timedelta(seconds=(t - self._t0) * self.speed)

    def _stop(self) -> None:
        with self._lock:
            if self._holds == 0:
                self._held_at = time.monotonic()
            self._holds += 1

    def _resume(self) -> None:
        with self._lock:
            self._holds -= 1
            if self._holds == 0 and self._held_at is not None:
                self._t0 += time.monotonic() - self._held_at
                self._held_at = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Stop the clock for the duration of the block (nested holds are one hold)."""
        self._stop()
        try:
            yield
        finally:
            self._resume()

    def release(self) -> None:
        """End the hold of a clock created with ``held=True`` (no-op otherwise or twice)."""
        if not self._released.is_set():
            self._resume()
            self._released.set()

    async def sleep(self, seconds: float) -> None:
        while not self._released.is_set():
            await _asyncio().sleep(self.RELEASE_POLL_S)
        await _asyncio().sleep(max(0.0, seconds) / self.speed)


def parse_local_time(text: str, tz: tzinfo) -> datetime:
    """An operator's time: ISO date (local midnight) or date-time; no zone = ``tz``.

    Raises ``ValueError`` when ``text`` is neither.
    """
    if len(text) == 10:
        ts = datetime.combine(datetime.fromisoformat(text).date(), dtime(0))
    else:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=tz)
