"""Make the two synthetic session files in this folder (deterministic; not the fleet model).

    python seeds/sessions/make_sessions.py

- ``workplace-ac.acn.json``: ACN-Data API format; a fortnight of a workplace car park
  (America/Los_Angeles) from Monday 2019-03-04: AC cars arriving 07:00-10:00 for a
  working day (with a few midday and afternoon visits), hardly any at weekends;
  heavy-tailed energies (lognormal, sigma 0.9: the mean is ~1.5 x the median); 70 %
  of drivers state a departure (off by N(0, 2.5 h): often hours wrong) and an energy
  (x lognormal(0, 0.6) of the truth).
- ``highway-dc.csv``: the generic CSV format; a fortnight of a motorway fast-charging
  hub (times with +01:00, Europe/Berlin winter) from Monday 2025-03-03: DC cars
  stopping 15-45 min, a Monday-morning peak (06-10 h), an evening peak, quiet
  weekends; cars of 50-230 kW; 20 % state the energy they want.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

HERE = Path(__file__).parent


def rfc1123(t: datetime) -> str:
    return format_datetime(t.astimezone(UTC), usegmt=True)


def workplace_ac(rng: np.random.Generator) -> dict:
    tz = ZoneInfo("America/Los_Angeles")
    day0 = datetime(2019, 3, 4, tzinfo=tz)  # a Monday
    items = []
    for d in range(14):
        day = day0 + timedelta(days=d)
        weekend = day.weekday() >= 5
        n = int(rng.poisson(0.8 if weekend else 7.0))
        for _ in range(n):
            r = rng.random()
            if weekend or r < 0.15:  # midday errand
                arr_h, stay_h = rng.normal(12.5, 1.2), math.exp(rng.normal(math.log(2.0), 0.5))
            elif r < 0.25:  # afternoon
                arr_h, stay_h = rng.normal(15.5, 1.0), rng.uniform(1.5, 4.0)
            else:  # a working day
                arr_h, stay_h = rng.normal(8.3, 0.7), float(np.clip(rng.normal(8.8, 1.4), 4, 12))
            arrival = day + timedelta(hours=float(np.clip(arr_h, 6.0, 19.0)))
            arrival = arrival.replace(second=int(rng.integers(0, 60)), microsecond=0)
            departure = arrival + timedelta(hours=stay_h)
            energy = math.exp(rng.normal(math.log(8.0), 0.9))  # heavy tail
            energy = round(min(energy, 6.6 * stay_h * 0.95, 70.0), 3)
            done = arrival + timedelta(hours=energy / 6.6)
            inputs = None
            if rng.random() < 0.7:
                said = departure + timedelta(hours=float(rng.normal(0.0, 2.5)))
                said = max(said, arrival + timedelta(minutes=30))
                inputs = [
                    {
                        "userID": int(rng.integers(100, 999)),
                        "kWhRequested": round(energy * math.exp(rng.normal(0.0, 0.6)), 1),
                        "minutesAvailable": round((said - arrival).total_seconds() / 60),
                        "requestedDeparture": rfc1123(said),
                        "modifiedAt": rfc1123(arrival + timedelta(minutes=2)),
                        "paymentRequired": True,
                    }
                ]
            items.append(
                {
                    "_id": f"{len(items):024x}",
                    "clusterID": "39",
                    "connectionTime": rfc1123(arrival),
                    "disconnectTime": rfc1123(departure),
                    "doneChargingTime": rfc1123(min(done, departure)),
                    "kWhDelivered": energy,
                    "sessionID": f"2_39_{len(items)}",
                    "siteID": "2",
                    "spaceID": f"CA-{300 + int(rng.integers(0, 50))}",
                    "stationID": f"2-39-{int(rng.integers(78, 140))}-{int(rng.integers(300, 600))}",
                    "timezone": "America/Los_Angeles",
                    "userID": None if inputs is None else inputs[0]["userID"],
                    "userInputs": inputs,
                }
            )
    items.sort(key=lambda it: datetime.strptime(it["connectionTime"], "%a, %d %b %Y %H:%M:%S %Z"))
    return {"_items": items, "_meta": {"max_results": len(items), "total": len(items)}}


def highway_dc(rng: np.random.Generator) -> list[dict]:
    tz = ZoneInfo("Europe/Berlin")
    day0 = datetime(2025, 3, 3, tzinfo=tz)  # a Monday
    rows = []
    for d in range(14):
        day = day0 + timedelta(days=d)
        wd = day.weekday()
        for h in range(24):
            rate = 0.3 if h < 6 or h >= 22 else 1.6
            if 16 <= h < 20:
                rate = 2.6
            if wd == 0 and 6 <= h < 10:
                rate = 5.5  # Monday-morning peak
            elif wd < 5 and 6 <= h < 10:
                rate = 2.4
            if wd >= 5:
                rate *= 0.3
            for _ in range(int(rng.poisson(rate))):
                arrival = day + timedelta(hours=h, seconds=int(rng.integers(0, 3600)))
                car_kw = float(rng.choice([50.0, 100.0, 150.0, 230.0], p=[0.2, 0.35, 0.3, 0.15]))
                energy = round(float(np.clip(rng.normal(32.0, 11.0), 8.0, 70.0)), 2)
                mean_kw = 0.6 * min(car_kw, 150.0)
                stay_min = float(np.clip(60 * energy / mean_kw + rng.uniform(3, 12), 12, 75))
                departure = arrival + timedelta(minutes=stay_min)
                asked = ""
                if rng.random() < 0.2:
                    asked = round(energy * float(rng.uniform(0.9, 1.25)), 1)
                rows.append(
                    {
                        "arrival": arrival.isoformat(timespec="seconds"),
                        "departure": departure.isoformat(timespec="seconds"),
                        "energy_kwh": energy,
                        "requested_energy_kwh": asked,
                        "max_power_kw": car_kw,
                        "kind": "DC",
                        "id_token": f"HWY{int(rng.integers(0, 16**6)):06X}",
                    }
                )
    rows.sort(key=lambda r: r["arrival"])
    return rows


def main() -> None:
    rng = np.random.default_rng(20260311)
    (HERE / "workplace-ac.acn.json").write_text(
        json.dumps(workplace_ac(rng), indent=1) + "\n", encoding="utf-8"
    )
    rows = highway_dc(rng)
    with (HERE / "highway-dc.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
