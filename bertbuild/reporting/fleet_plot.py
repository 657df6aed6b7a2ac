"""The fleet report's plot: ΔF1 with its 95 % interval and the speed-up over FP32, per member and precision."""

from __future__ import annotations

from pathlib import Path

from bertbuild.fleet.report import FleetReport
from bertbuild.reporting.figures import new_figure, save_figure


def write_fleet_plot(report: FleetReport, path: Path | str) -> Path:
    """Two panels, one bar per member engine (the TensorFlow reference has neither number), as a PNG."""
    bars = [(f"{m.label}\n{r.precision}", r) for m in report.members for r in m.rows
            if r.delta_f1 is not None or r.speedup is not None]
    xs = list(range(len(bars)))
    labels = [label for label, _ in bars]
    fig = new_figure(max(6.5, 0.9 * len(bars) + 2), 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True)

    deltas = [r.delta_f1 for _, r in bars]
    points = [d.delta if d else 0.0 for d in deltas]
    errors = [[d.delta - d.low if d else 0.0 for d in deltas], [d.high - d.delta if d else 0.0 for d in deltas]]
    colors = ["tab:red" if r.gates == "FAIL" else "tab:blue" for _, r in bars]
    top.bar(xs, points, yerr=errors, capsize=4, color=colors)
    top.axhline(0.0, color="black", linewidth=0.8)
    top.set_ylabel("ΔF1 vs TF FP32")
    fig.suptitle(f"fleet {report.name}, run {report.run_id}", fontsize=10)
    top.set_title("ΔF1 with its 95% interval (red: a gate failed)", fontsize=9)
    top.grid(axis="y", alpha=0.3)

    speedups = [r.speedup for _, r in bars]
    drawn = bottom.bar(xs, [s or 0.0 for s in speedups], color="tab:green")
    bottom.bar_label(drawn, labels=["n/a" if s is None else f"{s:.2f}x" for s in speedups], fontsize=8)
    bottom.axhline(1.0, color="black", linewidth=0.8)
    bottom.set_ylabel("speed-up vs own FP32 (p50)")
    bottom.grid(axis="y", alpha=0.3)
    bottom.set_xticks(xs, labels, fontsize=8)
    return save_figure(fig, path)
