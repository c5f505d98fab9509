"""`megastation devices`: the site's battery, PV inverters and grid meter.

``devices`` lists each configured device with the latest state a running `serve` recorded
(reading, fault); ``devices check`` connects to each once and prints what it found.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import click

from megastation.cli import main
from megastation.cli.common import Context, pass_ctx
from megastation.store import devices as device_store


def _reading_text(reading: dict[str, Any]) -> str:
    parts = []
    for k, v in reading.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.2f}")
        else:
            parts.append(f"{k} {v}")
    return ", ".join(parts) or "-"


@main.group("devices", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def devices(click_ctx: click.Context, as_json: bool) -> None:
    """Each site device ([[devices]] in the station file) and its latest reading.

    Readings are what a running `megastation serve` recorded; kinds without a device
    are shown as simulated or absent.
    """
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: Context = click_ctx.obj
    rows = device_rows(ctx)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        state = "FAULT: " + r["fault"] if r["fault"] else ("ok" if r["reading_at"] else "-")
        click.echo(f"{r['name']:<12} {r['kind']:<8} {r['address']:<24} {r['model']:<12} {state}")
        if r["reading_at"] or r["reading"]:
            click.echo(f"{'':<12} {_reading_text(r['reading'])} (at {r['reading_at']})")
        elif r.get("note"):
            click.echo(f"{'':<12} {r['note']}")


def device_rows(ctx: Context) -> list[dict[str, Any]]:
    """Configured devices with their recorded state, and the kinds that have none."""
    from megastation.devices import build_devices

    station = ctx.station
    recorded = {r["name"]: r for r in device_store.device_statuses(ctx.store)}
    rows = []
    for d in station.devices:
        r = recorded.get(d.name, {})
        rows.append(
            {
                "name": d.name,
                "kind": d.kind,
                "address": d.address,
                "model": d.model,
                "reading": r.get("reading", {}),
                "reading_at": r.get("reading_at"),
                "fault": r.get("fault"),
                "fault_since": r.get("fault_since"),
                "updated_at": r.get("updated_at"),
            }
        )
    notes = build_devices(station, ctx.store.clock).notes  # builds no connection
    for kind, note in notes.items():
        rows.append(
            {
                "name": kind,
                "kind": kind,
                "address": "simulated" if "SIMULATED" in note else "none",
                "model": "-",
                "reading": {},
                "reading_at": None,
                "fault": None,
                "fault_since": None,
                "updated_at": None,
                "note": note,
            }
        )
    return rows


@devices.command("check")
@click.option("--device", "names", multiple=True, help="Only this device (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_ctx
def check(ctx: Context, names: tuple[str, ...], as_json: bool) -> None:
    """Connect to each device once: SunSpec models found, values read, their ranges.

    Exit code 1 when a device could not be read.
    """
    from megastation.devices import make_driver

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # faults are reported below
    station = ctx.station
    configs = [d for d in station.devices if not names or d.name in names]
    unknown = sorted(set(names) - {d.name for d in station.devices})
    if unknown:
        raise click.BadParameter(
            f"no device {unknown[0]!r} in {station.source}", param_hint="--device"
        )
    if not configs:
        click.echo(f"no [[devices]] in {station.source}: the battery is simulated")
        return
    clock = ctx.store.clock

    async def run() -> list[dict[str, Any]]:
        drivers = [make_driver(c, station, clock) for c in configs]
        return list(await asyncio.gather(*(d.check() for d in drivers)))

    results = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
    else:
        for r in results:
            click.echo(f"{r['name']} ({r['kind']}, {r['address']}, {r['model']})")
            if "sunspec_base" in r:
                click.echo(f"  SunSpec map at {r['sunspec_base']}")
            for m in r.get("models", []):
                click.echo(
                    f"  model {m['id']:>5} {m['name']:<24} at {m['address']}, {m['length']} registers"
                )
            if r.get("common"):
                c = r["common"]
                click.echo(
                    f"  {c.get('Mn')} {c.get('Md')} (serial {c.get('SN')}, version {c.get('Vr')})"
                )
            if r.get("profile"):
                click.echo(f"  profile: {r['profile']}")
            if r.get("values"):
                click.echo(f"  read: {_reading_text(r['values'])}")
            for k, rng in (r.get("ranges") or {}).items():
                click.echo(f"  accepted {k}: {rng}")
            click.echo(f"  FAULT: {r['fault']}" if r.get("fault") else "  ok")
    if any(r.get("fault") for r in results):
        raise SystemExit(1)
