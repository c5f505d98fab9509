"""`megastation forecast ...`: PV forecasts for the station, and their scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from megastation.cli import main
from megastation.cli.common import Context, parse_when, pass_ctx
from megastation.core.clock import SystemClock
from megastation.core.config import ConfigError, Station, load_station

if TYPE_CHECKING:
    import pandas as pd

# Function-level imports below are lazy on purpose: pandas and pvlib (through forecasts)
# take about a second to import, and every other CLI command would pay for them.


def _station(ctx: Context, config: Path | None) -> Station:
    if config is None:
        return ctx.station
    try:
        return load_station(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _read_weather(path: Path, year: int, label: str) -> pd.DataFrame:
    """A weather CSV, a TMY3 file or an EPW file, by content."""
    from forecasts import weather  # lazy: pandas, pvlib

    if path.suffix.lower() == ".epw":
        return weather.read_epw(path, year=year)[0]
    try:
        first = path.open(encoding="utf-8", errors="replace").readline()
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read: {exc.strerror}") from None
    if "time" not in first.split(",")[0].lower() and len(first.split(",")) == 7:
        return weather.read_tmy3(path, year=year)[0]
    return weather.read_csv(path, label=label)


def _parse_time(text: str | None, station: Station) -> pd.Timestamp:
    """``--start`` as a UTC timestamp: :func:`parse_when` (naive = site time), default now.

    The forecast itself starts at the step containing it (``forecast_pv`` floors it).
    """
    import pandas as pd  # lazy

    ts = parse_when(text, station, option="--start")
    return pd.Timestamp(SystemClock().now() if ts is None else ts).tz_convert("UTC")


def _step_min(step: str) -> int:
    import pandas as pd  # lazy

    try:
        td = pd.Timedelta(step)
    except ValueError:
        raise click.ClickException(f"--step: {step!r} is not a duration like 15min") from None
    minutes = td.total_seconds() / 60
    if minutes <= 0 or minutes != int(minutes) or 60 % int(minutes):
        raise click.ClickException(f"--step: {step} does not divide the hour")
    return int(minutes)


def _write_csv(df: pd.DataFrame, out: Path, tz: str, digits: int = 3) -> None:
    local = df.round(digits)
    local.index = [t.isoformat() for t in df.index.tz_convert(tz)]
    local.index.name = "time"
    local.to_csv(out)


_label = click.option(
    "--label",
    type=click.Choice(["start", "end", "instant"]),
    default="end",
    show_default=True,
    help="What the weather CSV's time labels (interval start, end, or a sample).",
)


@main.group("forecast", invoke_without_command=True)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Station TOML file (default: the global --config).",
)
@click.option(
    "--weather",
    "weather_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Weather CSV, TMY3 or EPW file (default: clear sky).",
)
@click.option(
    "--start", default=None, help="First step, ISO 8601 (naive = site time; default: now)."
)
@click.option(
    "--hours", type=click.IntRange(1, 24 * 366), default=48, show_default=True, help="Horizon [h]."
)
@click.option("--step", default="15min", show_default=True, help="Step, must divide the hour.")
@_label
@click.option("--save", is_flag=True, help="Also store the forecast in the database as issued.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV to write: time (site time with offset), pv_ac_kw, p10/p90, per array.",
)
@pass_ctx
@click.pass_context
def forecast_group(
    click_ctx: click.Context,
    ctx: Context,
    config: Path | None,
    weather_path: Path | None,
    start: str | None,
    hours: int,
    step: str,
    label: str,
    save: bool,
    output: Path | None,
) -> None:
    """PV power forecast of the station's arrays (pvlib; clear sky without --weather)."""
    if click_ctx.invoked_subcommand is not None:
        click_ctx.obj = ctx
        click_ctx.meta["forecast_config"] = config
        return
    # lazy: pandas, pvlib
    from forecasts.forecast import forecast_pv
    from forecasts.issued import save_forecast
    from forecasts.weather import WeatherError

    if output is None:
        raise click.UsageError("-o FILE.csv is required")
    station = _station(ctx, config)
    step_min = _step_min(step)
    t0 = _parse_time(start, station)
    n = hours * 60 // step_min
    try:
        wx = None if weather_path is None else _read_weather(weather_path, t0.year, label)
        fc = forecast_pv(station, t0, n, step_min, wx)
    except WeatherError as exc:
        raise click.ClickException(str(exc)) from None
    _write_csv(fc.drop(columns=["pv_raw_kw"]), output, station.site.timezone)
    if save:
        save_forecast(
            ctx.store,
            fc,
            issued_at=t0.to_pydatetime(),
            source="clearsky" if wx is None else "weather",
        )
    energy = fc["pv_ac_kw"].sum() * step_min / 60
    click.echo(
        f"{output}: {n} steps of {step_min} min from "
        f"{fc.index[0].tz_convert(station.site.timezone).isoformat()}, "
        f"{energy:.1f} kWh, peak {fc['pv_ac_kw'].max():.1f} kW "
        f"({'clear sky' if wx is None else weather_path})"
    )


@forecast_group.command("score")
@click.option(
    "--measured",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="CSV of measured PV: time (with offset), pv_ac_kw.",
)
@click.option(
    "--weather",
    "weather_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Weather to forecast from (default: issued forecasts, else clear sky).",
)
@click.option(
    "--forecast",
    "forecast_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV of a forecast to score instead (time, pv_ac_kw).",
)
@click.option(
    "--lead-hours",
    type=float,
    default=0.0,
    show_default=True,
    help="For issued forecasts: issued at least this long before each step.",
)
@click.option("--step", default="15min", show_default=True, help="Scoring step, divides the hour.")
@_label
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV to write the scores to (one row per day, then overall).",
)
@pass_ctx
@click.pass_context
def score_cmd(
    click_ctx: click.Context,
    ctx: Context,
    measured: Path,
    weather_path: Path | None,
    forecast_path: Path | None,
    lead_hours: float,
    step: str,
    label: str,
    output: Path | None,
) -> None:
    """Score PV forecasts against measured PV: nMAE, nRMSE, bias, skill vs smart persistence."""
    # lazy: pandas, pvlib
    import pandas as pd

    from forecasts.issued import load_issued
    from forecasts.nowcast import step_means
    from forecasts.pvmodel import pv_power
    from forecasts.scoring import read_power_csv, score
    from forecasts.weather import WeatherError, clear_sky_weather, resample_weather

    config = click_ctx.parent.meta.get("forecast_config") if click_ctx.parent else None
    station = _station(ctx, config)
    site, arrays = station.site, station.pv_arrays
    step_min = _step_min(step)
    stp = pd.Timedelta(minutes=step_min)
    try:
        m = read_power_csv(measured)
        grid = pd.date_range(m.index[0].floor(stp), m.index[-1].floor(stp), freq=stp)
        m_kw = pd.Series(step_means(m, grid, stp), index=grid)
        clear = pv_power(site, arrays, clear_sky_weather(grid), step=stp)["pv_ac_kw"]
        if forecast_path is not None:
            f = read_power_csv(forecast_path)
            f_kw = pd.Series(step_means(f, grid, stp), index=grid)
            what = str(forecast_path)
        elif weather_path is not None:
            wx = resample_weather(_read_weather(weather_path, grid[0].year, label), grid)
            f_kw = pv_power(site, arrays, wx, step=stp)["pv_ac_kw"]
            what = f"forecast from {weather_path}"
        else:
            issued = load_issued(ctx.store, grid[0], grid[-1] + stp, lead_min=lead_hours * 60)
            if len(issued):
                f_kw = issued["pv_ac_kw"].astype(float)
                what = f"issued forecasts ({lead_hours:g} h ahead)"
            else:
                f_kw = clear
                what = "clear sky (no weather, no issued forecasts)"
    except WeatherError as exc:
        raise click.ClickException(str(exc)) from None
    table = score(m_kw, f_kw, clear, station.pv_peak_kw, tz=site.timezone)
    click.echo(f"scoring {what} against {measured}, capacity {station.pv_peak_kw:g} kWp")
    click.echo(
        f"{'day':<11}{'steps':>6}{'nMAE':>8}{'nRMSE':>8}{'nBias':>8}{'nRMSE_sp':>10}{'skill':>8}"
    )
    for r in table.itertuples():
        click.echo(
            f"{r.day:<11}{r.n_steps:>6}{r.nmae:>8.3f}{r.nrmse:>8.3f}{r.nbias:>+8.3f}"
            f"{r.nrmse_persistence:>10.3f}{r.skill:>+8.3f}"
        )
    if output is not None:
        table.round(4).to_csv(output, index=False)
