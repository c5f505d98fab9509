"""Operator control of the live loop: `limit`, `session`, `policy`, `export dispatch`,
and the control part of `status` ("control" in `status --json`; also
`megastation control-status [--json]`).

Each command writes to the store; a running `megastation serve` picks it up on its
next cycle (within ``site.dispatch_interval_s``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from megastation.cli import main
from megastation.cli.common import (
    Context,
    export_group,
    output_option,
    parse_range,
    parse_when,
    pass_ctx,
    range_options,
)
from megastation.cli.ocpp_cmd import add_status_section
from megastation.core.config import Station
from megastation.store import Store, json_text, parse_iso, records
from megastation.store import control as cr
from megastation.store import devices as device_store
from megastation.store.weather_feed import feed_status

# What the controller does without a faulted device of each kind
WITHOUT_DEVICE = {
    "battery": "planned without it (battery idle)",
    "pv": "PV from the forecast",
    "meter": "site balance from the chargers",
}


@main.command("limit")
@click.option("--grid-kw", type=float, help="Grid import limit [kW] from now on.")
@click.option("--until", "until", help="Until this time (ISO; local if no zone); default: open.")
@click.option("--clear", is_flag=True, help="Back to the configured limit.")
@click.option("--force", is_flag=True, help="Allow a limit above the configured connection.")
@pass_ctx
def limit(ctx: Context, grid_kw: float | None, until: str | None, clear: bool, force: bool) -> None:
    """Lower (or raise) the site's grid import limit live, e.g. on a utility request."""
    st = ctx.station
    if clear:
        cr.set_grid_limit(ctx.store, None)
        click.echo(f"grid import limit: {st.site.grid_import_limit_kw:g} kW (config)")
        return
    if grid_kw is None:
        kw, source = cr.grid_limit_kw(ctx.store, st.site.grid_import_limit_kw, ctx.store.now())
        click.echo(f"grid import limit: {kw:g} kW ({source})")
        return
    end = parse_when(until, st, option="--until")
    try:
        cr.set_grid_limit(
            ctx.store, grid_kw, end, connection_kw=st.site.grid_import_limit_kw, force=force
        )
    except records.InvalidValue as e:
        hint = {"grid_kw": "--grid-kw", "until": "--until"}[e.field]
        raise click.BadParameter(e.message, param_hint=hint) from None
    click.echo(f"grid import limit: {grid_kw:g} kW" + (f" until {end.isoformat()}" if end else ""))


@main.command("session")
@click.argument("session", type=int)
@click.option("--depart", help="Departure time (ISO; local if no zone).")
@click.option("--energy-kwh", type=float, help="Total energy the car should get [kWh].")
@pass_ctx
def session(ctx: Context, session: int, depart: str | None, energy_kwh: float | None) -> None:
    """Override a session's departure and energy (SESSION = transaction id in `sessions`)."""
    if depart is None and energy_kwh is None:
        raise click.UsageError("give --depart and/or --energy-kwh")
    tx = records.get_transaction(ctx.store, session)
    if tx is None:
        raise click.ClickException(f"no session {session}")
    dep = parse_when(depart, ctx.station, option="--depart")
    try:
        cr.set_session_override(ctx.store, session, departure=dep, energy_kwh=energy_kwh)
    except records.InvalidValue as e:
        raise click.BadParameter(e.message, param_hint="--energy-kwh") from None
    click.echo(
        f"session {session}: "
        + ", ".join(
            x
            for x in (
                f"depart {dep.isoformat()}" if dep else "",
                f"energy {energy_kwh:g} kWh" if energy_kwh is not None else "",
            )
            if x
        )
    )


@main.command("policy")
@click.argument("policy", type=click.Choice(cr.POLICIES), required=False)
@pass_ctx
def policy(ctx: Context, policy: str | None) -> None:
    """Show or set the dispatch policy: re100 (renewable share first) or cost (money first)."""
    if policy is None:
        click.echo(cr.policy(ctx.store, ctx.station.site.policy))
        return
    cr.set_policy(ctx.store, policy)
    click.echo(f"policy: {policy}")


# --------------------------------------------------------------------------- export dispatch


@export_group().command("dispatch")
@output_option
@range_options
@pass_ctx
def export_dispatch(ctx: Context, output: Path, start: str | None, end: str | None) -> None:
    """Every plan and the set point of each connector: one row per plan and connector."""
    n = cr.export_dispatch_csv(ctx.store, output, *parse_range(start, end, ctx.station))
    click.echo(f"{output}: {n} rows")


# --------------------------------------------------------------------------- status


def control_status(store: Store, station: Station) -> dict[str, Any]:
    """What the loop decided last: connector limits, battery, PV now and forecast,
    grid import against the limit. Plain data for `status` and scripts."""
    now = store.now()
    limit_kw, source = cr.grid_limit_kw(store, station.site.grid_import_limit_kw, now)
    plan = cr.latest_plan(store)
    out: dict[str, Any] = {
        "grid_limit_kw": limit_kw,
        "grid_limit_source": source,
        "policy": cr.policy(store, station.site.policy),
        "plan": None,
        "connectors": [],
        "uncontrollable": cr.uncontrollable_chargers(store),
        "devices": [
            {
                "name": d["name"],
                "kind": d["kind"],
                "address": d["address"],
                "fault": d["fault"],
                "fault_since": d["fault_since"],
                "without_it": WITHOUT_DEVICE.get(d["kind"]) if d["fault"] else None,
                "reading_at": d["reading_at"],
            }
            for d in device_store.device_statuses(store)
        ],
        # cycles failing now: {"error", "since", "last_at", "count"}; the plan below is
        # then the last good one, older than "since"
        "cycle_error": cr.cycle_error(store),
        # the live weather forecast feed (None: none has run): provider, attempted_at, ok,
        # error, failing_since, last_ok_at, age_min, fetches, failures, source
        "weather_feed": feed_status(store, now),
    }
    if plan is not None:
        fs = plan["first_step"]
        hz = plan["horizon"]
        out["plan"] = {
            "id": plan["id"],
            "time": plan["created_at"],
            "reason": plan["reason"],
            "status": plan["status"],
            "cycle_ms": round(plan["cycle_ms"] or 0, 1),
            "grid_import_kw": plan["grid_import_kw"],
            "planned_grid_import_kw": fs.get("grid_import_kw"),
            "pv_now_kw": plan["pv_kw"],
            "pv_forecast_kw": hz.get("pv_kw", [])[:8],  # next 8 steps
            "pv_forecast_times": hz.get("times", [])[:8],
            "battery_soc_frac": plan["battery_soc_frac"],
            "battery_kw": fs.get("battery_kw"),  # > 0 discharge
            "ev_kw": fs.get("ev_kw"),
            # bad values in the store the cycle skipped (e.g. a non-finite stored flow)
            "warnings": (plan.get("inputs") or {}).get("warnings", []),
        }
    for p in cr.list_active_profiles(store):
        sched = p.schedule
        starts = [parse_iso(s) for s in sched["starts"]]
        value = None
        for s, v in zip(starts, sched["limits_kw"], strict=True):
            if s <= now:
                value = v
        out["connectors"].append(
            {
                "charger_id": p.charger_id,
                "connector_id": p.connector_id,
                "profile": p.purpose,
                "transaction_id": p.transaction_id,
                "limit_kw": value,
                "sent_at": p.sent_at.isoformat(),
            }
        )
    return out


def print_control_status(data: dict[str, Any]) -> None:
    click.echo("")
    click.echo(
        f"grid limit {data['grid_limit_kw']:g} kW ({data['grid_limit_source']}), "
        f"policy {data['policy']}"
    )
    err = data.get("cycle_error")
    if err:
        click.echo(
            f"CONTROL CYCLES FAILING since {err['since']} ({err['count']} failures, last at "
            f"{err['last_at']}): {err['error']}"
        )
        click.echo("  the plan below is the last good one; chargers follow their fail-safe limits")
    plan = data["plan"]
    if plan is None:
        click.echo("no plan yet (is `megastation serve` running?)")
    else:
        imp = plan["grid_import_kw"]
        click.echo(
            f"plan {plan['id']} at {plan['time']} ({plan['reason']}, {plan['status']}, "
            f"{plan['cycle_ms']} ms): grid import {imp if imp is None else round(imp, 1)} kW "
            f"of {data['grid_limit_kw']:g} kW, planned {plan['planned_grid_import_kw']:.1f} kW"
        )
        soc = plan["battery_soc_frac"]
        click.echo(
            f"battery {'-' if soc is None else f'{soc:.0%}'} SoC, "
            f"{(plan['battery_kw'] or 0):+.1f} kW (+ discharge); EVs {plan['ev_kw']:.1f} kW"
        )
        pv_now = plan["pv_now_kw"]
        fc = ", ".join(f"{v:.0f}" for v in plan["pv_forecast_kw"])
        click.echo(
            f"PV now {'-' if pv_now is None else f'{pv_now:.1f}'} kW; forecast (kW, 15 min): {fc}"
        )
        for w in plan.get("warnings") or ():
            click.echo(f"warning: {w}")
    if data["connectors"]:
        click.echo("connector limits:")
        for c in data["connectors"]:
            lim = "-" if c["limit_kw"] is None else f"{c['limit_kw']:.1f} kW"
            click.echo(
                f"  {c['charger_id']}/{c['connector_id']} {c['profile']:<10} {lim}"
                + (f"  tx {c['transaction_id']}" if c["transaction_id"] else "")
            )
    for cid, reason in data["uncontrollable"].items():
        click.echo(f"  {cid}: uncontrollable ({reason})")
    for d in data.get("devices", []):
        if d["fault"]:
            click.echo(
                f"device {d['name']} ({d['kind']}, {d['address']}) FAULT since "
                f"{d['fault_since']}: {d['fault']}; {d['without_it']}"
            )
    _print_feed(data.get("weather_feed"))
    simulated = [d["kind"] for d in data.get("devices", []) if d["address"] == "simulated"]
    if simulated:
        click.echo(f"simulated devices: {', '.join(simulated)}")


def _print_feed(feed: dict[str, Any] | None) -> None:
    """One line on the weather feed (two when it is failing)."""
    if feed is None:
        return
    age = "never" if feed["age_min"] is None else f"{feed['age_min']:.0f} min ago"
    state = "ok" if feed["ok"] else f"FAILING since {feed['failing_since']}"
    click.echo(
        f"weather feed {feed['provider']}: {state}; last fetch {feed['attempted_at']}, last good "
        f"{age} ({feed['fetches']} fetches, {feed['failures']} failed); PV forecast from "
        f"{feed['source']}"
    )
    if not feed["ok"]:
        click.echo(f"  last error: {feed['error']}")


@main.command("control-status")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_ctx
def control_status_cmd(ctx: Context, as_json: bool) -> None:
    """The control loop's latest decision (also shown at the end of `status`)."""
    data = control_status(ctx.store, ctx.station)
    if as_json:
        click.echo(json_text(data, indent=2))
    else:
        print_control_status(data)


# `megastation status` shows the control part after the connectors ("control" in --json).
add_status_section(
    "control", lambda ctx: control_status(ctx.store, ctx.station), print_control_status
)
