"""A day (or week) to score dispatch strategies on, and the physics that plays it out.

:class:`Scenario` is what the baselines (:mod:`megastation.evaluation.baselines`) and the
receding-horizon replay (:mod:`megastation.evaluation.replay`) share: actual PV, site load, grid
and tariff, battery, hardware groups, car visits and (for the online loop) the PV
forecast issued at each step. :class:`Simulator` applies one step's set points
(power per car, battery power) against the *actual* PV and keeps the books: energy
delivered, battery state and its renewable content, grid import/export, curtailment.
Every strategy is played out by the same simulator, so their figures compare.

Renewable accounting: when a step plays out exactly as an LP plan said (same PV, car and
battery power), the plan's own labels (which PV or battery pool fed the cars) are kept;
otherwise a rule applies: PV feeds cars first, then the battery, then the site load,
then export; the rest is curtailed. Battery discharge feeds cars first, its renewable
(green) part first, and the site load grey first; the grid supplies what is left. Both
are valid labellings of the same physical flows; the LP's are the best for the cars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np
import pandas as pd

from megastation.core.accounting import allocate_battery
from megastation.core.clock import utc
from megastation.dispatch import BatteryState, GridState, Policy, PowerGroup, TimeGrid


class Visit(Protocol):
    """A car's stay (what :class:`megastation.core.fleet.CarVisit` provides)."""

    charger_id: str
    connector_id: int
    arrival: datetime
    departure: datetime
    energy_wanted_kwh: float
    car_max_power_kw: float


# forecast(issue_time, grid) -> PV kW per step of grid (grid starts at issue_time)
PVForecast = Callable[[datetime, TimeGrid], np.ndarray]


@dataclass(frozen=True)
class Scenario:
    """A period to play out; arrays have one value per step of ``grid``."""

    grid: TimeGrid  # the whole period, e.g. 96 or 672 steps of 15 min
    pv_actual_kw: np.ndarray
    site_load_kw: np.ndarray
    grid_state: GridState  # prices per step of the whole period
    visits: Sequence[Visit]
    battery: BatteryState | None = None
    groups: tuple[PowerGroup, ...] = ()
    connector_limit_kw: dict[tuple[str, int], float] = field(default_factory=dict)
    # PV forecast per issue time: None = perfect (the actuals), a callable, or a 2-D
    # array ``[issue step, lead step]`` (lead 0 = the issue step itself).
    pv_forecast: PVForecast | np.ndarray | None = None
    policy: str | Policy = "re100"

    @property
    def n_steps(self) -> int:
        return self.grid.n_steps

    def visit_max_kw(self) -> np.ndarray:
        """Per visit: min(car, connector) [kW]."""
        return np.array(
            [
                min(
                    v.car_max_power_kw,
                    self.connector_limit_kw.get((v.charger_id, v.connector_id), np.inf),
                )
                for v in self.visits
            ]
        )

    def availability(self) -> np.ndarray:
        """Visits x steps: fraction of each step the car is plugged in."""
        edges = self.grid.edges_s
        t0 = self.grid.start.timestamp()
        arr = np.array([utc(v.arrival).timestamp() - t0 for v in self.visits]).reshape(-1)
        dep = np.array([utc(v.departure).timestamp() - t0 for v in self.visits]).reshape(-1)
        lo = np.maximum(edges[None, :-1], arr[:, None])
        hi = np.minimum(edges[None, 1:], dep[:, None])
        return np.clip(hi - lo, 0.0, None) / self.grid.durations_s[None, :]

    def resolved_battery(self) -> BatteryState | None:
        """The battery with its terminal value fixed for the whole period (mean price x
        discharge efficiency unless given), so every re-solve values the end alike."""
        b = self.battery
        if b is None or b.terminal_value_krw_per_kwh is not None:
            return b
        price = float(np.mean(self.grid_state.import_price_krw_per_kwh))
        return BatteryState(
            **{**b.__dict__, "terminal_value_krw_per_kwh": price * b.discharge_efficiency}
        )

    def forecast(self, k: int, grid: TimeGrid) -> np.ndarray:
        """PV forecast issued at step ``k`` for the steps of ``grid`` [kW]."""
        f = self.pv_forecast
        n = grid.n_steps
        if f is None:
            return np.asarray(self.pv_actual_kw[k : k + n], dtype=float)
        if callable(f):
            return np.asarray(f(grid.start, grid), dtype=float)
        arr = np.asarray(f, dtype=float)
        return arr[k, :n]


@dataclass
class Outcome:
    """What a strategy did over a scenario (per step unless said)."""

    name: str
    session_kw: np.ndarray  # visits x steps
    battery_charge_kw: np.ndarray
    battery_discharge_kw: np.ndarray
    grid_import_kw: np.ndarray
    grid_export_kw: np.ndarray
    curtailed_kw: np.ndarray
    soc_frac: np.ndarray  # steps + 1
    ev_renewable_kw: np.ndarray
    ev_grid_kw: np.ndarray
    load_shed_kw: np.ndarray
    delivered_kwh: np.ndarray  # per visit
    wanted_kwh: np.ndarray  # per visit
    price_krw_per_kwh: np.ndarray
    dt_h: np.ndarray
    solve_time_s: float = 0.0
    n_solves: int = 0
    # renewable kWh into cars as the station reports it (pro-rata battery content,
    # :func:`megastation.core.accounting.allocate`); ``ev_renewable_kw`` is the LP's labels
    reported_renewable_to_ev_kwh: float = float("nan")

    def summary(self) -> dict[str, float]:
        """Headline figures: energy [kWh], peak [kW], cost [KRW], shares [0..1]."""
        dt = self.dt_h
        ev = float(self.session_kw.sum(axis=0) @ dt)
        green = float(self.ev_renewable_kw @ dt)
        return {
            "delivered_kwh": float(self.delivered_kwh.sum()),
            "wanted_kwh": float(self.wanted_kwh.sum()),
            "unmet_kwh": float((self.wanted_kwh - self.delivered_kwh).clip(0).sum()),
            "renewable_share": green / ev if ev > 1e-9 else 1.0,
            "renewable_to_ev_kwh": green,
            "reported_renewable_share": (
                self.reported_renewable_to_ev_kwh / ev if ev > 1e-9 else 1.0
            ),
            "reported_renewable_to_ev_kwh": self.reported_renewable_to_ev_kwh,
            "grid_to_ev_kwh": float(self.ev_grid_kw @ dt),
            "grid_import_kwh": float(self.grid_import_kw @ dt),
            "grid_export_kwh": float(self.grid_export_kw @ dt),
            "curtailed_kwh": float(self.curtailed_kw @ dt),
            "peak_kw": float(self.grid_import_kw.max(initial=0.0)),
            "energy_cost_krw": float(self.price_krw_per_kwh @ (self.grid_import_kw * dt)),
            "solve_time_s": self.solve_time_s,
        }


class Simulator:
    """Plays set points step by step against actual PV; the state the online loop sees."""

    def __init__(self, scenario: Scenario) -> None:
        sc = scenario
        self.sc = sc
        n, m = sc.n_steps, len(sc.visits)
        self.dt = sc.grid.durations_h
        self.avail = sc.availability() if m else np.zeros((0, n))
        self.max_kw = sc.visit_max_kw() if m else np.zeros(0)
        self.wanted = np.array([v.energy_wanted_kwh for v in sc.visits], dtype=float)
        self.delivered = np.zeros(m)
        self.last_kw = np.zeros(m)
        self.group_masks = [
            (
                np.array(
                    [(v.charger_id, v.connector_id) in set(g.members) for v in sc.visits],
                    dtype=bool,  # also without visits (an empty float array cannot index)
                ),
                np.broadcast_to(np.asarray(g.max_power_kw, dtype=float), (n,)),
            )
            for g in sc.groups
        ]
        b = sc.battery
        self.cap = b.capacity_kwh if b else 0.0
        self.energy_kwh = b.soc_frac * self.cap if b else 0.0
        self.green_kwh = b.renewable_frac * self.energy_kwh if b else 0.0
        self.peak_kw = sc.grid_state.peak_so_far_kw
        self.k = 0
        self.rec = {
            key: np.zeros(n)
            for key in (
                "charge",
                "discharge",
                "import",
                "export",
                "curtail",
                "ev_green",
                "ev_grid",
                "shed",
            )
        }
        self.session_kw = np.zeros((m, n))
        self.soc = np.zeros(n + 1)
        self.soc[0] = self.energy_kwh / self.cap if self.cap else 0.0

    @property
    def remaining_kwh(self) -> np.ndarray:
        return np.clip(self.wanted - self.delivered, 0.0, None)

    def step(
        self,
        ev_kw: np.ndarray,
        battery_net_charge_kw: float,
        labels: dict[str, float] | None = None,
    ) -> None:
        """Apply car powers (per visit) and battery power in step k [kW]: + charge,
        - discharge (the LP's sign, :attr:`SetPoints.battery_net_charge_kw`).

        ``labels``: the plan's split flows for this step (``Plan.flows_kw`` at step 0);
        when the step played out as planned (same PV, car and battery power) the plan's
        own green/grey labels are kept, otherwise the accounting rule applies.
        """
        sc, k, dt = self.sc, self.k, float(self.dt[self.k])
        b = sc.battery
        pv = float(sc.pv_actual_kw[k])
        load = float(sc.site_load_kw[k])
        ev = np.clip(np.asarray(ev_kw, dtype=float), 0.0, None)
        ev = np.minimum(ev, self.max_kw * self.avail[:, k])
        ev = np.minimum(ev, self.remaining_kwh / dt)
        for mask, lim in self.group_masks:
            tot = ev[mask].sum()
            if tot > lim[k] > -1:
                ev[mask] *= lim[k] / tot
        c = d = 0.0
        if b is not None and self.cap > 0:
            e_min, e_max = b.soc_min_frac * self.cap, b.soc_max_frac * self.cap
            if battery_net_charge_kw > 0:
                c = min(
                    battery_net_charge_kw,
                    b.max_charge_kw,
                    max(0.0, e_max - self.energy_kwh) / (b.charge_efficiency * dt),
                )
            elif battery_net_charge_kw < 0:
                d = min(
                    -battery_net_charge_kw,
                    b.max_discharge_kw,
                    max(0.0, self.energy_kwh - e_min) * b.discharge_efficiency / dt,
                )
        imp_lim = float(np.broadcast_to(sc.grid_state.import_limit_kw, (sc.n_steps,))[k])
        net = ev.sum() + load + c - d - pv
        if net > imp_lim:  # the connection is the hard limit: battery charge, then cars
            cut = min(c, net - imp_lim)
            c -= cut
            net -= cut
            if net > imp_lim and ev.sum() > 0:
                tot = ev.sum()
                ev *= max(0.0, tot - (net - imp_lim)) / tot
                net = ev.sum() + load + c - d - pv
        shed = max(0.0, net - imp_lim)
        imp = max(0.0, net) - shed
        surplus = max(0.0, -net)
        exp_ = min(surplus, sc.grid_state.export_limit_kw)
        curt = surplus - exp_
        # accounting: PV -> cars, battery, load; battery (green first) -> cars
        ev_tot = float(ev.sum())
        green_before = self.green_kwh
        pv_ev = min(pv, ev_tot)
        pv_bat = min(pv - pv_ev, c)
        if c > 0:
            self.green_kwh += pv_bat * b.charge_efficiency * dt
        bat_ev = min(d, ev_tot - pv_ev)
        if d > 0:
            # green to cars first; the rest (site load, export) takes grey first
            green_out = min(self.green_kwh * b.discharge_efficiency / dt, d)
            green_ev = min(bat_ev, green_out)
            grey_out = max(0.0, self.energy_kwh - self.green_kwh) * b.discharge_efficiency / dt
            grey_rest = min(d - bat_ev, max(0.0, grey_out - (bat_ev - green_ev)))
            green_rest = max(0.0, d - bat_ev - grey_rest)
            self.green_kwh -= (green_ev + green_rest) * dt / b.discharge_efficiency
        else:
            green_ev = 0.0
        if b is not None and self.cap > 0:
            self.energy_kwh += (c * b.charge_efficiency - d / b.discharge_efficiency) * dt
            self.green_kwh = min(max(self.green_kwh, 0.0), self.energy_kwh)
        ev_green = pv_ev + green_ev
        if labels is not None and b is not None and self._as_planned(labels, pv, ev_tot, c, d):
            self.green_kwh = (
                green_before
                + (
                    labels["pv_bat"] * b.charge_efficiency
                    - (labels["bg_ev"] + labels["bg_load"] + labels["bg_exp"])
                    / b.discharge_efficiency
                )
                * dt
            )
            self.green_kwh = min(max(self.green_kwh, 0.0), self.energy_kwh)
            ev_green = labels["pv_ev"] + labels["bg_ev"]
        r = self.rec
        r["charge"][k], r["discharge"][k] = c, d
        r["import"][k], r["export"][k], r["curtail"][k] = imp, exp_, curt
        r["ev_green"][k], r["ev_grid"][k], r["shed"][k] = ev_green, ev_tot - ev_green, shed
        self.session_kw[:, k] = ev
        self.delivered += ev * dt
        self.last_kw = ev
        self.peak_kw = max(self.peak_kw, imp)
        self.k += 1
        self.soc[self.k] = self.energy_kwh / self.cap if self.cap else 0.0

    @staticmethod
    def _as_planned(lab: dict[str, float], pv: float, ev: float, c: float, d: float) -> bool:
        pv_plan = lab["pv_ev"] + lab["pv_load"] + lab["pv_bat"] + lab["pv_exp"] + lab["curt"]
        ev_plan = sum(lab.get(k, 0.0) for k in ("pv_ev", "gr_ev", "bg_ev", "by_ev", "bo_ev"))
        c_plan = lab["pv_bat"] + lab["gr_bat"]
        d_plan = sum(
            lab.get(k, 0.0)
            for k in (
                "bg_ev",
                "bg_load",
                "bg_exp",
                "by_ev",
                "by_load",
                "by_exp",
                "bo_ev",
                "bo_load",
                "bo_exp",
            )
        )
        # The battery's *net* power is what happened: a plan that charges PV and sends
        # stored grey energy to the site load in the same step (a label swap the LP's
        # pools allow) plays out as a smaller net charge, and its labels still hold.
        tol = 1e-6 * (1 + pv + ev + c + d)
        return (
            abs(pv - pv_plan) <= tol
            and abs(ev - ev_plan) <= tol
            and abs((c - d) - (c_plan - d_plan)) <= tol
        )

    def reported_renewable_to_ev_kwh(self) -> float:
        """Renewable kWh into cars so far by the station's own accounting (pro-rata
        battery content, charge and discharge netted per step), whatever labels a plan
        used: the figure exports and reports show."""
        sc, r, n = self.sc, self.rec, self.k
        b = sc.battery
        flows = pd.DataFrame(
            {
                "pv_kw": np.asarray(sc.pv_actual_kw, dtype=float)[:n] - r["curtail"][:n],
                "ev_kw": self.session_kw[:, :n].sum(axis=0),
                "base_load_kw": np.asarray(sc.site_load_kw, dtype=float)[:n] - r["shed"][:n],
                "battery_charge_kw": r["charge"][:n],
                "battery_discharge_kw": r["discharge"][:n],
                "grid_import_kw": r["import"][:n],
                "grid_export_kw": r["export"][:n],
                "step_h": self.dt[:n],
            },
            index=sc.grid.times[:n],
        )
        alloc = allocate_battery(flows, b, b.soc_frac if b else 0.0, b.renewable_frac if b else 0.0)
        return float(alloc["ev_renewable_kwh"].sum())

    def outcome(self, name: str, solve_time_s: float = 0.0, n_solves: int = 0) -> Outcome:
        r = self.rec
        return Outcome(
            name=name,
            session_kw=self.session_kw,
            battery_charge_kw=r["charge"],
            battery_discharge_kw=r["discharge"],
            grid_import_kw=r["import"],
            grid_export_kw=r["export"],
            curtailed_kw=r["curtail"],
            soc_frac=self.soc,
            ev_renewable_kw=r["ev_green"],
            ev_grid_kw=r["ev_grid"],
            load_shed_kw=r["shed"],
            delivered_kwh=self.delivered.copy(),
            wanted_kwh=self.wanted.copy(),
            price_krw_per_kwh=np.asarray(self.sc.grid_state.import_price_krw_per_kwh, dtype=float),
            dt_h=self.dt,
            solve_time_s=solve_time_s,
            n_solves=n_solves,
            reported_renewable_to_ev_kwh=self.reported_renewable_to_ev_kwh(),
        )


def capture(
    online: Outcome, limit: Outcome, base: Outcome, metric: str = "renewable_to_ev_kwh"
) -> float:
    """Share of the limit's improvement over ``base`` that ``online`` captures (1 = all)."""
    b, o, lim = (x.summary()[metric] for x in (base, online, limit))
    if abs(lim - b) < 1e-9:
        return 1.0
    return (o - b) / (lim - b)
