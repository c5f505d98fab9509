"""What the loop has learned of the station's cars, re-learned from the store hourly.

- session defaults by charger kind and hour (:func:`megastation.control.needs.learn_defaults_from_store`),
  for cars that do not say what they need;
- the cars still to come (:func:`megastation.control.history.expected_demand_for_station`: the station's own
  history by weekday/weekend, hour and kind, else the fleet profile),
  from history, else the fleet profile (simulated once, ~0.1 s).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from megastation.control import history
from megastation.control.needs import (
    ExpectedDemand,
    LearnedDefaults,
    learn_defaults_from_store,
    profile_demand,
)
from megastation.core.config import Station
from megastation.store import Store, records

RELEARN_INTERVAL = timedelta(hours=1)


class Demand:
    """Learned defaults and expected cars of a station, cached (see the module docstring)."""

    def __init__(
        self, store: Store, station: Station, relearn_interval: timedelta = RELEARN_INTERVAL
    ) -> None:
        self.store = store
        self.station = station
        self.relearn_interval = relearn_interval
        self.kind = {c.id: c.kind.lower() for c in station.chargers}  # charger id -> ac | dc
        self._learned: LearnedDefaults | None = None
        self._learned_at: datetime | None = None
        self._expected: ExpectedDemand | None = None
        self._profile: tuple[ExpectedDemand | None] | None = None  # computed once
        # the history read by the last relearn and when: the expected cars of the same
        # cycle are learned from it too (one read of the store, not two, #15)
        self._history: tuple[datetime, list] | None = None

    def learned(self, now: datetime) -> LearnedDefaults | None:
        """Session defaults learned from history (re-learned after ``relearn_interval``,
        default :data:`RELEARN_INTERVAL`, and with them the expected cars)."""
        if self._learned_at is None or now - self._learned_at > self.relearn_interval:
            # one read of the store for the defaults and the expected cars (#15)
            rows = records.closed_sessions(self.store, limit=history.HISTORY_LIMIT)
            self._history = (now, rows)
            self._learned = learn_defaults_from_store(
                self.store, self.kind, self.station.site.timezone, rows=rows
            )
            self._expected = None
            self._learned_at = now
        return self._learned

    def expected(self, now: datetime) -> ExpectedDemand | None:
        """Cars still to come (re-learned with the defaults)."""
        if self._expected is None:
            read = self._history
            self._history = None
            self._expected = history.expected_demand_for_station(
                self.store, self.station, now, fallback=self._profile_demand,
                rows=read[1] if read is not None and read[0] == now else None,
            )  # fmt: skip
        return self._expected

    def _profile_demand(self) -> ExpectedDemand | None:
        """The fleet profile's expected cars, until history replaces them."""
        if self._profile is None:
            self._profile = (profile_demand(self.station),)
        return self._profile[0]
