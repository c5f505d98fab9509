#!/usr/bin/env python3
"""Mutation testing of the core pure modules with mutmut: one score per module.

Usage (after ``pip install -e '.[test,mutation]'``)::

    .venv/bin/python tools/mutation.py                 # every module below
    .venv/bin/python tools/mutation.py accounting tariff --max-children 2 --timeout-min 20
    .venv/bin/python tools/mutation.py --list          # the modules and their tests

    .venv/bin/python tools/mutation.py dispatch --recheck   # only the earlier survivors

Each module runs in its own scratch copy of the repository (``.mutation/<module>/``,
git-ignored, kept between runs so mutmut only re-tests what changed, and the survivors of
earlier runs again, by name, for tests added since) with the shared
``[tool.mutmut]`` settings of ``pyproject.toml``, mutating that one file and running only
the module's own tests (:data:`MODULES`), which keeps a module to minutes on 2 cores.
The score is killed (or timed out) over all mutants minus the equivalent ones listed in
``mutation-equivalent.toml`` (a mutant that cannot change any observable result, with
the reason). Survivors are printed so each is either killed by a new test or listed
there. Exit status 1 when a module is below ``--fail-under`` (default 0: report only).

Rounds: a time-boxed run is resumed by the next one (mutmut stores each verdict as it
comes), and once every mutant has a verdict, ``--recheck`` re-tests only the survivors and
the "no tests" mutants of earlier runs against today's tests, which keeps a round on a
big module (dispatch: ~2,200 mutants) to minutes. Add new tests to a file the module
already selects: a new test *file* changes mutmut's test selection, and mutmut then
drops every cached verdict of that module (a full re-run).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
EQUIVALENT = ROOT / "mutation-equivalent.toml"

#: module name -> (file(s) mutated, globs of the tests run against its mutants).
MODULES: dict[str, tuple[str | tuple[str, ...], tuple[str, ...]]] = {
    "accounting": (
        "megastation/core/accounting.py",
        ("tests/**/test_accounting*.py", "tests/**/test_dispatch_accounting.py"),
    ),
    "tariff": ("megastation/core/tariff.py", ("tests/**/test_tariff*.py",)),
    "dispatch": (
        (
            "megastation/dispatch/lp.py",
            "megastation/dispatch/problem.py",
            "megastation/dispatch/policy.py",
            "megastation/dispatch/validate.py",
            "megastation/dispatch/station.py",
        ),
        ("tests/dispatch/test_*.py",),
    ),
    "needs": (
        "megastation/control/needs.py",
        ("tests/**/test_expected_demand.py", "tests/**/test_needs*.py"),
    ),
    "nowcast": (
        "forecasts/nowcast.py",
        ("tests/**/test_nowcast*.py", "tests/**/test_forecasts_*.py"),
    ),
    "bands": ("forecasts/bands.py", ("tests/**/test_bands*.py", "tests/**/test_forecasts_*.py")),
    "profiles": (
        "ocpp_central/profiles.py",
        ("tests/**/test_profiles*.py", "tests/**/test_control_profiles.py"),
    ),
    "schedules": (
        "megastation/core/schedules.py",
        (
            "tests/**/test_schedules*.py",
            "tests/**/test_profiles*.py",
            "tests/**/test_control_profiles.py",
        ),
    ),
    "weather": (
        "forecasts/weather.py",
        ("tests/**/test_weather*.py", "tests/**/test_forecasts_input.py"),
    ),
}

#: What is copied into a module's scratch copy.
COPY = ("megastation", "ocpp_central", "forecasts", "tests", "seeds", "pyproject.toml")


def _tests(globs: tuple[str, ...]) -> list[str]:
    found = sorted({p for g in globs for p in glob.glob(str(ROOT / g), recursive=True)})
    return [str(Path(p).relative_to(ROOT)) for p in found]


def _equivalent() -> dict[str, str]:
    """Mutant name -> reason, from mutation-equivalent.toml."""
    if not EQUIVALENT.exists():
        return {}
    data = tomllib.loads(EQUIVALENT.read_text())
    return {m["mutant"]: m["reason"] for m in data.get("equivalent", [])}


def _sync(dest: Path) -> None:
    """Mirror the sources and tests into ``dest`` (mutmut's own state there is kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src, dst = ROOT / name, dest / name
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dst)


def _write_config(dest: Path, paths: tuple[str, ...], tests: list[str]) -> None:
    """The repository's pyproject.toml with this module's ``only_mutate`` and tests."""
    text = (ROOT / "pyproject.toml").read_text()
    extra = (
        f"only_mutate = [{', '.join(repr(p) for p in paths)}]\n"
        f"pytest_add_cli_args_test_selection = [{', '.join(repr(t) for t in tests)}]\n"
    )
    text = re.sub(r"(\[tool\.mutmut\]\n)", r"\1" + extra.replace("\\", "\\\\"), text)
    (dest / "pyproject.toml").write_text(text)


def _results(dest: Path) -> dict[str, str]:
    """Mutant name -> status (killed, survived, timeout, ...) of the last run."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=dest,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    status = {}
    for line in out.splitlines():
        name, sep, st = line.strip().rpartition(": ")
        if sep and name:
            status[name] = st.strip()
    return status


def _mutmut_run(dest: Path, max_children: int, names: list[str], timeout_s: float) -> bool:
    """``mutmut run`` (all mutants without a verdict, or ``names``); True if timed out."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    try:
        subprocess.run(
            cmd,
            cwd=dest,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return True
    return False


def run_module(
    name: str, *, max_children: int, timeout_min: float, recheck: bool = False
) -> dict[str, object]:
    path, globs = MODULES[name]
    paths = (path,) if isinstance(path, str) else path
    tests = _tests(globs)
    for p in paths:
        if not (ROOT / p).exists():
            raise SystemExit(f"{name}: {p} does not exist (update tools/mutation.py MODULES)")
    if not tests:
        raise SystemExit(f"{name}: no tests match {globs}")
    dest = WORK / name
    _sync(dest)
    _write_config(dest, paths, tests)
    t0 = time.monotonic()
    timed_out = False
    if not recheck:
        timed_out = _mutmut_run(dest, max_children, [], timeout_min * 60)
    equivalent = _equivalent()
    # mutmut keeps a mutant's verdict while its function is unchanged, even when tests
    # were added since: give the survivors (and the mutants no test reached, and those a
    # stopped run left "suspicious") of earlier runs a second chance, by name.
    again = [
        k
        for k, v in _results(dest).items()
        if v in ("survived", "suspicious", "no tests") and k not in equivalent
    ]
    left_s = timeout_min * 60 - (time.monotonic() - t0)
    if again and not timed_out and left_s > 0:
        timed_out = _mutmut_run(dest, max_children, again, left_s)
    status = _results(dest)
    counted = {k: v for k, v in status.items() if k not in equivalent}
    killed = sum(v in ("killed", "timeout") for v in counted.values())
    tested = sum(v in ("killed", "timeout", "survived", "suspicious") for v in counted.values())
    no_tests = sum(v == "no tests" for v in counted.values())
    survivors = sorted(k for k, v in counted.items() if v in ("survived", "suspicious"))
    return {
        "module": name,
        "mutants": len(status),
        "equivalent": len(status) - len(counted),
        "killed": killed,
        "tested": tested,
        "no_tests": no_tests,
        "not_run": len(counted) - tested - no_tests,
        "score": killed / tested if tested else float("nan"),
        "survivors": survivors,
        "seconds": time.monotonic() - t0,
        "timed_out": timed_out,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="*", help=f"any of {', '.join(MODULES)} (default all)")
    ap.add_argument("--max-children", type=int, default=2, help="parallel test processes")
    ap.add_argument("--timeout-min", type=float, default=30.0, help="time box per module")
    ap.add_argument("--fail-under", type=float, default=0.0, help="minimum score [%%]")
    ap.add_argument("--list", action="store_true", help="print modules and tests, run nothing")
    ap.add_argument("--quiet", action="store_true", help="do not list the survivors")
    ap.add_argument(
        "--recheck",
        action="store_true",
        help="no full pass: re-test only the survivors and 'no tests' mutants of earlier runs",
    )
    args = ap.parse_args(argv)
    names = args.modules or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    if args.list:
        for n in names:
            path = MODULES[n][0]
            files = path if isinstance(path, str) else " ".join(path)
            print(f"{n:11s} {files}: {' '.join(_tests(MODULES[n][1]))}")
        return 0
    rows = []
    for n in names:
        r = run_module(
            n, max_children=args.max_children, timeout_min=args.timeout_min, recheck=args.recheck
        )
        rows.append(r)
        flag = " (time box reached)" if r["timed_out"] else ""
        print(
            f"{n:11s} {100 * r['score']:5.1f} %  killed {r['killed']}/{r['tested']}"
            f"  equivalent {r['equivalent']}  no tests {r['no_tests']}  not run {r['not_run']}"
            f"  {r['seconds']:.0f} s{flag}",
            flush=True,
        )
        if not args.quiet:
            for s in r["survivors"]:
                print(f"    survived: {s}")
    low = [r["module"] for r in rows if not (100 * r["score"] >= args.fail_under)]
    return 1 if low and args.fail_under > 0 else 0


if __name__ == "__main__":
    sys.exit(main())
