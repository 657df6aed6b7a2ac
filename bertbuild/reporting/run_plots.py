"""The run report's plots: accuracy and latency per engine, as PNGs saved into the bundle."""

from __future__ import annotations

from pathlib import Path

from bertbuild.artifacts.publish import latencies
from bertbuild.reporting.figures import new_figure, save_figure


def write_plots(rows: list[dict], out_dir: Path | str, prefix: str = "plots") -> dict[str, Path]:
    """Accuracy (EM, F1) and latency bar charts per engine as PNGs.

    Returns bundle name -> path, e.g. {"plots/accuracy.png": out_dir/accuracy.png, ...}.
    """
    out = Path(out_dir)
    engines = [str(r.get("engine", f"engine-{i}")) for i, r in enumerate(rows)]
    width = max(5.0, 1.3 * len(engines) + 2)
    xs = range(len(engines))

    fig = new_figure(width, 3.6)
    ax = fig.add_subplot()
    em = [float(r.get("exact_match") or 0.0) for r in rows]
    f1 = [float(r.get("f1") or 0.0) for r in rows]
    bars_em = ax.bar([x - 0.2 for x in xs], em, width=0.4, label="EM")
    bars_f1 = ax.bar([x + 0.2 for x in xs], f1, width=0.4, label="F1")
    ax.bar_label(bars_em, fmt="%.1f", fontsize=8)
    ax.bar_label(bars_f1, fmt="%.1f", fontsize=8)
    ax.set_xticks(list(xs), engines, rotation=15, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("SQuAD v1.1 score")
    ax.set_title("Accuracy per engine")
    ax.legend(loc="upper right", fontsize=8)
    accuracy = save_figure(fig, out / "accuracy.png")

    fig = new_figure(width, 3.6)
    ax = fig.add_subplot()
    label, values = latencies(rows)
    bars = ax.bar(list(xs), [v or 0.0 for v in values], width=0.6, color="tab:green")
    ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.1f}" for v in values], fontsize=8)
    ax.set_xticks(list(xs), engines, rotation=15, fontsize=8)
    ax.set_ylabel(label)
    ax.set_title("Latency per engine (lower is better)")
    latency = save_figure(fig, out / "latency.png")

    prefix = prefix.strip("/")
    return {f"{prefix}/accuracy.png" if prefix else "accuracy.png": accuracy,
            f"{prefix}/latency.png" if prefix else "latency.png": latency}
