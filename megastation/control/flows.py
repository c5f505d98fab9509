"""The control loop's energy-flow record: what the station measured, per dispatch step.

:class:`FlowRecorder` integrates the loop's readings (site meter, PV meter, battery,
the chargers' latest power samples) into step means and writes one
:class:`megastation.store.flows.FlowStep` per step (``dispatch_step_min``, 15 min by default)
and one :class:`megastation.store.flows.ConnectorStep` per session and step, so the exports
(``energy-flows``, ``daily``, ``sessions-by-source``) and ``megastation report`` work on
a live store, not only on simulated ones.

- Readings are held from one sample to the next (``observe``); a step's mean of each
  power is its energy over the time covered [kW]. Import and export are integrated
  separately, so a step can show both.
- EV energy comes from the chargers' energy registers (``meter_samples``), not from the
  power samples: each session's delivered energy at a step boundary is interpolated
  between its register samples (transaction start = 0, stop = its final energy), and
  the value used at a boundary starts the next step, so a session's steps add up to its
  metered energy exactly. A step is written ``grace_s`` after it ends, when the first
  register sample after the boundary has usually arrived.
- With a site meter, grid import/export are measured and the base load is the balance
  residual (import - export + PV + battery discharge - charge - EV; it may be slightly
  negative when meters disagree). Without one, the base load is the configured
  ``base_load_kw`` and the grid is computed per sample from the others; the difference
  between register-based and sampled EV energy goes to the grid. Either way a step's
  balance holds.
- Curtailment is not measured (0); ``pv_forecast_kw``/``pv_p10_kw``/``pv_p90_kw`` are the
  forecast of the first plan made in the step (``note_forecast``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from megastation.store import Store, flows, iso, parse_iso, records

DEFAULT_GRACE_S = 60.0

log = logging.getLogger(__name__)


@dataclass
class _Bucket:
    ts: datetime  # start of the covered span
    end: datetime  # step end
    seconds: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)  # kW x s
    soc_frac: float | None = None
    forecast: tuple[float | None, float | None, float | None] | None = None

    def add(self, seconds: float, values: dict[str, float]) -> None:
        self.seconds += seconds
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * seconds


@dataclass
class Reading:
    """What the loop sees at one instant (kW; battery + discharge)."""

    pv_kw: float
    battery_kw: float
    soc_frac: float | None
    ev_kw: float  # sum of the chargers' latest power samples
    grid_limit_kw: float
    import_kw: float | None = None  # None: no site meter (computed)
    export_kw: float | None = None


class FlowRecorder:
    """Integrates readings into per-step flows and writes them to the store."""

    def __init__(
        self,
        store: Store,
        *,
        step_s: float,
        base_load_kw: float,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.store = store
        self.step_s = float(step_s)
        self.base_load_kw = float(base_load_kw)
        self.grace_s = float(grace_s)
        self._last: tuple[datetime, Reading] | None = None
        self._buckets: list[_Bucket] = []  # steps not yet written, in time order
        self._first_at: datetime | None = None
        self._tx_kwh: dict[int, float] = {}  # delivered energy at the last boundary written
        self.steps_written = 0

    # ------------------------------------------------------------------ input

    def _step_start(self, t: datetime) -> datetime:
        s = t.timestamp()
        return datetime.fromtimestamp(s - s % self.step_s, t.tzinfo)

    def _bucket(self, t: datetime) -> _Bucket:
        for b in self._buckets:
            if b.ts <= t < b.end:
                return b
        start = self._step_start(t)
        # the first step starts when recording starts (a restart mid-step covers less)
        b = _Bucket(ts=start if self._first_at is not None else t, end=start + timedelta(
            seconds=self.step_s))  # fmt: skip
        if self._first_at is None:
            self._first_at = t
        self._buckets.append(b)
        self._buckets.sort(key=lambda x: x.ts)
        return b

    def observe(self, t: datetime, reading: Reading) -> None:
        """Hold the previous reading until ``t``, then take this one; write due steps.

        A non-finite value in ``reading`` (a device's bug) is not recorded: a meter's
        import/export counts as no meter reading, any other power as 0 (logged).
        """
        reading = _finite_reading(reading)
        if self._last is not None:
            t0, r = self._last
            values = self._values(r)
            while t0 < t:
                b = self._bucket(t0)
                seg_end = min(t, b.end)
                b.add((seg_end - t0).total_seconds(), values)
                t0 = seg_end
        b = self._bucket(t)
        if b.soc_frac is None:
            b.soc_frac = reading.soc_frac
        self._last = (t, reading)
        self.flush(t)

    def note_forecast(
        self, t: datetime, p50_kw: float | None, p10_kw: float | None, p90_kw: float | None
    ) -> None:
        """The PV forecast [kW] a plan made at ``t`` had for its first step."""
        b = self._bucket(t)
        if b.forecast is None:
            b.forecast = (p50_kw, p10_kw, p90_kw)

    def _values(self, r: Reading) -> dict[str, float]:
        v = {
            "pv_kw": max(r.pv_kw, 0.0),
            "battery_charge_kw": max(-r.battery_kw, 0.0),
            "battery_discharge_kw": max(r.battery_kw, 0.0),
            "ev_sampled_kw": max(r.ev_kw, 0.0),
            "grid_limit_kw": r.grid_limit_kw,
        }
        if r.import_kw is not None:
            v["grid_import_kw"] = max(r.import_kw, 0.0)
            v["grid_export_kw"] = max(r.export_kw or 0.0, 0.0)
            v["metered"] = 1.0
        else:
            net = r.ev_kw + self.base_load_kw - r.pv_kw - r.battery_kw
            v["grid_import_kw"] = max(net, 0.0)
            v["grid_export_kw"] = max(-net, 0.0)
        return v

    # ------------------------------------------------------------------ output

    def flush(self, now: datetime, *, partial: bool = False) -> int:
        """Write the steps that ended ``grace_s`` before ``now`` (``partial``: also the
        one in progress, up to the last reading); return how many."""
        n = 0
        while self._buckets:
            b = self._buckets[0]
            done = (now - b.end).total_seconds() >= self.grace_s
            if not done and not (partial and len(self._buckets) == 1):
                break
            self._buckets.pop(0)
            if b.seconds <= 0:
                continue
            end = b.end if done else b.ts + timedelta(seconds=b.seconds)
            self._write(b, end)
            n += 1
        return n

    def _write(self, b: _Bucket, end: datetime) -> None:
        mean = {k: v / b.seconds for k, v in b.sums.items()}
        step_h = b.seconds / 3600.0
        per_tx = self._session_energy(b.ts, end)
        ev_kw = sum(kwh for *_, kwh in per_tx) / step_h
        imp, exp = mean.get("grid_import_kw", 0.0), mean.get("grid_export_kw", 0.0)
        pv = mean.get("pv_kw", 0.0)
        chg, dis = mean.get("battery_charge_kw", 0.0), mean.get("battery_discharge_kw", 0.0)
        if mean.get("metered", 0.0) > 0.999:
            base = imp - exp + pv + dis - chg - ev_kw  # the balance residual
        else:
            base = self.base_load_kw
            d = ev_kw - mean.get("ev_sampled_kw", 0.0)  # registers vs power samples
            if d >= 0:
                take = min(d, exp)
                exp -= take
                imp += d - take
            else:
                take = min(-d, imp)
                imp -= take
                exp += -d - take
            # metered for part of the step only: the residual closes the balance
            base = imp - exp + pv + dis - chg - ev_kw if mean.get("metered") else base
        fc = b.forecast or (None, None, None)
        flows.record_flows(
            self.store,
            flows.FlowStep(
                ts=b.ts,
                step_s=b.seconds,
                pv_kw=pv,
                ev_kw=ev_kw,
                battery_charge_kw=chg,
                battery_discharge_kw=dis,
                grid_import_kw=imp,
                grid_export_kw=exp,
                base_load_kw=base,
                curtailed_kw=0.0,
                soc_frac=b.soc_frac,
                grid_limit_kw=mean.get("grid_limit_kw"),
                pv_forecast_kw=fc[0],
                pv_p10_kw=fc[1],
                pv_p90_kw=fc[2],
            ),
        )
        flows.record_connector_flows(
            self.store,
            [
                flows.ConnectorStep(b.ts, ch, conn, kwh / step_h, tx)
                for tx, ch, conn, kwh in per_tx
                if kwh > 0
            ],
        )
        self.steps_written += 1

    def _session_energy(self, t0: datetime, t1: datetime) -> list[tuple[int, str, int, float]]:
        """(transaction, charger, connector, kWh) delivered in ``[t0, t1)``, per session."""
        rows = self.store.conn.execute(
            "SELECT id, charger_id, connector_id, start_time, stop_time, state, "
            "meter_start_wh, energy_kwh FROM transactions "
            "WHERE start_time < ? AND (stop_time IS NULL OR stop_time > ? OR state = 'open')",
            (iso(t1), iso(t0)),
        ).fetchall()
        out = []
        seen = set()
        for tx, ch, conn, start, stop, state, start_wh, energy_kwh in rows:
            seen.add(tx)
            at = _delivered_at(self.store, tx, parse_iso(start), stop, state, start_wh, energy_kwh)
            prev = self._tx_kwh.get(tx)
            if prev is None:
                prev = at(t0)
            now_kwh = max(at(t1), prev)
            out.append((tx, ch, int(conn or 0), now_kwh - prev))
            if state == "open" or (stop is not None and parse_iso(stop) > t1):
                self._tx_kwh[tx] = now_kwh
            else:
                self._tx_kwh.pop(tx, None)
        for tx in [k for k in self._tx_kwh if k not in seen]:
            del self._tx_kwh[tx]
        return out


def _finite_reading(r: Reading) -> Reading:
    bad = [k for k, v in dataclasses.asdict(r).items() if v is not None and not math.isfinite(v)]
    if not bad:
        return r
    log.warning("energy flows: non-finite %s in a reading not recorded", ", ".join(bad))
    fixed = {k: (0.0 if k in ("pv_kw", "battery_kw", "ev_kw") else None) for k in bad}
    if "import_kw" in bad or "export_kw" in bad:
        fixed["import_kw"] = fixed["export_kw"] = None
    if "grid_limit_kw" in bad:
        fixed["grid_limit_kw"] = 0.0
    return dataclasses.replace(r, **fixed)


def _delivered_at(
    store: Store,
    tx: int,
    start: datetime,
    stop: str | None,
    state: str,
    start_wh: float | None,
    energy_kwh: float | None,
) -> Callable[[datetime], float]:
    """Delivered energy [kWh] of a session as a function of time (register samples
    interpolated; 0 at the start, the final energy at the stop)."""
    regs = store.conn.execute(
        "SELECT ts, value FROM meter_samples WHERE transaction_id = ? AND measurand = ? "
        f"AND phase = '' AND location IN ('', 'Outlet') AND {records.FINITE_VALUE} ORDER BY ts",
        (tx, records.ENERGY_REGISTER),
    ).fetchall()
    start_kwh = start_wh / 1000.0 if start_wh is not None else (regs[0][1] if regs else 0.0)
    ts = [start.timestamp()] + [parse_iso(r[0]).timestamp() for r in regs]
    kwh = [0.0] + [max(0.0, r[1] - start_kwh) for r in regs]
    if state != "open" and stop is not None and records.finite_or_none(energy_kwh) is not None:
        ts.append(parse_iso(stop).timestamp())
        kwh.append(float(energy_kwh))
    order = np.argsort(ts, kind="stable")
    xs = np.asarray(ts, dtype=float)[order]
    ys = np.maximum.accumulate(np.asarray(kwh, dtype=float)[order])

    def at(t: datetime) -> float:
        return float(np.interp(t.timestamp(), xs, ys))

    return at


__all__ = ["DEFAULT_GRACE_S", "FlowRecorder", "Reading"]
