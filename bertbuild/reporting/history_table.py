"""`bertbuild artifacts history`'s table: one row of cells per released run (`artifacts.history` reads them)."""

from __future__ import annotations

from bertbuild.artifacts.history import KEY_VERSIONS, HistoryEntry, precisions_in
from bertbuild.reporting.cells import number


def history_table(entries: list[HistoryEntry]) -> list[list[str]]:
    """Header plus one row per run: date, run, commit, key versions, then EM/F1 and p50 per precision."""
    precisions = precisions_in(entries)
    versions = [k for k in KEY_VERSIONS if any(e.versions.get(k) for e in entries)]
    rows = [["date", "run", "commit", *versions, *(f"{p} EM/F1 p50" for p in precisions)]]
    for e in entries:
        commit = (e.commit or "-")[:10] + ("+dirty" if e.dirty else "")
        cells = [e.created[:10] or "-", e.run_id, commit, *(e.versions.get(k) or "-" for k in versions)]
        for p in precisions:
            r = e.results.get(p)
            cells.append("-" if r is None else
                         f"{number(r['exact_match'], '.2f')}/{number(r['f1'], '.2f')} "
                         f"{number(r['p50_ms'], '.1f', 'ms')}")
        if e.problem:
            cells.append(f"(unreadable manifest: {e.problem})")
        rows.append(cells)
    return rows
