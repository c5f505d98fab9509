"""The one file writer every export shares: CSV, or Parquet by the file name.

Kept apart from :mod:`megastation.reports.exports` (which pulls in the simulator and
matplotlib) so that the session exports and the CLI's listing commands stay light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: CSV numbers keep 10 significant digits
CSV_FLOAT_FORMAT = "%.10g"


class ExportError(ValueError):
    """An export cannot be written (e.g. Parquet without pyarrow)."""


def write_frame(frame: pd.DataFrame, path: str | os.PathLike[str]) -> int:
    """Write ``frame`` to CSV (or Parquet for ``*.parquet``); return the row count."""
    p = Path(path)
    if p.suffix.lower() not in (".csv", ".parquet", ".txt", ""):
        raise ExportError(f"{p}: unknown file type {p.suffix!r}: give a .csv or .parquet name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{p}: cannot create folder {p.parent}: {exc.strerror}") from None
    if p.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError(
                f"{p}: Parquet needs pyarrow (pip install 'megastation[parquet]'); "
                "or give a .csv name"
            ) from None
        frame.to_parquet(p, index=False)
    else:
        frame.to_csv(p, index=False, float_format=CSV_FLOAT_FORMAT)
    return len(frame)
