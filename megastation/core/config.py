"""Station configuration: a TOML file naming the site, tariff, chargers, PV and battery.

:func:`load_station` reads and validates a file; every mistake raises
:class:`ConfigError` naming the file and the field (``chargers[2].max_power_kw``).
Unknown keys are errors too, so a misspelt key never silently falls back to a default.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from forecasts.site import PVArray as ForecastArray
from forecasts.site import PVSite

ENV_CONFIG = "MEGASTATION_CONFIG"
DEFAULT_SEED = "gwangju-donggu.toml"


class ConfigError(ValueError):
    """A station configuration value is missing or wrong; the message names the field."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Site:
    name: str
    latitude: float  # degrees north
    longitude: float  # degrees east
    altitude_m: float
    timezone: str  # IANA name, e.g. Asia/Seoul
    grid_import_limit_kw: float
    grid_export_limit_kw: float
    base_load_kw: float = 0.0  # other site load, constant when nothing better is known
    free_vend: bool = False  # accept any id token except the ones the operator blocked
    auto_register: bool = False
    dispatch_interval_s: int = 60
    dispatch_step_min: int = 15
    horizon_h: int = 24
    policy: str = "re100"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Server:
    host: str = "127.0.0.1"
    port: int = 9000
    tls_cert: str | None = None
    tls_key: str | None = None
    message_log_retention_days: int = 30
    heartbeat_interval_s: int = 300
    # DataTransfer vendorIds answered Accepted (message kept in the raw message log)
    data_transfer_vendors: tuple[str, ...] = ()
    # largest incoming WebSocket frame [bytes]; larger ones close the connection (1009,
    # logged with charger and size). 4 MiB holds a 1.6 StopTransaction with days of data.
    max_frame_bytes: int = 4 * 1024 * 1024
    # WebSocket ping every ping_interval_s [s] (0 = none); no pong within ping_timeout_s
    # [s] closes the connection (1011) and the charger counts as disconnected
    ping_interval_s: float = 60.0
    ping_timeout_s: float = 30.0
    # a charger that sends nothing for this long [s] is disconnected (0 = never);
    # None: 2 heartbeat intervals + 60 s
    heartbeat_timeout_s: float | None = None
    # every gc_freeze_interval_s [s] (0 = never) the server collects all garbage once and
    # freezes what is left, so the collector's routine passes skip the long-lived objects of
    # thousands of connections (their full passes stalled the loop ~0.5 s at 10,000 chargers)
    gc_freeze_interval_s: float = 300.0

    @property
    def silence_timeout_s(self) -> float:
        """How long a connected charger may stay silent before it is dropped [s] (0: never)."""
        if self.heartbeat_timeout_s is not None:
            return self.heartbeat_timeout_s
        return 2.0 * self.heartbeat_interval_s + 60.0


@dataclass(frozen=True)
class Web:
    """The operator console and HTTP API (``[web]``); TLS from ``[server]`` tls_cert/tls_key."""

    host: str = "127.0.0.1"  # loopback unless configured: the console controls the station
    port: int = 8080
    session_hours: float = 12.0  # a login lasts this long [h, wall time]
    sse_interval_s: float = 2.0  # live overview push interval [s, wall time]


@dataclass(frozen=True)
class Season:
    name: str
    months: tuple[int, ...]
    rates_krw_per_kwh: dict[str, float]  # light, mid, peak
    mid_hours: tuple[int, ...]
    peak_hours: tuple[int, ...]


@dataclass(frozen=True)
class TariffConfig:
    name: str
    currency: str
    demand_charge_krw_per_kw_month: float
    export_price_krw_per_kwh: float
    seasons: tuple[Season, ...]


@dataclass(frozen=True)
class SessionDefaults:
    """What a car is assumed to need when it does not say."""

    dwell_min: float
    energy_kwh: float


@dataclass(frozen=True)
class Cabinet:
    """A DC power cabinet shared by several chargers."""

    id: str
    max_power_kw: float


@dataclass(frozen=True)
class Charger:
    id: str
    kind: str  # "AC" or "DC"
    max_power_kw: float  # the whole charger
    connectors: int = 1
    connector_max_power_kw: float | None = None  # per connector; None = max_power_kw
    phases: int = 3  # AC only
    voltage_v: float = 230.0  # AC phase-to-neutral voltage
    cabinet: str | None = None
    vendor: str = ""
    model: str = ""
    ocpp_version: str = "1.6"  # "1.6" or "2.0.1": a hint for the simulator
    password_hash: str | None = None  # security profile 1/2; see ocpp_central.auth

    @property
    def connector_power_kw(self) -> float:
        return self.connector_max_power_kw or self.max_power_kw

    @property
    def connector_ids(self) -> range:
        return range(1, self.connectors + 1)


@dataclass(frozen=True)
class PVArray:
    name: str
    peak_power_kw: float  # kWp, DC at STC
    tilt_deg: float
    azimuth_deg: float  # 180 = south
    temp_coeff_per_c: float = -0.0037  # relative power change per kelvin
    losses_frac: float = 0.14  # system losses, PVWatts style
    inverter_ac_kw: float | None = None  # AC limit; None = peak_power_kw
    mounting: str = "open_rack"  # SAPM temperature model: open_rack | close_mount | insulated_back


@dataclass(frozen=True)
class BatteryConfig:
    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    soc_min_frac: float = 0.1
    soc_max_frac: float = 0.95
    initial_soc_frac: float = 0.5
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95


# Register types a register map may name, with their size in 16-bit registers.
REGISTER_TYPES = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "acc32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "acc64": 4, "float64": 4,
}  # fmt: skip
DEVICE_KINDS = ("battery", "pv", "meter")
# What each kind of device measures (and, for a battery, is told), by register-map name
DEVICE_QUANTITIES = {
    "battery": ("soc_pct", "power_w", "setpoint_w"),
    "pv": ("power_w",),
    "meter": ("power_w", "import_w", "export_w"),
}
# Sign conventions of the device's power register: the first is megastation's own
DEVICE_SIGNS = {
    "battery": ("discharge_positive", "charge_positive"),
    "pv": ("generation_positive", "generation_negative"),
    "meter": ("import_positive", "export_positive"),
}


@dataclass(frozen=True)
class RegisterSpec:
    """One quantity of a register-map device (a profile file or an inline map)."""

    address: int  # 0-based register address as sent on the wire
    type: str  # one of REGISTER_TYPES
    function: str = "holding"  # holding | input (read); setpoints are always holding
    scale: float = 1.0  # value = raw x scale (x 10^sf when sf_address is given)
    sf_address: int | None = None  # an int16 SunSpec-style scale factor register


@dataclass(frozen=True)
class DeviceConfig:
    """A Modbus TCP device: ``[[devices]]`` in the station file."""

    name: str  # unique; shown by `megastation devices`
    kind: str  # battery | pv | meter
    host: str
    port: int = 502
    unit_id: int = 1
    model: str = "sunspec"  # "sunspec", a profile name, a profile file, or "registers"
    registers: dict[str, RegisterSpec] = field(default_factory=dict)  # register maps
    word_order: str = "big"  # of 32/64-bit values: big = high word first
    byte_order: str = "big"  # within a register
    poll_interval_s: float = 1.0
    timeout_s: float = 2.0
    stale_after_s: float | None = None  # None: 3 x poll_interval_s + timeout_s
    sign: str = ""  # DEVICE_SIGNS[kind]; "" = the first (megastation's own)
    max_power_kw: float | None = None  # readings beyond this are garbage; None: from the station
    sunspec_base: int | None = None  # None: look for "SunS" at 40000, 0, 50000
    # battery (124 InOutWRte_RvrtTms): the device reverts to its own mode when not told for
    # this long [s]; keep it above site.dispatch_interval_s (0: never)
    revert_s: int = 300
    profile_description: str = ""  # from the profile file

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.unit_id}"

    @property
    def stale_s(self) -> float:
        if self.stale_after_s is not None:
            return self.stale_after_s
        return 3 * self.poll_interval_s + self.timeout_s


@dataclass(frozen=True)
class WeatherFeedConfig:
    """``[weather]``: where the live loop fetches its weather forecast (Open-Meteo API)."""

    url: str  # an Open-Meteo-compatible /v1/forecast endpoint (or a self-hosted mirror)
    resolution: str = "minutely_15"  # minutely_15 | hourly
    refresh_min: float = 60.0  # fetch period [min]
    retry_min: float = 5.0  # after a failed fetch [min]
    timeout_s: float = 10.0  # per request [s]
    forecast_days: int = 3  # days asked for (from today 00:00 UTC)
    max_age_h: float = 12.0  # the last good forecast is used this long [h]
    history_days: int = 3  # measured PV days behind the clear-sky-index fallback


@dataclass(frozen=True)
class Station:
    """A whole station, as read from its TOML file."""

    site: Site
    server: Server
    tariff: TariffConfig
    defaults: dict[str, SessionDefaults]  # keyed "ac" / "dc"
    cabinets: tuple[Cabinet, ...]
    chargers: tuple[Charger, ...]
    pv_arrays: tuple[PVArray, ...]
    battery: BatteryConfig | None
    devices: tuple[DeviceConfig, ...] = ()  # Modbus devices; none = simulated ones
    weather: WeatherFeedConfig | None = None  # None: no live weather forecast
    source: str = "<memory>"  # file it was read from
    web: Web = field(default_factory=Web)  # operator console and HTTP API
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def charger(self, charger_id: str) -> Charger | None:
        return next((c for c in self.chargers if c.id == charger_id), None)

    def cabinet(self, cabinet_id: str) -> Cabinet | None:
        return next((c for c in self.cabinets if c.id == cabinet_id), None)

    @property
    def pv_peak_kw(self) -> float:
        return sum(a.peak_power_kw for a in self.pv_arrays)

    def pv_site(self) -> PVSite:
        """The station's PV system as :mod:`forecasts` describes it (site and arrays)."""
        s = self.site
        arrays = tuple(_forecast_array(a) for a in self.pv_arrays)
        return PVSite(
            latitude=s.latitude,
            longitude=s.longitude,
            altitude_m=s.altitude_m,
            timezone=s.timezone,
            arrays=arrays,
            step_min=s.dispatch_step_min,
        )


def _forecast_array(a: PVArray) -> ForecastArray:
    return ForecastArray(
        name=a.name,
        peak_power_kw=a.peak_power_kw,
        tilt_deg=a.tilt_deg,
        azimuth_deg=a.azimuth_deg,
        temp_coeff_per_c=a.temp_coeff_per_c,
        losses_frac=a.losses_frac,
        inverter_ac_kw=a.inverter_ac_kw,
        mounting=a.mounting,
    )


# --------------------------------------------------------------------------- reading


_REQUIRED = object()


class _Table:
    """Reads typed, range-checked fields from one TOML table, naming each on error."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {where}: must be a table")
        self.data = data
        self.where = where
        self.source = source
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        path = f"{self.where}.{key}" if self.where else key
        return ConfigError(f"{self.source}: {path}: {message}")

    def _get(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.fail(key, "is required")
            return default
        return self.data[key]

    def number(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
    ) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise self.fail(key, f"must be finite, got {value}")
        if positive and value <= 0:
            raise self.fail(key, f"must be > 0, got {value:g}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be >= {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise self.fail(key, f"must be <= {maximum:g}, got {value:g}")
        return value

    def integer(self, key: str, default: Any = _REQUIRED, *, minimum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def string(self, key: str, default: Any = _REQUIRED, *, choices: Iterable[str] = ()) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        choices = tuple(choices)
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def int_list(self, key: str, lo: int, hi: int, default: Any = _REQUIRED) -> tuple[int, ...]:
        value = self._get(key, default)
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value
        ):
            raise self.fail(key, f"must be a list of whole numbers {lo}..{hi}, got {value!r}")
        return tuple(value)

    def table(self, key: str, default: Any = _REQUIRED) -> _Table:
        value = self._get(key, default)
        where = f"{self.where}.{key}" if self.where else key
        return _Table(value, where, self.source)

    def tables(self, key: str) -> list[_Table]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "must be an array of tables ([[...]])")
        prefix = f"{self.where}.{key}" if self.where else key
        return [_Table(v, f"{prefix}[{i}]", self.source) for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown key (misspelt?)")


def _site(t: _Table) -> Site:
    tz = t.string("timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise t.fail("timezone", f"unknown time zone {tz!r}") from None
    site = Site(
        name=t.string("name"),
        latitude=t.number("latitude", minimum=-90, maximum=90),
        longitude=t.number("longitude", minimum=-180, maximum=180),
        altitude_m=t.number("altitude_m", minimum=-500, maximum=9000),
        timezone=tz,
        grid_import_limit_kw=t.number("grid_import_limit_kw", positive=True),
        grid_export_limit_kw=t.number("grid_export_limit_kw", minimum=0),
        base_load_kw=t.number("base_load_kw", 0.0, minimum=0),
        free_vend=t.boolean("free_vend", False),
        auto_register=t.boolean("auto_register", False),
        dispatch_interval_s=t.integer("dispatch_interval_s", 60, minimum=1),
        dispatch_step_min=t.integer("dispatch_step_min", 15, minimum=1),
        horizon_h=t.integer("horizon_h", 24, minimum=1),
        policy=t.string("policy", "re100", choices=("re100", "cost")),
    )
    if 60 % site.dispatch_step_min:
        raise t.fail("dispatch_step_min", f"must divide 60, got {site.dispatch_step_min}")
    if site.horizon_h > 48:
        raise t.fail("horizon_h", f"must be <= 48, got {site.horizon_h}")
    t.done()
    return site


def _server(t: _Table) -> Server:
    server = Server(
        host=t.string("host", "127.0.0.1"),
        port=int(t.integer("port", 9000, minimum=0)),
        tls_cert=t.string("tls_cert", None),
        tls_key=t.string("tls_key", None),
        message_log_retention_days=t.integer("message_log_retention_days", 30, minimum=0),
        heartbeat_interval_s=t.integer("heartbeat_interval_s", 300, minimum=1),
        max_frame_bytes=t.integer("max_frame_bytes", 4 * 1024 * 1024, minimum=1024),
        ping_interval_s=t.number("ping_interval_s", 60.0, minimum=0),
        ping_timeout_s=t.number("ping_timeout_s", 30.0, positive=True),
        heartbeat_timeout_s=t.number("heartbeat_timeout_s", None, minimum=0),
        gc_freeze_interval_s=t.number("gc_freeze_interval_s", 300.0, minimum=0),
    )
    if server.port > 65535:
        raise t.fail("port", f"must be <= 65535, got {server.port}")
    if bool(server.tls_cert) != bool(server.tls_key):
        raise t.fail(
            "tls_key" if server.tls_cert else "tls_cert", "tls_cert and tls_key go together"
        )
    if server.tls_cert:
        server = replace(
            server,
            tls_cert=_readable_file(t, "tls_cert", server.tls_cert),
            tls_key=_readable_file(t, "tls_key", server.tls_key),
        )
    server = replace(server, data_transfer_vendors=_vendor_ids(t, "data_transfer_vendors"))
    t.done()
    return server


def _web(t: _Table) -> Web:
    web = Web(
        host=t.string("host", "127.0.0.1"),
        port=int(t.integer("port", 8080, minimum=0)),
        session_hours=t.number("session_hours", 12.0, positive=True),
        sse_interval_s=t.number("sse_interval_s", 2.0, positive=True),
    )
    if web.port > 65535:
        raise t.fail("port", f"must be <= 65535, got {web.port}")
    t.done()
    return web


def _readable_file(t: _Table, key: str, value: str) -> str:
    """A file named in the config: relative to the config file's folder; must be readable."""
    path = Path(value).expanduser()
    if not path.is_absolute() and t.source != "<memory>":
        path = Path(t.source).parent / path
    if not path.is_file():
        raise t.fail(key, f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise t.fail(key, f"cannot read {path}")
    return str(path)


def _vendor_ids(t: _Table, key: str) -> tuple[str, ...]:
    value = t._get(key, [])
    if not isinstance(value, list):
        raise t.fail(key, f"must be a list of vendor ids (strings), got {value!r}")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise t.fail(f"{key}[{i}]", f"must be a non-empty string, got {v!r}")
        if len(v) > 255:  # CiString255Type (1.6 and 2.0.1)
            raise t.fail(f"{key}[{i}]", f"must be at most 255 characters, got {len(v)}")
        if v in value[:i]:
            raise t.fail(f"{key}[{i}]", f"duplicate vendor id {v!r}")
    return tuple(value)


def _tariff(t: _Table) -> TariffConfig:
    seasons_t = t.table("seasons")
    seasons = []
    months_seen: dict[int, str] = {}
    for name in seasons_t.data:
        s = seasons_t.table(name)
        months = s.int_list("months", 1, 12)
        for m in months:
            if m in months_seen:
                raise s.fail("months", f"month {m} is also in season {months_seen[m]!r}")
            months_seen[m] = name
        rates_t = s.table("rates_krw_per_kwh")
        rates = {p: rates_t.number(p, minimum=0) for p in ("light", "mid", "peak")}
        rates_t.done()
        mid = s.int_list("mid_hours", 0, 23, ())
        peak = s.int_list("peak_hours", 0, 23, ())
        if set(mid) & set(peak):
            raise s.fail("peak_hours", f"hours {sorted(set(mid) & set(peak))} are also mid_hours")
        s.done()
        seasons.append(Season(name, months, rates, mid, peak))
    missing = sorted(set(range(1, 13)) - set(months_seen))
    if missing:
        raise seasons_t.fail("months", f"no season covers month(s) {missing}")
    tariff = TariffConfig(
        name=t.string("name", "tariff"),
        currency=t.string("currency", "KRW"),
        demand_charge_krw_per_kw_month=t.number("demand_charge_krw_per_kw_month", 0.0, minimum=0),
        export_price_krw_per_kwh=t.number("export_price_krw_per_kwh", 0.0, minimum=0),
        seasons=tuple(seasons),
    )
    t.done()
    return tariff


def _defaults(t: _Table) -> dict[str, SessionDefaults]:
    out = {}
    for kind, dwell, energy in (("ac", 240.0, 20.0), ("dc", 45.0, 40.0)):
        d = t.table(kind, {})
        out[kind] = SessionDefaults(
            dwell_min=d.number("dwell_min", dwell, positive=True),
            energy_kwh=d.number("energy_kwh", energy, positive=True),
        )
        d.done()
    t.done()
    return out


def _charger(t: _Table, cabinets: dict[str, Cabinet]) -> Charger:
    kind = t.string("kind", choices=("AC", "DC"))
    c = Charger(
        id=t.string("id"),
        kind=kind,
        max_power_kw=t.number("max_power_kw", positive=True),
        connectors=t.integer("connectors", 1, minimum=1),
        connector_max_power_kw=t.number("connector_max_power_kw", None, positive=True),
        phases=t.integer("phases", 3, minimum=1),
        voltage_v=t.number("voltage_v", 230.0, positive=True),
        cabinet=t.string("cabinet", None),
        vendor=t.string("vendor", ""),
        model=t.string("model", ""),
        ocpp_version=t.string("ocpp_version", "1.6", choices=("1.6", "2.0.1")),
        password_hash=t.string("password_hash", None),
    )
    if c.phases not in (1, 3):
        raise t.fail("phases", f"must be 1 or 3, got {c.phases}")
    if "/" in c.id or any(ch.isspace() for ch in c.id):
        raise t.fail("id", f"must not contain '/' or spaces, got {c.id!r}")
    if c.cabinet is not None and c.cabinet not in cabinets:
        raise t.fail("cabinet", f"no cabinet with id {c.cabinet!r} in [[cabinets]]")
    if c.cabinet is not None and kind != "DC":
        raise t.fail("cabinet", "only DC chargers share power cabinets")
    if c.connector_max_power_kw is not None and c.connector_max_power_kw > c.max_power_kw:
        raise t.fail("connector_max_power_kw", "must not exceed max_power_kw")
    t.done()
    return c


def _pv_array(t: _Table) -> PVArray:
    a = PVArray(
        name=t.string("name"),
        peak_power_kw=t.number("peak_power_kw", positive=True),
        tilt_deg=t.number("tilt_deg", minimum=0, maximum=90),
        azimuth_deg=t.number("azimuth_deg", minimum=0, maximum=360),
        temp_coeff_per_c=t.number("temp_coeff_per_c", -0.0037, minimum=-0.02, maximum=0),
        losses_frac=t.number("losses_frac", 0.14, minimum=0, maximum=0.9),
        inverter_ac_kw=t.number("inverter_ac_kw", None, positive=True),
        mounting=t.string(
            "mounting", "open_rack", choices=("open_rack", "close_mount", "insulated_back")
        ),
    )
    t.done()
    return a


def _battery(t: _Table) -> BatteryConfig:
    b = BatteryConfig(
        capacity_kwh=t.number("capacity_kwh", positive=True),
        max_charge_kw=t.number("max_charge_kw", minimum=0),
        max_discharge_kw=t.number("max_discharge_kw", minimum=0),
        soc_min_frac=t.number("soc_min_frac", 0.1, minimum=0, maximum=1),
        soc_max_frac=t.number("soc_max_frac", 0.95, minimum=0, maximum=1),
        initial_soc_frac=t.number("initial_soc_frac", 0.5, minimum=0, maximum=1),
        charge_efficiency=t.number("charge_efficiency", 0.95, positive=True, maximum=1),
        discharge_efficiency=t.number("discharge_efficiency", 0.95, positive=True, maximum=1),
    )
    if b.soc_min_frac >= b.soc_max_frac:
        raise t.fail("soc_min_frac", "must be below soc_max_frac")
    if not b.soc_min_frac <= b.initial_soc_frac <= b.soc_max_frac:
        raise t.fail("initial_soc_frac", "must lie between soc_min_frac and soc_max_frac")
    t.done()
    return b


def profiles_dir() -> Path:
    """The register-map profiles shipped with megastation (``megastation/devices/profiles``)."""
    return Path(__file__).resolve().parent.parent / "devices" / "profiles"


def profile_names() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.toml"))


def _register(t: _Table) -> RegisterSpec:
    r = RegisterSpec(
        address=t.integer("address", minimum=0),
        type=t.string("type", choices=tuple(REGISTER_TYPES)),
        function=t.string("function", "holding", choices=("holding", "input")),
        scale=t.number("scale", 1.0),
        sf_address=t.integer("sf_address", None, minimum=0),
    )
    if r.address + REGISTER_TYPES[r.type] > 65536:
        raise t.fail("address", f"{r.type} at {r.address} runs past register 65535")
    if r.scale == 0:
        raise t.fail("scale", "must not be 0")
    t.done()
    return r


def _register_map(t: _Table, kind: str) -> dict[str, RegisterSpec]:
    regs = {}
    for name in t.data:
        if name not in DEVICE_QUANTITIES[kind]:
            raise t.fail(
                name, f"a {kind} has no {name!r}; one of {', '.join(DEVICE_QUANTITIES[kind])}"
            )
        regs[name] = _register(t.table(name))
    if kind == "battery" and "soc_pct" not in regs:
        raise t.fail("soc_pct", "is required for a battery")
    if kind == "pv" and "power_w" not in regs:
        raise t.fail("power_w", "is required for a PV inverter")
    if kind == "meter" and "power_w" not in regs and not {"import_w", "export_w"} <= set(regs):
        raise t.fail("power_w", "is required for a meter (or import_w and export_w)")
    if "setpoint_w" in regs and regs["setpoint_w"].function != "holding":
        raise t.fail("setpoint_w", "must be a holding register (it is written)")
    return regs


def _profile(t: _Table, key: str, value: str, kind: str) -> dict[str, Any]:
    """A register-map profile file: its own fields, validated, naming the file on error."""
    if value.endswith(".toml"):
        path = Path(_readable_file(t, key, value))
    else:
        path = profiles_dir() / f"{value}.toml"
        if not path.is_file():
            names = ", ".join(["sunspec", "registers", *profile_names()])
            raise t.fail(key, f"unknown model {value!r}; one of {names}, or a .toml profile file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise t.fail(key, f"{path}: not valid TOML: {exc}") from None
    p = _Table(data, "", str(path))
    pkind = p.string("kind", choices=DEVICE_KINDS)
    if pkind != kind:
        raise t.fail(key, f"profile {value!r} describes a {pkind}, not a {kind}")
    out = {
        "description": p.string("description", ""),
        "unit_id": p.integer("unit_id", None, minimum=0),
        "port": p.integer("port", None, minimum=1),
        "word_order": p.string("word_order", "big", choices=("big", "little")),
        "byte_order": p.string("byte_order", "big", choices=("big", "little")),
        "sign": p.string("sign", DEVICE_SIGNS[kind][0], choices=DEVICE_SIGNS[kind]),
        "registers": _register_map(p.table("registers"), kind),
    }
    p.done()
    return out


def _device(t: _Table, index: int, battery: BatteryConfig | None) -> DeviceConfig:
    kind = t.string("kind", choices=DEVICE_KINDS)
    model = t.string("model", "sunspec")
    profile: dict[str, Any] = {}
    registers: dict[str, RegisterSpec] = {}
    if model == "registers":
        registers = _register_map(t.table("registers"), kind)
    elif model != "sunspec":
        profile = _profile(t, "model", model, kind)
        registers = profile["registers"]
    if "registers" in t.data and model != "registers":
        raise t.fail("registers", 'an inline register map needs model = "registers"')
    default_port = profile.get("port") or 502
    default_unit = profile.get("unit_id")
    d = DeviceConfig(
        name=t.string("name", f"{kind}-{index}"),
        kind=kind,
        host=t.string("host"),
        port=t.integer("port", default_port, minimum=1),
        unit_id=t.integer("unit_id", 1 if default_unit is None else default_unit, minimum=0),
        model=model,
        registers=registers,
        word_order=t.string(
            "word_order", profile.get("word_order", "big"), choices=("big", "little")
        ),
        byte_order=t.string(
            "byte_order", profile.get("byte_order", "big"), choices=("big", "little")
        ),
        poll_interval_s=t.number("poll_interval_s", 1.0, positive=True),
        timeout_s=t.number("timeout_s", 2.0, positive=True, maximum=60),
        stale_after_s=t.number("stale_after_s", None, positive=True),
        sign=t.string(
            "sign", profile.get("sign", DEVICE_SIGNS[kind][0]), choices=DEVICE_SIGNS[kind]
        ),
        max_power_kw=t.number("max_power_kw", None, positive=True),
        sunspec_base=t.integer("sunspec_base", None, minimum=0),
        revert_s=t.integer("revert_s", 300, minimum=0),
        profile_description=profile.get("description", ""),
    )
    if d.port > 65535:
        raise t.fail("port", f"must be <= 65535, got {d.port}")
    if d.unit_id > 255:
        raise t.fail("unit_id", f"must be <= 255, got {d.unit_id}")
    if d.sunspec_base is not None and model != "sunspec":
        raise t.fail("sunspec_base", 'only for model = "sunspec"')
    if d.revert_s > 65535:
        raise t.fail("revert_s", f"must be <= 65535, got {d.revert_s}")
    if kind == "battery" and battery is None:
        raise t.fail(
            "kind", "a battery device needs the [battery] table (capacity and limits to plan with)"
        )
    t.done()
    return d


def _weather(t: _Table) -> WeatherFeedConfig:
    url = t.string("url")
    if not url.startswith(("http://", "https://")) or "?" in url:
        raise t.fail("url", f"must be an http(s) URL without a query, got {url!r}")
    w = WeatherFeedConfig(
        url=url,
        resolution=t.string("resolution", "minutely_15", choices=("minutely_15", "hourly")),
        refresh_min=t.number("refresh_min", 60.0, minimum=1, maximum=24 * 60),
        retry_min=t.number("retry_min", 5.0, minimum=0.1, maximum=24 * 60),
        timeout_s=t.number("timeout_s", 10.0, positive=True, maximum=300),
        forecast_days=t.integer("forecast_days", 3, minimum=2),
        max_age_h=t.number("max_age_h", 12.0, positive=True, maximum=72),
        history_days=t.integer("history_days", 3, minimum=1),
    )
    if w.forecast_days > 16:
        raise t.fail("forecast_days", f"must be <= 16, got {w.forecast_days}")
    t.done()
    return w


def parse_station(data: dict[str, Any], source: str = "<memory>") -> Station:
    """Validate a parsed TOML document into a :class:`Station`."""
    root = _Table(data, "", source)
    cabinets = []
    for ct in root.tables("cabinets"):
        cabinets.append(
            Cabinet(id=ct.string("id"), max_power_kw=ct.number("max_power_kw", positive=True))
        )
        ct.done()
    by_id = {c.id: c for c in cabinets}
    if len(by_id) != len(cabinets):
        raise root.fail("cabinets", "duplicate cabinet id")
    chargers = [_charger(t, by_id) for t in root.tables("chargers")]
    ids = [c.id for c in chargers]
    for i, cid in enumerate(ids):
        if cid in ids[:i]:
            raise ConfigError(f"{source}: chargers[{i}].id: duplicate charger id {cid!r}")
    arrays = [_pv_array(t) for t in root.tables("pv_arrays")]
    names = [a.name for a in arrays]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{source}: pv_arrays[{i}].name: duplicate array name {name!r}")
    battery = _battery(root.table("battery")) if "battery" in data else None
    devices = [_device(t, i, battery) for i, t in enumerate(root.tables("devices"))]
    for i, d in enumerate(devices):
        if d.name in [x.name for x in devices[:i]]:
            raise ConfigError(f"{source}: devices[{i}].name: duplicate device name {d.name!r}")
    kinds = [d.kind for d in devices]
    for i, d in enumerate(devices):
        if d.kind in ("battery", "meter") and d.kind in kinds[:i]:
            raise ConfigError(
                f"{source}: devices[{i}].kind: only one {d.kind} device (several PV inverters are summed)"
            )
    weather = _weather(root.table("weather")) if "weather" in data else None
    station = Station(
        site=_site(root.table("site")),
        server=_server(root.table("server", {})),
        tariff=_tariff(root.table("tariff")),
        defaults=_defaults(root.table("defaults", {})),
        cabinets=tuple(cabinets),
        chargers=tuple(chargers),
        pv_arrays=tuple(arrays),
        battery=battery,
        devices=tuple(devices),
        weather=weather,
        source=source,
        raw=data,
        web=_web(root.table("web", {})),
    )
    root.seen.update(("battery", "weather"))
    root.done()
    return station


def load_station(path: str | os.PathLike[str]) -> Station:
    """Read and validate a station TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_station(data, str(p))


def seeds_dir() -> Path:
    """The folder of example stations and demo data (repo checkout or installed wheel)."""
    package = Path(__file__).resolve().parent.parent  # megastation/
    packaged = package / "seeds"
    if packaged.is_dir():
        return packaged
    return package.parent / "seeds"


def default_config_path() -> Path:
    """``$MEGASTATION_CONFIG`` if set, else the Gwangju seed station."""
    env = os.environ.get(ENV_CONFIG)
    return Path(env) if env else seeds_dir() / DEFAULT_SEED
