"""Dispatch inputs from a station file: connector limits, power groups, grid state with
time-of-use prices, the battery."""

from __future__ import annotations

from megastation.core.config import Station
from megastation.core.tariff import Tariff
from megastation.dispatch.problem import BatteryState, GridState, PowerGroup, TimeGrid


def connector_limit_kw(station: Station, charger_id: str, connector_id: int) -> float:
    """A connector's power limit [kW] from the station config (KeyError if unknown)."""
    ch = station.charger(charger_id)
    if ch is None or connector_id not in ch.connector_ids:
        raise KeyError(f"no connector {charger_id}/{connector_id} in {station.source}")
    return ch.connector_power_kw


def station_groups(station: Station) -> tuple[PowerGroup, ...]:
    """Power groups of a station: each multi-connector charger's total and each cabinet."""
    groups = []
    for ch in station.chargers:
        if ch.connectors > 1 and ch.connector_power_kw * ch.connectors > ch.max_power_kw:
            groups.append(
                PowerGroup(
                    f"charger:{ch.id}", tuple((ch.id, k) for k in ch.connector_ids), ch.max_power_kw
                )
            )
    for cab in station.cabinets:
        members = tuple(
            (ch.id, k) for ch in station.chargers if ch.cabinet == cab.id for k in ch.connector_ids
        )
        groups.append(PowerGroup(f"cabinet:{cab.id}", members, cab.max_power_kw))
    return tuple(groups)


_TARIFFS: dict[tuple[int, str], tuple[object, Tariff]] = {}
_MAX_TARIFFS = 4  # tariffs kept (each remembers up to MEMO_MAX_TIMES prices)


def station_tariff(station: Station) -> Tariff:
    """The station's :class:`Tariff`, made once per tariff table and zone (it remembers
    the price of each step it was asked for)."""
    key = (id(station.tariff), station.site.timezone)
    hit = _TARIFFS.get(key)
    if hit is None or hit[0] is not station.tariff:  # the config is held: ids stay unique
        if len(_TARIFFS) >= _MAX_TARIFFS:  # e.g. a study's many stations in one process
            _TARIFFS.clear()
        hit = _TARIFFS[key] = (station.tariff, Tariff(station.tariff, station.site.timezone))
    return hit[1]


def station_grid_state(
    station: Station, grid: TimeGrid, *, peak_so_far_kw: float = 0.0
) -> GridState:
    """Grid limits, time-of-use prices per step and demand charge from the station."""
    tariff = station_tariff(station)
    return GridState(
        import_limit_kw=station.site.grid_import_limit_kw,
        export_limit_kw=station.site.grid_export_limit_kw,
        import_price_krw_per_kwh=grid.mean_of_fine(tariff.price_at_us(grid.fine().times_us)),
        export_price_krw_per_kwh=tariff.export_price_krw_per_kwh,
        demand_charge_krw_per_kw=tariff.demand_charge_krw_per_kw_month,
        peak_so_far_kw=peak_so_far_kw,
    )


def station_battery(
    station: Station, soc_frac: float | None = None, renewable_frac: float = 0.0
) -> BatteryState | None:
    """The station battery at ``soc_frac`` (None = its configured initial SoC)."""
    bc = station.battery
    if bc is None:
        return None
    return BatteryState(
        capacity_kwh=bc.capacity_kwh,
        soc_frac=bc.initial_soc_frac if soc_frac is None else soc_frac,
        soc_min_frac=bc.soc_min_frac,
        soc_max_frac=bc.soc_max_frac,
        max_charge_kw=bc.max_charge_kw,
        max_discharge_kw=bc.max_discharge_kw,
        charge_efficiency=bc.charge_efficiency,
        discharge_efficiency=bc.discharge_efficiency,
        renewable_frac=renewable_frac,
    )
