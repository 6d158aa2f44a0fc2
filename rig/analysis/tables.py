"""Score tables (CSV) from other tools, read onto the same footing as session files.

A score table is a CSV file with a header row. A first column with an empty
header (what pandas writes for its index) or named ``index``/``generation`` is
the row label; every other column must be numeric. Errors name the file, the
row and the column, so a table from another lab can be fixed by hand.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Header names taken as row labels rather than scores.
LABEL_COLUMNS = ("", "index", "generation", "gen", "unnamed: 0")
#: Accepted names of a trajectory table's per-generation mean and max columns (the study's names first).
MEAN_COLUMNS = ("avg_scores", "mean", "mean_score", "mean_scores", "avg")
MAX_COLUMNS = ("max_scores", "max", "max_score", "best")


class ScoreTableError(ValueError):
    """A CSV score table is missing, malformed or lacks the column asked for."""


@dataclass(frozen=True)
class ScoreTable:
    """A CSV score table: row labels and numeric columns."""

    path: Path
    labels: np.ndarray
    columns: dict[str, np.ndarray]

    def column(self, name: str | None = None, aliases: tuple[str, ...] = ()) -> np.ndarray:
        """The column ``name``; if None, the first of ``aliases`` present, or the only column there is."""
        if name is not None:
            if name not in self.columns:
                raise ScoreTableError(f"{self.path}: no column {name!r}; columns: {list(self.columns)}")
            return self.columns[name]
        lowered = {key.lower(): key for key in self.columns}
        for alias in aliases:
            if alias in lowered:
                return self.columns[lowered[alias]]
        if not aliases and len(self.columns) == 1:
            return next(iter(self.columns.values()))
        wanted = f"one of {list(aliases)}" if aliases else "a column name (the table has several)"
        raise ScoreTableError(f"{self.path}: need {wanted}; columns: {list(self.columns)}")


def read_score_table(path: str | Path) -> ScoreTable:
    """Read a CSV score table; raise :class:`ScoreTableError` naming the file, row and column on bad input."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise ScoreTableError(f"{path}: score table not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScoreTableError(f"{path}: cannot read score table: {exc}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise ScoreTableError(f"{path}: need a header row and at least one row of scores")
    header = [cell.strip() for cell in rows[0]]
    label_at = 0 if header[0].lower() in LABEL_COLUMNS else None
    names = [name for i, name in enumerate(header) if i != label_at]
    if not names:
        raise ScoreTableError(f"{path}: no score columns besides the row label column {header[0]!r}")
    if len(set(names)) != len(names):
        raise ScoreTableError(f"{path}: duplicate column names in header {header}")
    values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ScoreTableError(f"{path}: row {r} has {len(row)} cells but the header has {len(header)}")
        for c, cell in enumerate(row):
            try:
                values[r - 2, c] = float(cell)
            except ValueError:
                raise ScoreTableError(
                    f"{path}: row {r}, column {header[c]!r}: {cell!r} is not a number") from None
            if c != label_at and math.isnan(values[r - 2, c]):
                raise ScoreTableError(f"{path}: row {r}, column {header[c]!r} is NaN; remove or re-score it")
    labels = values[:, label_at].astype(np.int64) if label_at is not None else np.arange(len(rows) - 1)
    columns = {name: values[:, i] for i, name in enumerate(header) if i != label_at}
    return ScoreTable(path, labels, columns)
