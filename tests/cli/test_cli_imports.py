"""The operator's quick commands stay quick: they import none of the heavy libraries
(scipy, pandas, pvlib, matplotlib, and sqlite_utils, which imports pandas).
``benchmarks/cli_start.py`` times them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("scipy", "pandas", "pvlib", "matplotlib", "sqlite_utils")
# Runs a CLI command in this process and, at exit, prints the heavy modules it imported.
_PROBE = (
    "import atexit, sys\n"
    f"heavy = {HEAVY!r}\n"
    "atexit.register(lambda: print('HEAVY:', *[m for m in heavy if m in sys.modules],"
    " file=sys.stderr))\n"
    "from megastation.cli import main\n"
    "sys.argv[0] = 'megastation'\n"
    "main()\n"
)


def _run(tmp_path, *args: str) -> tuple[str, list[str]]:
    env = {**os.environ, "MEGASTATION_DB": str(tmp_path / "megastation.db")}
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    heavy = next(ln for ln in res.stderr.splitlines() if ln.startswith("HEAVY:")).split()[1:]
    return res.stdout, heavy


@pytest.mark.parametrize(
    "args",
    [("--help",), ("status", "--json"), ("sessions",), ("chargers",), ("tags",)],
    ids=lambda a: " ".join(a),
)
def test_quick_commands_import_no_heavy_library(tmp_path, args):
    # a fresh store: the schema is created without sqlite_utils too
    out, heavy = _run(tmp_path, *args)
    assert heavy == [], f"megastation {' '.join(args)} imported {', '.join(heavy)}"
    if args == ("status", "--json"):
        assert set(json.loads(out)) == {"connectors", "control"}


def test_the_probe_sees_a_heavy_import(tmp_path):
    # the same probe on a command that does need pandas (the forecast): not a blind check
    _, heavy = _run(tmp_path, "forecast", "--hours", "1", "-o", str(tmp_path / "pv.csv"))
    assert "pandas" in heavy
