"""The batch's report: a table on the terminal, ``OUT/summary.json`` and ``OUT/summary.csv``."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Optional, Sequence

from .jobs import JobResult
from .manifest import write_json_atomic

__all__ = ["COLUMNS", "format_table", "write_summary"]

COLUMNS = ("input", "kind", "frames", "seconds", "frames_per_s", "ate_rmse", "status", "attempts", "error")


def _cell(value, column: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if column == "seconds":
        return f"{value:.1f}"
    if column == "frames_per_s":
        return f"{value:.2f}"
    if column == "ate_rmse":
        return f"{value:.4f}"
    return str(value)


def format_table(results: Sequence[JobResult], error_width: int = 60) -> str:
    """One row per input (name, frames, seconds, frames/s, ATE, status, attempts, error)."""
    head = ("input", "kind", "frames", "seconds", "frames/s", "ATE rmse", "status", "tries", "error")
    rows = [head]
    for r in results:
        error = (r.error or "").replace("\n", " ")
        if len(error) > error_width:
            error = error[: error_width - 3] + "..."
        rows.append((r.name, r.kind, _cell(r.frames, "frames"), _cell(r.seconds, "seconds"),
                     _cell(r.frames_per_s, "frames_per_s"), _cell(r.ate_rmse, "ate_rmse"), r.status,
                     str(r.attempts), error or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_summary(out_dir: Path, results: Sequence[JobResult], wall_s: float,
                  extra: Optional[dict] = None) -> dict:
    """Writes summary.json (totals + one record per input) and summary.csv (the table's columns);
    returns the JSON document."""
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    ran = [r for r in results if r.status == "ok"]
    frames = sum(r.frames for r in ran)
    doc = {
        "inputs": len(results),
        "status_counts": counts,
        "wall_s": wall_s,
        "frames_mapped": frames,
        "frames_per_s": frames / wall_s if wall_s > 0 else None,
        "inputs_per_hour": len(ran) / wall_s * 3600 if wall_s > 0 else None,
        **(extra or {}),
        "results": [r.to_dict() for r in results],
    }
    write_json_atomic(out_dir / "summary.json", doc)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("name",) + COLUMNS)
    for r in results:
        writer.writerow([r.name] + ["" if getattr(r, c) is None else getattr(r, c) for c in COLUMNS])
    tmp = out_dir / ".summary.csv.tmp"
    tmp.write_text(buf.getvalue())
    os.replace(tmp, out_dir / "summary.csv")
    return doc
