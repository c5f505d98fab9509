"""`megastation study`: station sizing sweeps with the real controller in the loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from megastation.cli import main
from megastation.cli.common import Context, check_weather, pass_ctx

SIZE_AXES = {
    "pv_kwp": "--pv-kwp",
    "battery_kwh": "--battery-kwh",
    "battery_kw": "--battery-kw",
    "grid_limit_kw": "--grid-limit-kw",
}
CAPEX_FLAGS = {
    "pv_krw_per_kwp": "--pv-krw-per-kwp",
    "battery_krw_per_kwh": "--battery-krw-per-kwh",
    "lifetime_years": "--lifetime-years",
    "discount_rate": "--discount-rate",
}


def _list(text: str | None, option: str, cast: Any = float) -> list | None:
    if text is None:
        return None
    try:
        return [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give comma-separated numbers", param_hint=option
        ) from None


def _spec_data(spec_file: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    import tomllib

    data: dict[str, Any] = {"study": {}, "capex": {}}
    if spec_file is not None:
        try:
            loaded = tomllib.loads(spec_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise click.BadParameter(f"{spec_file}: {e}", param_hint="STUDY") from None
        for key, value in loaded.items():
            data.setdefault(key, {})
            data[key] = dict(value) if isinstance(value, dict) else value
    for name, value in flags.items():
        if value is None:
            continue
        section = "capex" if name in CAPEX_FLAGS else "study"
        data[section][name] = value
    return data


@main.command("study")
@click.argument(
    "spec_file", metavar="[STUDY]", required=False, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--pv-kwp", help="PV sizes [kWp], comma-separated (the station's arrays scaled).")
@click.option("--battery-kwh", help="Battery capacities [kWh], comma-separated (0 = none).")
@click.option("--battery-kw", help="Battery power limits [kW], comma-separated.")
@click.option("--grid-limit-kw", help="Grid import limits [kW], comma-separated.")
@click.option(
    "--policy", "policies", help="Policies, comma-separated (re100, cost, greedy, uncontrolled)."
)
@click.option("--seed", "seeds", help="Seeds of the simulated fleet, comma-separated.")
@click.option("--days", type=float, default=None, help="Period per cell [days; default 365].")
@click.option("--start", default=None, help="First local day, YYYY-MM-DD [default: the weather's].")
@click.option("--weather", default=None, callback=lambda c, p, v: v if v is None else check_weather(c, p, v),
              help="clear-day, cloudy-day, mixed-week or a weather CSV [default mixed-week].")  # fmt: skip
@click.option("--no-optimum", is_flag=True, help="Skip the perfect-foresight optimum per cell.")
@click.option("--pv-krw-per-kwp", type=float, default=None, help="PV capital cost [KRW/kWp].")
@click.option(
    "--battery-krw-per-kwh", type=float, default=None, help="Battery capital cost [KRW/kWh]."
)
@click.option("--lifetime-years", type=float, default=None, help="Years to annualise capital over.")
@click.option(
    "--discount-rate", type=float, default=None, help="Real discount rate per year (0.045)."
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("study-out"), show_default=True,
              help="Folder: cells/ (one file per finished cell), results.csv, study.png.")  # fmt: skip
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Local worker processes [default: one per CPU].")  # fmt: skip
@click.option("--cluster", default=None, metavar="ADDRESS",
              help="Run the cells on a Dask cluster (tcp://HOST:8786) instead of locally.")  # fmt: skip
@pass_ctx
def study_cmd(ctx: Context, spec_file: Path | None, out_dir: Path, jobs: int | None,
              cluster: str | None, no_optimum: bool, **flags: Any) -> None:  # fmt: skip
    """Sweep PV, battery and grid sizes x policies x seeds; write the table and a plot.

    STUDY is an optional TOML file with [study] (pv_kwp, battery_kwh, battery_kw,
    grid_limit_kw, policies, seeds, days, start, weather) and [capex] (pv_krw_per_kwp,
    battery_krw_per_kwh, battery_krw_per_kw, grid_krw_per_kw, lifetime_years,
    discount_rate); flags override it. Cells already in --out are not run again.
    """
    # lazy: the study pulls in the simulator (scipy, pandas, pvlib) and matplotlib
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from megastation.studies.plot import plot_study
    from megastation.studies.run import pending_cells, run_study
    from megastation.studies.spec import StudyError, parse_spec

    for name, option in SIZE_AXES.items():
        flags[name] = _list(flags[name], option)
    flags["policies"] = _list(flags["policies"], "--policy", str)
    flags["seeds"] = _list(flags["seeds"], "--seed", int)
    if no_optimum:
        flags["with_optimum"] = False
    if flags.get("start") is not None:
        import datetime as dt

        try:
            flags["start"] = dt.date.fromisoformat(flags["start"])
        except ValueError:
            raise click.BadParameter(
                f"{flags['start']!r}: use YYYY-MM-DD", param_hint="--start"
            ) from None
    try:
        spec = parse_spec(_spec_data(spec_file, flags), str(spec_file or "flags"))
    except StudyError as e:
        option = SIZE_AXES.get(e.field.split(".")[-1]) or CAPEX_FLAGS.get(e.field.split(".")[-1])
        raise click.BadParameter(e.message, param_hint=option or e.field) from None
    station = ctx.station
    cells = spec.cells(station)
    todo = pending_cells(cells, out_dir)
    console = Console(stderr=True)
    console.print(
        f"{len(cells)} cells ({len(cells) - len(todo)} done already in {out_dir}/), "
        f"{spec.days:g} days each, " + (f"on {cluster}" if cluster else f"{jobs or 'one per CPU'} local workers")
    )  # fmt: skip
    columns = (TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as prog:
        task = prog.add_task("cells", total=len(cells), completed=len(cells) - len(todo))
        try:
            table = run_study(station, spec, out_dir, jobs=jobs, cluster=cluster,
                              progress=lambda done, total, row: prog.update(task, completed=done))  # fmt: skip
        except (ValueError, RuntimeError, OSError) as e:
            raise click.ClickException(str(e)) from None
    png = plot_study(table, out_dir / "study.png", title=f"{station.site.name}: sizing study")
    _print_table(table)
    click.echo(f"{out_dir / 'results.csv'}, {png}")


def _print_table(table: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Sizing study (annual figures)")
    for col in ("policy", "PV kWp", "battery kWh/kW", "grid kW", "seed", "RE %", "opt. RE %",
                "unmet kWh", "peak kW", "MKRW/yr", "front"):  # fmt: skip
        t.add_column(col, justify="left" if col == "policy" else "right")
    for r in table.sort_values("annual_cost_krw").itertuples():
        t.add_row(
            r.policy, f"{r.pv_kwp:g}", f"{r.battery_kwh:g}/{r.battery_kw:g}", f"{r.grid_limit_kw:g}",
            str(r.seed), f"{100 * r.renewable_frac:.1f}", f"{100 * r.optimum_renewable_frac:.1f}",
            f"{r.unmet_kwh:,.0f}", f"{r.peak_import_kw:,.0f}", f"{r.annual_cost_krw / 1e6:,.1f}",
            "*" if r.pareto else "",
        )  # fmt: skip
    Console(width=120).print(t)


__all__ = ["study_cmd"]
