"""A sizing study: the axes to sweep, the period, the capital costs, and its cells."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

from megastation.core.config import Station

POLICIES = ("re100", "cost", "greedy", "uncontrolled")


class StudyError(ValueError):
    """A study definition that cannot run; ``field`` names the offending setting."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Capex:
    """Capital costs, annualised over ``lifetime_years`` at ``discount_rate``."""

    pv_krw_per_kwp: float = 1_200_000.0  # installed PV [KRW/kWp]
    battery_krw_per_kwh: float = 450_000.0  # installed storage energy [KRW/kWh]
    battery_krw_per_kw: float = 150_000.0  # power conversion [KRW/kW]
    grid_krw_per_kw: float = 0.0  # grid connection [KRW/kW of import limit]
    lifetime_years: float = 15.0
    discount_rate: float = 0.045  # real, per year


@dataclass(frozen=True)
class Cell:
    """One station size under one policy and one seed."""

    pv_kwp: float  # total PV peak power [kWp] (the station's arrays scaled)
    battery_kwh: float  # usable capacity [kWh]; 0 = no battery
    battery_kw: float  # charge = discharge power limit [kW]
    grid_limit_kw: float  # grid import limit [kW]
    policy: str
    seed: int

    @property
    def key(self) -> str:
        """A stable file name for this cell's result."""
        text = json.dumps(asdict(self), sort_keys=True)
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        return (
            f"{self.policy}-pv{self.pv_kwp:g}-b{self.battery_kwh:g}x{self.battery_kw:g}"
            f"-g{self.grid_limit_kw:g}-s{self.seed}-{digest}"
        )


@dataclass(frozen=True)
class StudySpec:
    """What to sweep. Empty size axes mean the station's own size."""

    pv_kwp: tuple[float, ...] = ()
    battery_kwh: tuple[float, ...] = ()
    battery_kw: tuple[float, ...] = ()
    grid_limit_kw: tuple[float, ...] = ()
    policies: tuple[str, ...] = ("re100",)
    seeds: tuple[int, ...] = (1,)
    days: float = 365.0
    start: date | None = None  # local date; None = the weather's first day
    weather: str = "mixed-week"  # a name the simulator knows or a weather CSV
    with_optimum: bool = True  # the perfect-foresight optimum per cell
    capex: Capex = field(default_factory=Capex)

    def cells(self, station: Station) -> list[Cell]:
        """Every combination of the axes, the station's own size where an axis is empty."""
        own_pv = sum(a.peak_power_kw for a in station.pv_arrays)
        b = station.battery
        axes = (
            self.pv_kwp or (own_pv,),
            self.battery_kwh or ((b.capacity_kwh if b else 0.0),),
            self.battery_kw or ((b.max_discharge_kw if b else 0.0),),
            self.grid_limit_kw or (station.site.grid_import_limit_kw,),
            self.policies,
            self.seeds,
        )
        return [Cell(*combo) for combo in itertools.product(*axes)]


def _numbers(name: str, value: Any, *, minimum: float, integer: bool = False) -> tuple:
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for x in items:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise StudyError(name, f"must be a number or a list of numbers, got {x!r}")
        if not math.isfinite(x) or x < minimum:
            raise StudyError(name, f"must be finite and >= {minimum:g}, got {x!r}")
        if integer and x != int(x):
            raise StudyError(name, f"must be whole numbers, got {x!r}")
        out.append(int(x) if integer else float(x))
    if len(set(out)) != len(out):
        raise StudyError(name, f"lists a value twice: {out}")
    return tuple(out)


def parse_spec(data: dict[str, Any], source: str = "<study>") -> StudySpec:
    """A :class:`StudySpec` from a TOML-shaped dict (``[study]``, ``[capex]``); errors name the field."""
    known = {"study", "capex"}
    for key in data:
        if key not in known:
            raise StudyError(key, f"unknown section in {source} (use [study] and [capex])")
    s = dict(data.get("study", {}))
    kw: dict[str, Any] = {}
    for name in ("pv_kwp", "battery_kwh", "battery_kw"):
        if name in s:
            kw[name] = _numbers(f"study.{name}", s.pop(name), minimum=0.0)
    if "grid_limit_kw" in s:
        kw["grid_limit_kw"] = _numbers("study.grid_limit_kw", s.pop("grid_limit_kw"), minimum=1.0)
    if "seeds" in s:
        kw["seeds"] = _numbers("study.seeds", s.pop("seeds"), minimum=0, integer=True)
    if "policies" in s:
        pols = s.pop("policies")
        pols = [pols] if isinstance(pols, str) else list(pols)
        bad = [p for p in pols if p not in POLICIES]
        if bad or not pols:
            raise StudyError("study.policies", f"use any of {', '.join(POLICIES)}; got {pols}")
        kw["policies"] = tuple(dict.fromkeys(pols))
    if "days" in s:
        kw["days"] = _numbers("study.days", s.pop("days"), minimum=1 / 24)[0]
    if "start" in s:
        start = s.pop("start")
        if not isinstance(start, date):
            raise StudyError("study.start", f"must be a date (2026-01-01), got {start!r}")
        kw["start"] = start
    for name in ("weather",):
        if name in s:
            kw[name] = str(s.pop(name))
    if "with_optimum" in s:
        kw["with_optimum"] = bool(s.pop("with_optimum"))
    if s:
        raise StudyError(f"study.{next(iter(s))}", "unknown setting")
    kw["capex"] = _parse_capex(dict(data.get("capex", {})))
    return StudySpec(**kw)


def _parse_capex(c: dict[str, Any]) -> Capex:
    names = {f.name for f in fields(Capex)}
    kw = {}
    for key, value in c.items():
        if key not in names:
            raise StudyError(f"capex.{key}", f"unknown setting (one of {', '.join(sorted(names))})")
        minimum = 1.0 if key == "lifetime_years" else 0.0
        kw[key] = _numbers(f"capex.{key}", value, minimum=minimum)[0]
    if kw.get("discount_rate", 0.0) >= 1.0:
        raise StudyError("capex.discount_rate", "is a fraction per year (0.045 = 4.5 %)")
    return Capex(**kw)


def load_spec(path: str | Path) -> StudySpec:
    """Read a study TOML file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise StudyError("STUDY", f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise StudyError("STUDY", f"{p}: not valid TOML: {e}") from None
    return parse_spec(data, str(p))
