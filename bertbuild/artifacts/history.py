"""A model's released runs over time: a table (one row per run) and a trend plot.

Everything comes from the runs' manifests: `created`, `git`, `versions` and
the result rows in `meta["results"]`. Runs published before the results
were recorded there still get a row, with dashes for the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bertbuild.artifacts.store import ArtifactStore, check_model
from bertbuild.errors import IntegrityError
from bertbuild.kinds import Precision

KEY_VERSIONS = ("onnxruntime", "tensorflow", "tensorrt")
REFERENCE = "fp32 (reference)"


@dataclass
class HistoryEntry:
    run_id: str
    created: str
    commit: str | None
    dirty: bool | None
    versions: dict[str, str | None]
    results: dict[str, dict] = field(default_factory=dict)  # precision -> {"exact_match", "f1", "p50_ms"}
    problem: str = ""  # why the manifest could not be read, if it could not


def read_history(store: ArtifactStore, model: str) -> list[HistoryEntry]:
    """One entry per released run of `model`, oldest first (run ids sort by time)."""
    entries = []
    for run_id in store.runs(check_model(model)):
        try:
            manifest = store.read_manifest(model, run_id)
        except IntegrityError as exc:
            entries.append(HistoryEntry(run_id, "", None, None, {}, problem=str(exc).splitlines()[0]))
            continue
        if manifest is None:
            continue  # removed since it was listed
        git = manifest.git if isinstance(manifest.git, dict) else {}
        versions = manifest.versions if isinstance(manifest.versions, dict) else {}
        results = {}
        for row in manifest.results:
            results.setdefault(row["precision"], {k: row[k] for k in ("exact_match", "f1", "p50_ms")})
        entries.append(HistoryEntry(
            run_id=run_id, created=str(manifest.created or ""),
            commit=git.get("commit") if isinstance(git.get("commit"), str) else None,
            dirty=git.get("dirty") if isinstance(git.get("dirty"), bool) else None,
            versions={k: versions.get(k) if isinstance(versions.get(k), str) else None for k in KEY_VERSIONS},
            results=results))
    return entries


def precisions_in(entries: list[HistoryEntry]) -> list[str]:
    """Every precision with results, reference first, then build order, then any others."""
    seen = {p for e in entries for p in e.results}
    known = [REFERENCE, *Precision]
    return [p for p in known if p in seen] + sorted(seen - set(known))


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else format(value, spec) + unit


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
                         f"{_fmt(r['exact_match'], '.2f')}/{_fmt(r['f1'], '.2f')} "
                         f"{_fmt(r['p50_ms'], '.1f', 'ms')}")
        if e.problem:
            cells.append(f"(unreadable manifest: {e.problem})")
        rows.append(cells)
    return rows


def write_trend_plot(entries: list[HistoryEntry], path: Path | str) -> Path:
    """EM, F1 and p50 over runs, one line per precision, as a PNG (matplotlib's Agg canvas, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [e.created[:16].replace("T", " ") or e.run_id for e in entries]
    xs = list(range(len(entries)))
    precisions = precisions_in(entries)
    colors = {p: f"C{i % 10}" for i, p in enumerate(precisions)}  # one colour per precision in every panel
    fig = Figure(figsize=(max(6.0, 0.6 * len(entries) + 3), 9), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True)
    for ax, key, title in zip(axes, ("exact_match", "f1", "p50_ms"),
                              ("Exact match", "F1", "p50 latency (ms, lower is better)")):
        for precision in precisions:
            ys = [e.results.get(precision, {}).get(key) for e in entries]
            if any(y is not None for y in ys):
                ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=precision,
                        color=colors[precision])
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7, loc="best")
    axes[-1].set_xticks(xs, labels, rotation=30, fontsize=7, ha="right")
    fig.tight_layout()
    fig.savefig(path)
    return path
