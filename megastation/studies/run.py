"""Run a study's pending cells on a local process pool or a Dask cluster, and gather the table.

Each finished cell is written at once to ``OUT/cells/<key>.json``; a re-run skips the cells
found there (resumable). Scheduling, retries and data movement on a cluster are Dask's job:
the cells are plain function calls (:func:`megastation.studies.cell.run_cell`), so workers need
only ``pip install megastation``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from megastation.core.config import Station
from megastation.reports.exports import write_frame
from megastation.studies.cell import run_cell
from megastation.studies.economics import annualise, pareto_front
from megastation.studies.spec import Cell, StudySpec

Progress = Callable[[int, int, dict[str, Any]], None]
"""``progress(done, total, row)`` after each cell."""


def cell_path(out_dir: Path, cell: Cell) -> Path:
    return out_dir / "cells" / f"{cell.key}.json"


def pending_cells(cells: list[Cell], out_dir: Path) -> list[Cell]:
    """The cells with no result in ``out_dir`` yet."""
    return [c for c in cells if not cell_path(out_dir, c).is_file()]


def _save(out_dir: Path, cell: Cell, row: dict[str, Any]) -> None:
    path = cell_path(out_dir, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }
    tmp.write_text(json.dumps(clean, allow_nan=False, sort_keys=True))
    tmp.replace(path)  # atomic: a killed run leaves no half-written cell


def _local(station: Station, spec: StudySpec, cells: list[Cell], jobs: int) -> Iterator:
    if jobs <= 1:
        for c in cells:
            yield c, run_cell(station, c, spec)
        return
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_cell, station, c, spec): c for c in cells}
        for f in cf.as_completed(futures):
            yield futures[f], f.result()


def _dask(station: Station, spec: StudySpec, cells: list[Cell], cluster: Any) -> Iterator:
    try:
        from distributed import Client, as_completed  # lazy: an optional dependency
    except ImportError:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "--cluster needs dask.distributed: pip install 'megastation[study]'"
        ) from None
    with Client(cluster) as client:
        st, sp = client.scatter([station, spec], broadcast=True)
        futures = {client.submit(run_cell, st, c, sp, pure=False, retries=1): c for c in cells}
        for f in as_completed(futures):
            yield futures[f], f.result()


def run_study(
    station: Station,
    spec: StudySpec,
    out_dir: str | Path,
    *,
    jobs: int | None = None,
    cluster: Any = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Run the cells of ``spec`` not yet in ``out_dir`` and return the whole table.

    ``cluster``: a Dask scheduler address (``tcp://HOST:8786``) or cluster object; None runs
    on a local process pool of ``jobs`` workers (default: one per CPU).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = spec.cells(station)
    todo = pending_cells(cells, out)
    done = len(cells) - len(todo)
    if todo:
        runs = (
            _dask(station, spec, todo, cluster)
            if cluster is not None
            else _local(station, spec, todo, jobs or os.cpu_count() or 1)
        )
        for cell, row in runs:
            _save(out, cell, row)
            done += 1
            if progress is not None:
                progress(done, len(cells), row)
    return collect(spec, cells, out)


def collect(spec: StudySpec, cells: list[Cell], out_dir: Path) -> pd.DataFrame:
    """The study's table from the cell files: annual figures and the Pareto front marked;
    written as ``results.csv`` (and ``results.parquet`` where pyarrow is installed)."""
    rows = [json.loads(cell_path(out_dir, c).read_text()) for c in cells]
    table = annualise(pd.DataFrame(rows), spec.capex)
    for col in ("renewable_frac", "optimum_renewable_frac"):
        table[col] = table[col].astype(float)
    table["pareto"] = pareto_front(table["annual_cost_krw"], table["renewable_frac"])
    write_frame(table, out_dir / "results.csv")
    try:
        import pyarrow  # noqa: F401  (lazy: optional)

        write_frame(table, out_dir / "results.parquet")
    except ImportError:  # pragma: no cover - depends on the install
        pass
    return table
