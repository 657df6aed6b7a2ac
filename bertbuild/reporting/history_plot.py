"""`bertbuild artifacts history`'s trend plot: EM, F1 and p50 over a model's released runs."""

from __future__ import annotations

from pathlib import Path

from bertbuild.artifacts.history import HistoryEntry, precisions_in
from bertbuild.reporting.figures import new_figure, save_figure


def write_trend_plot(entries: list[HistoryEntry], path: Path | str) -> Path:
    """Three panels over runs, one line per precision (format from `path`'s suffix: .png, .svg or .pdf)."""
    labels = [e.created[:16].replace("T", " ") or e.run_id for e in entries]
    xs = list(range(len(entries)))
    precisions = precisions_in(entries)
    colors = {p: f"C{i % 10}" for i, p in enumerate(precisions)}  # one colour per precision in every panel
    fig = new_figure(max(6.0, 0.6 * len(entries) + 3), 9)
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
    return save_figure(fig, path)
