"""Car power caps: what each car was sent, what it follows, and the limit it sets itself.

A car that draws clearly less than the limit in force limits itself (its maximum, or the
taper near full): it is planned with what it drew, so the plan does not count on power
the car will not take. The cap is dropped when the car draws more than it; a cap of
about nothing (a full car, or one that had not yet followed its limit) is probed again
after :data:`CAR_CAP_TTL_S`, so no car is locked out (dispatch.md, "Demand peak so far").

:class:`CarCaps` holds this per transaction; it does no I/O (the store's latest sample
time is passed in). Powers in kW, times tz-aware UTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from megastation.core.schedules import KwSchedule

# A car that draws less than it was allowed (by more than this) limits itself: it is
# planned with what it drew (car maximum, taper) until it draws more.
CAR_CAP_TOLERANCE_KW = 1.0
# Over OCPP a sample's power may reflect the limit before the last one (report and
# profile cross), so a cap is learned only from two samples in a row below the limit.
# False: caps are not learned (the highest limit a car followed is still tracked).
LEARN_CAR_LIMITS = True
CAR_CAP_TOLERANCE_FRAC = 0.1  # ... or by more than this share of the limit (ramps, rounding)
CAR_CAP_MIN_SENT_KW = 2.0  # ... learned only from limits at least this high
CAR_CAP_SETTLE_S = 5.0  # ... and from samples taken this long after the limit was sent
CAR_CAP_TTL_S = 300.0  # a cap of ~0 is probed again after this ...
# ... with this much power: a car that takes it gets its full power back at the next
# plan; a full car keeps drawing nothing, and a whole connector's worth of power is not
# held for it every few minutes (under a binding limit, that starved the others).
CAR_PROBE_KW = 5.0
# Until a DC car whose energy is guessed has shown what it takes, its firm energy is
# planned at no more than this (Korean DC cars take 50-260 kW; about a fifth take 100 kW
# or less): a plan that waits to charge must not count on power the car may not have.
# Its extra energy may use the connector's full power.
UNPROVEN_DC_KW = 100.0
# A schedule's value "just before" an instant (the limit the car was following then).
_JUST_BEFORE = timedelta(microseconds=1)


@dataclass
class CarCaps:
    """Per transaction: the schedule in force on the charger and the car's own limit."""

    sent: dict[int, tuple[datetime, KwSchedule]] = field(default_factory=dict)  # when, what
    cap_kw: dict[int, tuple[float, datetime]] = field(default_factory=dict)  # kW, when learned
    cap_seen: dict[int, datetime] = field(default_factory=dict)  # a first sample below limit
    probing: set[int] = field(default_factory=set)  # offered CAR_PROBE_KW after drawing nothing
    proven_kw: dict[int, float] = field(default_factory=dict)  # highest limit it followed

    def sent_kw(self, transaction_id: int, now: datetime) -> float | None:
        """The limit [kW] last sent to a session, in force just before ``now``."""
        got = self.sent.get(transaction_id)
        if got is None:
            return None
        sched = got[1]
        kw = sched.value_at(now - _JUST_BEFORE)
        return kw if kw is not None else sched.value_at(now)

    def sample_predates_limit(self, transaction_id: int, sample_at: datetime | None) -> bool:
        """True if the car's latest power sample (taken at ``sample_at``, None: none) may
        predate the limit in force."""
        sent = self.sent.get(transaction_id)
        if sent is None:
            return False
        if sample_at is None:
            return True
        return (sample_at - sent[0]).total_seconds() < CAR_CAP_SETTLE_S

    def firm_kw(self, transaction_id: int, max_kw: float) -> float:
        """The power [kW] a DC car with guessed energy is planned with for its firm energy."""
        return min(max_kw, max(UNPROVEN_DC_KW, self.proven_kw.get(transaction_id, 0.0)))

    def cap(
        self, transaction_id: int, drew_kw: float | None, sample_at: datetime | None, now: datetime
    ) -> float:
        """The car's own power limit [kW] as far as it is known (inf: not known).

        ``drew_kw`` is its latest power sample, taken at ``sample_at``. Updates what is
        learned (see the module docstring).
        """
        tid = transaction_id
        cap, learned_at = self.cap_kw.get(tid, (math.inf, now))
        if cap < CAR_CAP_MIN_SENT_KW and (now - learned_at).total_seconds() > CAR_CAP_TTL_S:
            cap, learned_at = CAR_PROBE_KW, now  # drew nothing: offer a little power again
            self.probing.add(tid)
        sent = self.sent.get(tid)
        if sent is None or drew_kw is None or sample_at is None:
            return cap
        if (sample_at - sent[0]).total_seconds() < CAR_CAP_SETTLE_S:
            return cap  # the sample may predate the limit
        limit = self.sent_kw(tid, sample_at)
        if limit is None:
            return cap
        cap, learned_at = self._learn(tid, drew_kw, limit, sample_at, cap, learned_at)
        if not LEARN_CAR_LIMITS:
            return math.inf
        if math.isfinite(cap):
            self.cap_kw[tid] = (cap, learned_at)
        else:
            self.cap_kw.pop(tid, None)
        return cap

    def _learn(
        self,
        tid: int,
        drew: float,
        limit: float,
        sample_at: datetime,
        cap: float,
        learned_at: datetime,
    ) -> tuple[float, datetime]:
        """One settled sample ``drew`` [kW] under ``limit`` [kW]: the new (cap, learned at)."""
        tol = max(CAR_CAP_TOLERANCE_KW, CAR_CAP_TOLERANCE_FRAC * limit)
        took_probe = tid in self.probing and limit >= CAR_CAP_MIN_SENT_KW and drew >= limit - tol
        if drew > cap or took_probe:
            cap = math.inf  # it takes more than it did (or took the probe): no cap
            self.probing.discard(tid)
        if limit >= CAR_CAP_MIN_SENT_KW and drew < limit - tol:
            # only from a second such sample in a row (a single one may predate the limit)
            prev = self.cap_seen.get(tid)
            self.cap_seen[tid] = sample_at
            if prev is not None and prev < sample_at:
                if drew < cap:
                    learned_at = sample_at
                cap = drew
                self.probing.discard(tid)  # did not take the probe either
        else:
            self.cap_seen.pop(tid, None)
        if drew >= limit - tol:
            self.proven_kw[tid] = max(self.proven_kw.get(tid, 0.0), drew)
        return cap, learned_at

    def forget_closed(self, open_ids: set[int]) -> None:
        """Drop what is kept for transactions no longer open."""
        for d in (self.sent, self.cap_kw, self.proven_kw, self.cap_seen):
            for k in [k for k in d if k not in open_ids]:
                del d[k]
