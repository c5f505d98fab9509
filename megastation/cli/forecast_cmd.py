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


def _read_weather(path: Path, year: int, label: str, station: Station) -> pd.DataFrame:
    """A weather CSV, a TMY3 file or an EPW file, by content.

    ``label="auto"``: a CSV's label is guessed from when its GHI peaks against clear
    sky (:func:`forecasts.timing.weather_label`; ``end`` when it cannot tell), and the
    choice is printed to stderr.
    """
    from forecasts import timing, weather  # lazy: pandas, pvlib

    if path.suffix.lower() == ".epw":
        return weather.read_epw(path, year=year)[0]
    try:
        first = path.open(encoding="utf-8", errors="replace").readline()
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read: {exc.strerror}") from None
    if "time" not in first.split(",")[0].lower() and len(first.split(",")) == 7:
        return weather.read_tmy3(path, year=year)[0]
    if label != "auto":
        return weather.read_csv(path, label=label)
    as_start = weather.read_csv(path, label="start")
    label, why = timing.weather_label(as_start, station.pv_site(), default="end")
    click.echo(f"{path}: time read as interval {label}s: {why}", err=True)
    return as_start if label == "start" else weather.read_csv(path, label=label)


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


def _print_scores(table: pd.DataFrame) -> None:
    """One line per day (then overall) of forecast scores."""
    click.echo(
        f"{'day':<11}{'steps':>6}{'nMAE':>8}{'nRMSE':>8}{'nBias':>8}{'nRMSE_sp':>10}{'skill':>8}"
    )
    for r in table.itertuples():
        click.echo(
            f"{r.day:<11}{r.n_steps:>6}{r.nmae:>8.3f}{r.nrmse:>8.3f}{r.nbias:>+8.3f}"
            f"{r.nrmse_persistence:>10.3f}{r.skill:>+8.3f}"
        )


def _fmt_lag(lag: pd.Timedelta) -> str:
    minutes = lag.total_seconds() / 60
    return f"{minutes / 60:g} h" if minutes >= 60 else f"{minutes:g} min"


def _write_csv(df: pd.DataFrame, out: Path, tz: str, digits: int = 3) -> None:
    local = df.round(digits)
    local.index = [t.isoformat() for t in df.index.tz_convert(tz)]
    local.index.name = "time"
    local.to_csv(out)


_label = click.option(
    "--weather-label",
    "--label",
    "label",
    type=click.Choice(["auto", "start", "end", "instant"]),
    default="auto",
    show_default=True,
    help="What the weather CSV's time labels: interval start (NSRDB/PSM3, many satellite "
    "files), end (Open-Meteo, TMY, Solcast), an instant sample, or auto: guessed from when "
    "its GHI peaks (end if it cannot tell).",
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
    from forecasts.weather import WeatherError
    from megastation.store.forecasts import save_forecast

    if output is None:
        raise click.UsageError("-o FILE.csv is required")
    station = _station(ctx, config)
    step_min = _step_min(step)
    t0 = _parse_time(start, station)
    n = hours * 60 // step_min
    try:
        wx = None if weather_path is None else _read_weather(weather_path, t0.year, label, station)
        fc = forecast_pv(station.pv_site(), t0, n, step_min, wx)
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
    type=click.FloatRange(0, 48),
    default=None,
    help="Lead of the forecasts scored [h]: issued forecasts are taken issued at least this "
    "long before each step (default 0), and skill is against smart persistence made this "
    "long before (default: 24 h persistence for --weather/--forecast files, else 0).",
)
@click.option("--step", default="15min", show_default=True, help="Scoring step, divides the hour.")
@_label
@click.option(
    "--measured-label",
    type=click.Choice(["start", "end"]),
    default="start",
    show_default=True,
    help="What the measured CSV's time labels: a sample or the interval it starts (most "
    "inverter logs), or the end of the interval it averages (energy meters).",
)
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
    lead_hours: float | None,
    step: str,
    label: str,
    measured_label: str,
    output: Path | None,
) -> None:
    """Score PV forecasts against measured PV: nMAE, nRMSE, bias, skill vs smart persistence.

    Measured values may be slightly negative at night (clipped to 0); a log whose clock
    jumps by about an hour (daylight saving) is reported on stderr. Also prints the
    P10/P90 band percentiles these errors give, pooled and by the forecast's clear-sky
    index (forecasts.bands.fit_bands).
    """
    # lazy: pandas, pvlib
    import pandas as pd

    from forecasts import timing
    from forecasts.bands import MIN_SAMPLES, fit_bands
    from forecasts.nowcast import step_means
    from forecasts.pvmodel import inverter_limits_kw, pv_power
    from forecasts.scoring import read_power_csv, score
    from forecasts.weather import WeatherError, clear_sky_weather, resample_weather
    from megastation.store.forecasts import load_issued

    config = click_ctx.parent.meta.get("forecast_config") if click_ctx.parent else None
    station = _station(ctx, config)
    site = station.pv_site()
    arrays = site.arrays
    step_min = _step_min(step)
    stp = pd.Timedelta(minutes=step_min)
    try:
        m = read_power_csv(measured, label=measured_label)
        grid = pd.date_range(m.index[0].floor(stp), m.index[-1].floor(stp), freq=stp)
        m_kw = pd.Series(step_means(m, grid, stp), index=grid)
        clear = pv_power(site, arrays, clear_sky_weather(grid), step=stp)["pv_ac_kw"]
        for day, jump in timing.clock_shifts(
            timing.daily_phase_min(m_kw, clear, site.timezone, min_index=timing.CLEAR_DAY_INDEX)
        ):
            click.echo(
                f"warning: {measured}: the PV peak moves {jump:+.0f} min against the sun from "
                f"{day} on: a daylight-saving change in the log's clock? Scores around it suffer",
                err=True,
            )
        if forecast_path is not None:
            f = read_power_csv(forecast_path)
            f_kw = pd.Series(step_means(f, grid, stp), index=grid)
            what = str(forecast_path)
        elif weather_path is not None:
            wx = resample_weather(_read_weather(weather_path, grid[0].year, label, station), grid)
            f_kw = pv_power(site, arrays, wx, step=stp)["pv_ac_kw"]
            what = f"forecast from {weather_path}"
        else:
            lead = lead_hours or 0.0
            issued = load_issued(ctx.store, grid[0], grid[-1] + stp, lead_min=lead * 60)
            if len(issued):
                f_kw = issued["pv_ac_kw"].astype(float)
                what = f"issued forecasts ({lead:g} h ahead)"
                lead_hours = lead
            else:
                f_kw = clear
                what = "clear sky (no weather, no issued forecasts)"
    except WeatherError as exc:
        raise click.ClickException(str(exc)) from None
    # smart persistence made as long before each step as the forecast: its index over
    # the last step measured then (lead + one step); 24 h for day-ahead files
    lag = pd.Timedelta(hours=24) if lead_hours is None else pd.Timedelta(hours=lead_hours) + stp
    table = score(m_kw, f_kw, clear, station.pv_peak_kw, tz=site.timezone, persistence_lag=lag)
    click.echo(f"scoring {what} against {measured}, capacity {station.pv_peak_kw:g} kWp")
    click.echo(f"skill against smart persistence of the PV clear-sky index {_fmt_lag(lag)} before")
    _print_scores(table)
    # The P10/P90 spread these errors give (forecast_pv(bands=...)), in clear-sky units.
    b = fit_bands(
        m_kw.to_numpy(float),
        f_kw.reindex(grid).to_numpy(float),
        clear.reindex(grid).to_numpy(float),
        float(inverter_limits_kw(arrays).sum()),
    )
    _print_bands(b, MIN_SAMPLES)
    if output is not None:
        table.round(4).to_csv(output, index=False)


def _print_bands(b, min_samples: int) -> None:
    """The band percentiles fitted on the scored errors (pooled and per regime)."""
    if b.source == "history":
        click.echo(
            f"bands from these errors: q10 {b.q10:+.3f}, q90 {b.q90:+.3f} "
            f"(clear-sky index, {b.n_samples} daylight steps); by the forecast's clear-sky index:"
        )
        for lo, hi, q10, q90 in zip(
            (0.0, *b.regime_edges),
            (*b.regime_edges, None),
            b.q10_by_regime,
            b.q90_by_regime,
            strict=True,
        ):
            span = f"{lo:.2f}-{hi:.2f}" if hi is not None else f">= {lo:.2f}"
            click.echo(f"  {span:<10} q10 {q10:+.3f}, q90 {q90:+.3f}")
    else:
        click.echo(
            f"bands: too few daylight steps (< {min_samples}); default "
            f"q10 {b.q10:+.3f}, q90 {b.q90:+.3f}"
        )
