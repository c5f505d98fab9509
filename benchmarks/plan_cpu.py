"""CPU per simulated day of the controlled policies, and a fingerprint of their results.

Usage: .venv/bin/python benchmarks/plan_cpu.py [--days 3,14] [--policy re100,cost]

For each span and policy: one socket-free run of the seed station (mixed-week weather,
seed 1, one process, no perfect foresight) timed with ``time.process_time`` (steadier than
wall time on a shared machine), plans per day, and a SHA-256 of the exact KPIs and the
energy-flow frame. Run it on two checkouts (e.g. ``/work/main/.venv/bin/python
benchmarks/plan_cpu.py`` beside this one) at the same time: a speed-up that must not
change results shows the same fingerprints, and the CPU figures of the two are comparable
under the same load. Not a test: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from datetime import timedelta

from megastation.core.config import load_station, seeds_dir
from megastation.sim.simulator import prepare_site, read_weather, simulate, weather_start


def fingerprint(kpis, flows) -> str:
    """SHA-256 (first 16 hex digits) of the KPIs' exact values and the flow frame."""
    h = hashlib.sha256(repr(sorted(kpis.as_dict().items())).encode())
    h.update(flows.to_csv(float_format="%.17g").encode())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", default="3,14", help="comma-separated spans [days]")
    ap.add_argument("--policy", default="re100,cost")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    station = load_station(seeds_dir() / "gwangju-donggu.toml")
    wx = read_weather("mixed-week")
    start = weather_start(wx, station.site.timezone)
    print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'run':<14}{'CPU s':>8}{'CPU s/day':>11}{'plans/day':>11}  fingerprint")
    for days in (float(d) for d in args.days.split(",")):
        site = prepare_site(station, start, start + timedelta(days=days), wx, args.seed)
        for pol in args.policy.split(","):
            cpu = time.process_time()
            r = simulate(
                station, policy=pol, start=start, days=days, weather=wx, seed=args.seed,
                site=site, with_perfect_foresight=False,
            )  # fmt: skip
            cpu = time.process_time() - cpu
            print(
                f"{pol + f' {days:g} d':<14}{cpu:>8.1f}{cpu / days:>11.2f}{r.plans / days:>11.0f}"
                f"  {fingerprint(r.kpis, r.flows)}",
                flush=True,
            )
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
