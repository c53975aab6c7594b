"""Labels from volunteer vote counts, with a vote-fraction cut (any survey's catalog).

Citizen-science catalogs (Galaxy Zoo and its successors) give, per object, how many people
chose each answer. Two things a user builds from them, in general form here:

* a label from count columns: `--label-from-counts n_smooth=elliptical,n_featured=spiral`
  gives each row the class with the most votes (several columns may feed one class, their
  counts are summed); a tie at the top has no winner and the row is dropped;
* a "high-probability" set: `--min-fraction 0.8` keeps only rows whose winning class has at
  least that share of the votes. The share is over the `--fraction-columns` (summed; one
  total column such as `n_votes` works too), by default over the label columns themselves;
  add the other answers (artifact, star...) there to count them against the winner.

Every dropped row is counted by reason, logged, and kept in the store's attrs.
"""
from __future__ import annotations

import logging

import numpy as np

from astrotransfer.errors import UserError

log = logging.getLogger("astrotransfer")


def parse_count_map(text: str) -> tuple[list[tuple[str, int]], list[str]]:
    """'n_a=x,n_b=y,n_c=y' → ([('n_a', 0), ('n_b', 1), ('n_c', 1)], ['x', 'y'])."""
    pairs, names = [], []
    for item in text.split(","):
        col, sep, name = item.partition("=")
        if not sep or not col.strip() or not name.strip():
            raise UserError(f"--label-from-counts item '{item}' is not of the form COLUMN=CLASS, "
                            f"e.g. --label-from-counts \"n_smooth=elliptical,n_featured=spiral\"")
        if name.strip() not in names:
            names.append(name.strip())
        pairs.append((col.strip(), names.index(name.strip())))
    if len(names) < 2:
        raise UserError(f"--label-from-counts '{text}' names one class; give at least two")
    return pairs, names


def _numbers(table, column: str, option: str, catalog) -> np.ndarray:
    if column not in table.colnames:
        raise UserError(f"catalog {catalog} has no column '{column}' named in {option} "
                        f"(columns: {', '.join(table.colnames[:12])})")
    try:
        values = np.ma.asarray(table[column], dtype=float)
    except (TypeError, ValueError):
        raise UserError(f"column '{column}' of catalog {catalog} named in {option} is not "
                        f"numeric; it must hold vote counts") from None
    return np.ma.filled(values, np.nan)


def labels_from_counts(table, catalog, label_from_counts: str | None, fraction_columns: str | None,
                       min_fraction: float | None
                       ) -> tuple[np.ndarray, list[str], list[str | None], dict] | None:
    """(label per row, class names, drop reason per row or None, attrs record), or None when
    no vote option is given. Rows with a reason are left out of the store."""
    if label_from_counts is None:
        if min_fraction is not None or fraction_columns:
            raise UserError("--min-fraction and --fraction-columns cut on the winning class's "
                            "vote share, so they need --label-from-counts COLUMN=CLASS,... to "
                            "know each class's count column")
        return None
    if min_fraction is not None and not 0.0 < min_fraction <= 1.0:
        raise UserError(f"--min-fraction must be in (0, 1], got {min_fraction}")
    pairs, names = parse_count_map(label_from_counts)
    per_class = np.zeros((len(table), len(names)))
    for col, k in pairs:
        per_class[:, k] += _numbers(table, col, "--label-from-counts", catalog)
    total_cols = ([c.strip() for c in fraction_columns.split(",") if c.strip()]
                  if fraction_columns else [c for c, _ in pairs])
    total = np.zeros(len(table))
    for col in total_cols:
        total += _numbers(table, col, "--fraction-columns", catalog)
    labels = per_class.argmax(axis=1)
    top = per_class.max(axis=1)
    ties = (per_class == top[:, None]).sum(axis=1) > 1
    reasons: list[str | None] = []
    for i in range(len(table)):
        if not (np.isfinite(per_class[i]).all() and np.isfinite(total[i])):
            reasons.append("vote counts unreadable")
        elif total[i] <= 0 or top[i] <= 0:
            reasons.append("no class votes")
        elif ties[i]:
            reasons.append("tied votes")
        elif min_fraction is not None and top[i] / total[i] < min_fraction - 1e-12:
            reasons.append(f"below --min-fraction {min_fraction:g}")
        else:
            reasons.append(None)
    dropped: dict[str, int] = {}
    for r in reasons:
        if r is not None:
            dropped[r] = dropped.get(r, 0) + 1
    kept = len(table) - sum(dropped.values())
    log.info("labels from vote counts: kept %d of %d catalog rows%s", kept, len(table),
             "".join(f"; dropped {n} ({r})" for r, n in sorted(dropped.items())))
    record = {"label_from_counts": label_from_counts, "fraction_columns": total_cols,
              "min_fraction": min_fraction, "n_rows": len(table), "n_kept": kept,
              "dropped": dropped}
    return labels.astype(int), names, reasons, record
