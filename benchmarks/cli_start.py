"""Start-up time of the operator CLI against a bare Python, measured in the same run.

Usage: .venv/bin/python benchmarks/cli_start.py [-n 15]

Runs, interleaved ``-n`` times each in fresh processes: ``python -c pass`` (the floor:
interpreter start-up), ``megastation --help`` and ``megastation status --json`` (on a
store created beforehand, so the schema migration is not timed; bytecode is written and
warmed up first, as an installed package has it, even where PYTHONDONTWRITEBYTECODE is
set), and prints the median
wall time of each, its ratio to ``python -c pass``, the median CPU time and, per command, whether any of the
heavy modules (scipy, pandas, pvlib, matplotlib, sqlite_utils) was imported. Target
(issue #10): ``status --json`` answers in < 0.3 s on the 2-core development machine.
Not a test (tests/cli/test_cli_imports.py checks the imports).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("scipy", "pandas", "pvlib", "matplotlib", "sqlite_utils")
TARGET_STATUS_S = 0.3


def _megastation() -> list[str]:
    exe = shutil.which("megastation", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "from megastation.cli import main; main()"]


def _time(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU (user + system) is what a busy machine's
    other tenants do not inflate much."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def heavy_imports(args: list[str], env: dict[str, str], cwd: str) -> list[str]:
    """The heavy modules a CLI command has imported when it exits."""
    code = (
        "import atexit, sys\n"
        f"heavy = {HEAVY!r}\n"
        "atexit.register(lambda: print(*[m for m in heavy if m in sys.modules], file=sys.stderr))\n"
        "from megastation.cli import main\n"
        "sys.argv[0] = 'megastation'\n"
        "main()\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    return res.stderr.split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=15, help="runs of each command")
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MEGASTATION_DB": str(Path(tmp) / "megastation.db")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        ms = _megastation()
        runs = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "megastation --help": [*ms, "--help"],
            "megastation status --json": [*ms, "status", "--json"],
        }
        subprocess.run(runs["megastation status --json"], env=env, cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
        for _ in range(n):
            for name, cmd in runs.items():
                times[name].append(_time(cmd, env, tmp))
        base = statistics.median(w for w, _ in times["python -c pass"])
        print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'command':<28}{'wall s':>8}{'min s':>8}{'x pass':>8}{'CPU s':>8}  heavy imports")
        for name, ts in times.items():
            wall = statistics.median(w for w, _ in ts)
            cpu = statistics.median(c for _, c in ts)
            low = min(w for w, _ in ts)
            heavy = "" if name.startswith("python") else ", ".join(
                heavy_imports(runs[name][len(ms):], env, tmp)) or "none"  # fmt: skip
            print(f"{name:<28}{wall:>8.3f}{low:>8.3f}{wall / base:>8.1f}{cpu:>8.3f}  {heavy}")
        status = statistics.median(w for w, _ in times["megastation status --json"])
        verdict = "met" if status < TARGET_STATUS_S else "NOT met"
        print(f"target status --json < {TARGET_STATUS_S} s (median wall): {verdict}, {n} runs each")


if __name__ == "__main__":
    main()
