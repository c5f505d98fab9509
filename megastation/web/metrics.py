"""``/metrics`` for Prometheus: read at scrape time, nothing on the OCPP hot path.

The central system counts frames in a plain ``Counter`` (one increment per frame); the
rest comes from the store and the console's cached views when Prometheus scrapes.
Names use base units (``_watts``, ``_seconds``, ``_joules``, ``_ratio``) and
``_total`` for counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from megastation.store import web as wr
from megastation.web.views import Views
from ocpp_central.protocol import CALL, CALLERROR

KW = 1000.0  # W per kW
KWH = 3.6e6  # J per kWh


def _gauge(name: str, doc: str, value: Any, labels: dict[str, str] | None = None):
    g = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
    if value is not None:
        if labels:
            g.add_metric(list(labels.values()), float(value))
        else:
            g.add_metric([], float(value))
    return g


class StationCollector(Collector):
    """Collects the station's metrics from a :class:`Views` (and its central system)."""

    def __init__(self, views: Views) -> None:
        self.views = views

    def collect(self) -> Iterable[Metric]:
        ov = self.views.overview(fresh=True)  # a scrape sees the station now (rarely)
        yield from self._chargers(ov)
        yield from self._ocpp_frames()
        yield from self._plan(ov)
        yield from self._site(ov)
        yield from self._connectors(ov)
        yield from self._today(ov)
        yield self._faults(ov)

    def _chargers(self, ov: dict) -> Iterable[Metric]:
        chargers = {c["charger_id"]: c["connected"] for c in ov["connectors"]}
        yield _gauge(
            "megastation_chargers_connected",
            "Chargers connected to the central system now.",
            sum(1 for x in chargers.values() if x),
        )
        yield _gauge("megastation_chargers", "Chargers known to the station.", len(chargers))

    def _ocpp_frames(self) -> Iterable[Metric]:
        central = self.views.central
        counts: Counter = getattr(central, "frame_counts", Counter()) if central else Counter()
        received = CounterMetricFamily(
            "megastation_ocpp_calls_received",
            "OCPP CALLs received from chargers, by action.",
            labels=["action"],
        )
        sent = CounterMetricFamily(
            "megastation_ocpp_calls_sent",
            "OCPP CALLs sent to chargers, by action.",
            labels=["action"],
        )
        errors = CounterMetricFamily(
            "megastation_ocpp_callerrors",
            "OCPP CALLERROR frames, by direction (out: sent by the central system).",
            labels=["direction"],
        )
        err = {"in": 0, "out": 0}
        for (direction, mtype, action), n in sorted(counts.items(), key=str):
            if mtype == CALL and action:
                (received if direction == "in" else sent).add_metric([action], n)
            elif mtype == CALLERROR:
                err[direction] = err.get(direction, 0) + n
        for direction, n in err.items():
            errors.add_metric([direction], n)
        yield received
        yield sent
        yield errors

    def _plan(self, ov: dict) -> Iterable[Metric]:
        plan = ov["plan"] or {}
        yield CounterMetricFamily(
            "megastation_plans",
            "Plans made by the control loop.",
            value=wr.plan_count(self.views.store),
        )
        yield _gauge(
            "megastation_plan_solve_seconds",
            "LP solve time of the latest plan.",
            None if plan.get("solve_ms") is None else plan["solve_ms"] / 1000.0,
        )
        yield _gauge(
            "megastation_plan_cycle_seconds",
            "Whole control cycle time of the latest plan (gather, solve, apply, record).",
            None if plan.get("cycle_ms") is None else plan["cycle_ms"] / 1000.0,
        )

    def _site(self, ov: dict) -> Iterable[Metric]:
        g = ov["grid"]
        yield _gauge(
            "megastation_grid_import_watts",
            "Grid import at the latest plan.",
            None if g["import_kw"] is None else g["import_kw"] * KW,
        )
        yield _gauge(
            "megastation_grid_import_limit_watts", "Grid import limit in force.", g["limit_kw"] * KW
        )
        pv = ov["pv"]
        yield _gauge(
            "megastation_pv_power_watts",
            "PV power measured at the latest plan.",
            None if pv["now_kw"] is None else pv["now_kw"] * KW,
        )
        yield _gauge(
            "megastation_pv_forecast_watts",
            "PV power the latest plan forecast for its first step.",
            None if pv["forecast_kw"] is None else pv["forecast_kw"] * KW,
        )
        b = ov["battery"]
        yield _gauge(
            "megastation_battery_soc_ratio", "Battery state of charge (0..1).", b["soc_frac"]
        )
        yield _gauge(
            "megastation_battery_power_watts",
            "Battery power (> 0 discharging).",
            None if b["power_kw"] is None else b["power_kw"] * KW,
        )

    def _connectors(self, ov: dict) -> Iterable[Metric]:
        ev = GaugeMetricFamily(
            "megastation_connector_power_watts",
            "Car charging power per connector (latest meter value of the open session).",
            labels=["charger", "connector"],
        )
        energy = GaugeMetricFamily(
            "megastation_session_energy_joules",
            "Energy into the car of each connector's open session.",
            labels=["charger", "connector"],
        )
        total_kw = 0.0
        for c in ov["connectors"]:
            if c["transaction_id"] is None:
                continue
            key = [c["charger_id"], str(c["connector_id"])]
            ev.add_metric(key, (c["power_kw"] or 0.0) * KW)
            energy.add_metric(key, (c["energy_kwh"] or 0.0) * KWH)
            total_kw += c["power_kw"] or 0.0
        yield ev
        yield energy
        yield _gauge(
            "megastation_ev_power_watts", "Car charging power, all connectors.", total_kw * KW
        )

    def _today(self, ov: dict) -> Iterable[Metric]:
        t = ov["today"]
        by_source = GaugeMetricFamily(
            "megastation_ev_energy_today_joules",
            "Energy into cars today (site-local day) by source.",
            labels=["source"],
        )
        for source, key in (
            ("pv", "pv_direct_kwh"),
            ("battery", "battery_kwh"),
            ("grid", "grid_kwh"),
        ):
            by_source.add_metric([source], (t[key] or 0.0) * KWH)
        yield by_source
        yield _gauge(
            "megastation_renewable_today_ratio",
            "Renewable share of the energy into cars today.",
            t["renewable_frac"],
        )

    def _faults(self, ov: dict) -> Metric:
        faults = GaugeMetricFamily(
            "megastation_device_faults", "Devices reporting a fault now (1) or not (0).",
            labels=["device"],
        )  # fmt: skip
        faults.add_metric(["battery"], 1.0 if ov["battery"]["fault"] else 0.0)
        for c in ov["connectors"]:
            if c["connector_id"] is not None:
                bad = c["error_code"] not in (None, "", "NoError") or c["status"] == "Faulted"
                faults.add_metric([f"{c['charger_id']}/{c['connector_id']}"], 1.0 if bad else 0.0)
        return faults


def registry_for(views: Views) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StationCollector(views))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
