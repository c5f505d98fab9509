"""The city data hub feed: the station as an NGSI-LD ``EVChargingStation`` entity.

Shape: FIWARE Smart Data Models, ``dataModel.Transportation/EVChargingStation``
(https://github.com/smart-data-models/dataModel.Transportation), in NGSI-LD
normalised form (each attribute a ``Property`` / ``GeoProperty`` with ``value``,
``observedAt`` and, for quantities, a UN/CEFACT ``unitCode``: KWH kilowatt-hour,
KWT kilowatt, P1 percent). Standard attributes: ``name``, ``location`` (GeoJSON
Point, longitude first), ``capacity`` (cars that can charge at once),
``availableCapacity``, ``status`` (``working`` | ``withIncidence`` | ``outOfService``
| ``full`` | ``almostFull``), ``socketType``, ``allowedVehicleType``, ``chargeType``,
``dateModified``. Station figures beyond the model are extra properties (allowed by
NGSI-LD) with explicit units: ``energyDeliveredToday`` [KWH], ``renewableShareToday``
[P1], ``gridImportToday`` [KWH], ``pvProductionToday`` [KWH], ``gridImportLimit``
[KWT], ``connectorsCharging``.

No personal data: no id tokens, no transaction ids, no per-car figures.
"""

from __future__ import annotations

from typing import Any

from megastation.web.views import Views

CONTEXT = [
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
]
ENTITY_TYPE = "EVChargingStation"
# charger kind -> socket types of Korean public chargers (DOMAIN: CCS1 for DC, Type 1 for AC)
SOCKETS = {"ac": "Type1", "dc": "CCS1"}


def entity_id(views: Views) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in views.station.site.name).strip("-")
    return f"urn:ngsi-ld:{ENTITY_TYPE}:megastation:{slug}"


def _prop(value: Any, observed: str, unit: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"type": "Property", "value": value, "observedAt": observed}
    if unit:
        p["unitCode"] = unit
    return p


def station_entity(views: Views) -> dict[str, Any]:
    """The station's ``EVChargingStation`` entity now (NGSI-LD normalised, with @context)."""
    st = views.station
    ov = views.overview()
    now = ov["time"]
    conns = [c for c in ov["connectors"] if c["connector_id"] is not None] or ov["connectors"]
    capacity = sum(c.connectors for c in st.chargers)
    online = [c for c in conns if c["connected"]]
    faulted = [
        c for c in conns if c["status"] == "Faulted" or c["error_code"] not in (None, "", "NoError")
    ]
    busy = [
        c
        for c in conns
        if c["transaction_id"] is not None or c["status"] in ("Charging", "Occupied")
    ]
    available = sum(1 for c in online if c["status"] == "Available" and c["transaction_id"] is None)
    if not online:
        status = "outOfService"
    elif faulted or not all(c["connected"] for c in ov["connectors"]):  # fault or offline
        status = "withIncidence"
    elif available == 0:
        status = "full"
    elif available <= max(1, capacity // 10):
        status = "almostFull"
    else:
        status = "working"
    kinds = sorted({c.kind.lower() for c in st.chargers})
    t = ov["today"]
    return {
        "id": entity_id(views),
        "type": ENTITY_TYPE,
        "name": _prop(st.site.name, now),
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [st.site.longitude, st.site.latitude]},
        },
        "capacity": _prop(capacity, now),
        "availableCapacity": _prop(available, now),
        "status": _prop([status], now),
        "socketType": _prop(sorted({SOCKETS[k] for k in kinds if k in SOCKETS}), now),
        "allowedVehicleType": _prop(["car"], now),
        "chargeType": _prop(["free"] if st.site.free_vend else ["payPerUse"], now),
        "dateModified": {"type": "Property", "value": {"@type": "DateTime", "@value": now}},
        "connectorsCharging": _prop(len(busy), now),
        "energyDeliveredToday": _prop(t["energy_kwh"], now, "KWH"),
        "renewableShareToday": _prop(
            None if t["renewable_frac"] is None else round(100 * t["renewable_frac"], 1), now, "P1"
        ),
        "gridImportToday": _prop(t["grid_import_kwh"], now, "KWH"),
        "pvProductionToday": _prop(t["pv_kwh"], now, "KWH"),
        "gridImportLimit": _prop(ov["grid"]["limit_kw"], now, "KWT"),
        "@context": CONTEXT,
    }
