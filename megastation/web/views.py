"""Read models of the console and API: plain JSON-ready dicts built from the store.

No SQL here: each view calls the store modules the CLI calls (records, control
records, commands, flows, exports). Power in kW, energy in kWh, fractions 0..1, times
ISO 8601 UTC. :class:`Views` caches the costlier ones (today's figures, the flow chart)
for a few wall-clock seconds, so many browsers cost the OCPP server one computation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from megastation.core import accounting
from megastation.core.clock import Clock
from megastation.core.config import Station
from megastation.reports import sessions as session_export
from megastation.reports.exports import sessions_by_source_frame
from megastation.sim.simulator import daily_kpis  # imported here, not on the loop's first view
from megastation.store import Store, commands, flows, parse_iso, records
from megastation.store import control as cr
from megastation.store import web as wr
from megastation.store.weather_feed import feed_status


def _num(x: Any, nd: int = 3) -> float | None:
    """A JSON number (None for missing or NaN)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return round(v, nd) if math.isfinite(v) else None


def day_bounds(
    station: Station, now: datetime, day: str | None = None
) -> tuple[datetime, datetime]:
    """``[start, end)`` of the site-local day ``day`` (ISO date) or of today; UTC-aware."""
    tz = station.site.tz
    d = datetime.fromisoformat(day).date() if day else now.astimezone(tz).date()
    start = datetime(d.year, d.month, d.day, tzinfo=tz)
    return start, start + timedelta(days=1)


class Views:
    """The console's data, read from ``store`` on ``clock``; ``central`` (optional) is the
    running :class:`~ocpp_central.server.CentralSystem` in this process (live connection
    state and last heartbeats)."""

    def __init__(
        self,
        station: Station,
        store: Store,
        clock: Clock,
        central: Any = None,
        *,
        cache_s: float = 2.0,
    ) -> None:
        self.station = station  # the station config
        self.store = store  # source of truth
        self.clock = clock  # station time ("today", limits in force)
        self.central = central  # live central system or None
        self.cache_s = cache_s  # seconds (wall) a computed view is reused
        self._cache: dict[str, tuple[float, Any]] = {}
        records.sync_station_chargers(store, station)  # the station file's chargers are listed

    def cached(self, key: str, fn: Callable[[], Any], ttl_s: float | None = None) -> Any:
        hit = self._cache.get(key)
        t = time.monotonic()
        if hit is not None and t - hit[0] < (self.cache_s if ttl_s is None else ttl_s):
            return hit[1]
        value = fn()
        self._cache[key] = (t, value)
        return value

    def invalidate(self) -> None:
        self._cache.clear()

    # ----------------------------------------------------------------- connectors

    def connectors(self) -> list[dict[str, Any]]:
        """One row per charger and connector: status, car power, limit in force, SoC, energy."""
        store, now = self.store, self.clock.now()
        chargers = wr.charger_states(store)
        by_charger: dict[str, list[dict[str, Any]]] = {}
        for x in records.connector_statuses(store):
            if x["connector_id"]:
                by_charger.setdefault(x["charger_id"], []).append(x)
        open_tx = {(t.charger_id, t.connector_id): t for t in records.open_transactions(store)}
        tx_connectors: dict[str, list[int]] = {}
        for c_id, n in sorted(open_tx, key=lambda k: (k[0], k[1] or 0)):
            tx_connectors.setdefault(c_id, []).append(n)
        limits: dict[tuple[str, int, str], tuple[float | None, int | None]] = {}
        for p in cr.list_active_profiles(store):
            value = None
            for s, v in zip(p.schedule["starts"], p.schedule["limits_kw"], strict=True):
                if parse_iso(s) <= now:
                    value = v
            limits[p.charger_id, p.connector_id, p.purpose] = (value, p.transaction_id)
        rows = []
        for c in chargers:
            cid = c["id"]
            mine = list(by_charger.get(cid, ()))
            seen = {x["connector_id"] for x in mine}
            mine += [  # a session on a connector that sent no status yet
                {"connector_id": n, "status": None, "error_code": None}
                for n in tx_connectors.get(cid, ())
                if n not in seen
            ]
            mine = mine or [{"connector_id": None, "status": None, "error_code": None}]
            for x in mine:
                t = open_tx.get((cid, x["connector_id"]))
                limit_kw, source = None, None
                tx_lim = limits.get((cid, x["connector_id"], "tx"))
                if t is not None and tx_lim is not None and tx_lim[1] == t.transaction_id:
                    limit_kw, source = tx_lim[0], "plan"
                elif (cid, 0, "tx_default") in limits:
                    limit_kw, source = limits[cid, 0, "tx_default"][0], "fail-safe"
                rows.append(
                    {
                        "charger_id": cid,
                        "connector_id": x["connector_id"],
                        "connected": self._connected(cid, c),
                        "registration": c["registration"],
                        "status": x["status"],
                        "error_code": x["error_code"],
                        "transaction_id": t.transaction_id if t else None,
                        "power_kw": _num(t.power_kw) if t else None,
                        "limit_kw": _num(limit_kw),
                        "limit_source": source,
                        "soc_frac": _num(t.soc_frac, 4) if t else None,
                        "energy_kwh": _num(t.energy_kwh) if t else None,
                    }
                )
        return rows

    def _connected(self, charger_id: str, row: dict[str, Any]) -> bool:
        if self.central is not None:
            return bool(self.central.is_connected(charger_id))
        return bool(row["connected"])

    # ----------------------------------------------------------------- overview

    def overview(self, *, fresh: bool = False) -> dict[str, Any]:
        """The overview; ``fresh`` computes it now instead of reusing one up to ``cache_s`` old."""
        return self._overview() if fresh else self.cached("overview", self._overview)

    def overview_json(self) -> str:
        """:meth:`overview` as compact JSON, made once per cache period for every client."""
        ov = self.overview()
        hit = self._cache.get("overview_json")
        if hit is not None and hit[1][0] is ov:
            return hit[1][1]
        text = json.dumps(ov, separators=(",", ":"))
        self._cache["overview_json"] = (time.monotonic(), (ov, text))
        return text

    def _overview(self) -> dict[str, Any]:
        store, site, now = self.store, self.station.site, self.clock.now()
        limit_kw, source = cr.grid_limit_kw(store, site.grid_import_limit_kw, now)
        setting = store.get_setting(cr.GRID_LIMIT_KEY)
        plan = cr.latest_plan(store)
        out: dict[str, Any] = {
            "time": now.isoformat(),
            "station": site.name,
            "timezone": site.timezone,
            "connectors": self.connectors(),
            "grid": {
                "import_kw": None,
                "limit_kw": limit_kw,
                "limit_source": source,
                "limit_until": setting.get("until") if source == "operator" and setting else None,
                "configured_limit_kw": site.grid_import_limit_kw,
            },
            "pv": {"now_kw": None, "forecast_kw": None},
            "battery": {"soc_frac": None, "power_kw": None, "fault": None},
            "policy": cr.policy(store, site.policy),
            "plan": None,
            "today": self.today(),
            "weather_feed": feed_status(store, now),  # None: no feed has run
        }
        if plan is not None:
            fs, hz, inp = plan["first_step"], plan["horizon"], plan["inputs"]
            batt = inp.get("battery") or {}
            out["grid"]["import_kw"] = _num(plan["grid_import_kw"])
            out["grid"]["planned_import_kw"] = _num(fs.get("grid_import_kw"))
            out["pv"] = {
                "now_kw": _num(plan["pv_kw"]),
                "forecast_kw": _num((hz.get("pv_kw") or [None])[0]),
            }
            out["battery"] = {
                "soc_frac": _num(plan["battery_soc_frac"], 4),
                "power_kw": _num(plan["battery_kw"]),
                "fault": batt.get("fault"),
            }
            out["plan"] = {
                "id": plan["id"],
                "time": plan["created_at"],
                "reason": plan["reason"],
                "status": plan["status"],
                "policy": plan["policy"],
                "grid_limit_kw": plan["grid_limit_kw"],
                "solve_ms": _num(plan["solve_ms"], 1),
                "cycle_ms": _num(plan["cycle_ms"], 1),
            }
        return out

    # ----------------------------------------------------------------- today's figures

    def today(self) -> dict[str, Any]:
        return self.cached("today", self._today, ttl_s=max(self.cache_s, 5.0))

    def _today(self) -> dict[str, Any]:
        """Today's energy into cars by source, renewable share, grid import, cost [kWh, KRW]."""
        start, end = day_bounds(self.station, self.clock.now())
        # two days before today carry the battery's renewable content into today
        f = flows.read_flows(self.store, start - timedelta(days=2), end)
        out: dict[str, Any] = {
            "day": start.date().isoformat(),
            "energy_kwh": 0.0,
            "pv_direct_kwh": 0.0,
            "battery_kwh": 0.0,
            "grid_kwh": 0.0,
            "renewable_frac": None,
            "grid_import_kwh": 0.0,
            "pv_kwh": 0.0,
            "cost_krw": 0.0,
            "peak_import_kw": 0.0,
        }
        if f.empty or not (f.index >= pd.Timestamp(start)).any():
            return out
        d = daily_kpis(self.station, f, start, end)
        if len(d):
            r = d.iloc[-1]
            out.update(
                energy_kwh=_num(r["energy_kwh"]),
                renewable_frac=_num(r["renewable_frac"], 4),
                grid_import_kwh=_num(r["grid_import_kwh"]),
                cost_krw=_num(r["cost_krw"], 0),
                peak_import_kw=_num(r["peak_import_kw"]),
            )
        soc0 = float(f["soc_frac"].iloc[0])
        alloc = accounting.allocate_battery(
            f, self.station.battery, soc0 if math.isfinite(soc0) else 0.0
        )
        a = alloc[alloc.index >= pd.Timestamp(start)]
        out["pv_direct_kwh"] = _num(a["ev_pv_kwh"].sum())
        out["battery_kwh"] = _num(a["ev_battery_kwh"].sum())
        out["grid_kwh"] = _num(a["ev_grid_kwh"].sum())
        today = f[f.index >= pd.Timestamp(start)]
        h = today["step_s"].to_numpy(float) / 3600.0
        out["pv_kwh"] = _num(((today["pv_kw"] + today["curtailed_kw"].fillna(0.0)) * h).sum())
        return out

    # ----------------------------------------------------------------- chart data

    def day_flows(self, day: str | None = None) -> dict[str, Any]:
        return self.cached(f"flows:{day}", lambda: self._day_flows(day), ttl_s=5.0)

    def _day_flows(self, day: str | None) -> dict[str, Any]:
        """A day's recorded flows (one point per step) and the latest plan's horizon beside
        the forecast band: series of equal length keyed by name, times in epoch seconds."""
        start, end = day_bounds(self.station, self.clock.now(), day)
        f = flows.read_flows(self.store, start, end)
        t = [int(ts.timestamp()) for ts in f.index]

        def col(name: str) -> list[float | None]:
            return [_num(v) for v in f[name]] if name in f else [None] * len(f)

        battery = (
            [_num(a - b) for a, b in zip(f["battery_discharge_kw"], f["battery_charge_kw"], strict=True)]
            if len(f)
            else []
        )  # fmt: skip
        out: dict[str, Any] = {
            "day": start.date().isoformat(),
            "flows": {
                "time": t,
                "pv_kw": col("pv_kw"),
                "ev_kw": col("ev_kw"),
                "grid_import_kw": col("grid_import_kw"),
                "battery_kw": battery,
                "grid_limit_kw": col("grid_limit_kw"),
                "pv_forecast_kw": col("pv_forecast_kw"),
                "pv_p10_kw": col("pv_p10_kw"),
                "pv_p90_kw": col("pv_p90_kw"),
            },
            "plan": None,
        }
        plan = cr.latest_plan(self.store)
        if plan is not None and plan["horizon"].get("times"):
            hz = plan["horizon"]
            band = self._band([parse_iso(x) for x in hz["times"]])
            out["plan"] = {
                "id": plan["id"],
                "time": plan["created_at"],
                "grid_limit_kw": plan["grid_limit_kw"],
                "series": {
                    "time": [int(parse_iso(x).timestamp()) for x in hz["times"]],
                    "pv_kw": hz.get("pv_kw"),
                    "ev_kw": hz.get("ev_kw"),
                    "grid_import_kw": hz.get("grid_import_kw"),
                    "battery_kw": hz.get("battery_kw"),
                    "soc_frac": hz.get("soc_frac"),
                    "pv_p10_kw": band["p10_kw"],
                    "pv_p90_kw": band["p90_kw"],
                },
            }
        return out

    def _band(self, times: list[datetime]) -> dict[str, list[float | None]]:
        """The latest issued PV forecast's P10/P90 at ``times`` (None where it has none)."""
        fc = wr.latest_pv_forecast(self.store)
        out: dict[str, list[float | None]] = {
            "p10_kw": [None] * len(times),
            "p90_kw": [None] * len(times),
        }
        if fc is None:
            return out
        t0, step = parse_iso(fc["start"]), fc["step_min"] * 60.0
        for i, t in enumerate(times):
            k = int((t - t0).total_seconds() // step)
            if 0 <= k < len(fc["p10_kw"]):
                out["p10_kw"][i] = _num(fc["p10_kw"][k])
                out["p90_kw"][i] = _num(fc["p90_kw"][k])
        return out

    # ----------------------------------------------------------------- lists

    def sessions(self, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
        """Sessions with their metered energy and the energy by source [kWh]."""
        by = sessions_by_source_frame(self.store, self.station, start, end)
        base = {r["transaction_id"]: r for r in session_export.session_rows(self.store, start, end)}
        rows = []
        for r in by.to_dict("records"):
            b = base.get(r["transaction_id"], {})
            rows.append(
                {
                    "transaction_id": int(r["transaction_id"]),
                    "charger_id": r["charger_id"],
                    "connector_id": r["connector_id"],
                    "id_token": r["id_token"],
                    "start_time_utc": r["start_time_utc"],
                    "stop_time_utc": r["stop_time_utc"],
                    "state": b.get("state"),
                    "stop_reason": b.get("stop_reason"),
                    "energy_kwh": _num(r["energy_kwh"]),
                    "pv_direct_kwh": _num(r["pv_direct_kwh"]),
                    "battery_kwh": _num(r["battery_kwh"]),
                    "grid_kwh": _num(r["grid_kwh"]),
                    "renewable_frac": _num(r["renewable_frac"], 4),
                }
            )
        rows.sort(key=lambda r: r["transaction_id"], reverse=True)
        return rows

    def chargers(self) -> list[dict[str, Any]]:
        """Boot data, connection, registration and last heartbeat of every charger."""
        beats = getattr(self.central, "last_heartbeat", {}) if self.central else {}
        out = []
        for c in records.list_chargers(self.store):
            out.append(
                {
                    "id": c["id"],
                    "registration": c["registration"],
                    "source": c["source"],
                    "ocpp_version": c["ocpp_version"],
                    "vendor": c["vendor"],
                    "model": c["model"],
                    "serial_number": c["serial_number"],
                    "firmware_version": c["firmware_version"],
                    "boot_reason": c["boot_reason"],
                    "last_boot_at": c["last_boot_at"],
                    "connected": self._connected(c["id"], c),
                    "connected_at": c["connected_at"],
                    "disconnected_at": c["disconnected_at"],
                    "last_seen_at": c["last_seen_at"],
                    "last_heartbeat_at": beats.get(c["id"]),
                    "password_set": bool(c["password_hash"]),
                }
            )
        return out

    def commands(self, limit: int = 50) -> list[dict[str, Any]]:
        commands.expire_pending(self.store)
        return commands.list_commands(self.store, limit)

    def command(self, command_id: int) -> dict[str, Any] | None:
        return commands.get_command(self.store, command_id)

    def id_tokens(self) -> list[dict[str, Any]]:
        return records.list_id_tokens(self.store)

    def actions(self, limit: int = 50) -> list[dict[str, Any]]:
        return wr.list_actions(self.store, limit)
