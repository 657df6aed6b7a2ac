"""The one way a plot is drawn and saved: a figure on its own Agg canvas, laid out and written to a file.

Agg renders without a display (workers and CI have none), and a canvas per
figure leaves `matplotlib.pyplot`'s global backend and figure list alone, so
drawing from a Prefect task thread never touches state another thread uses.
matplotlib is imported on first use: commands that draw nothing never pay for it.
"""

from __future__ import annotations

from pathlib import Path

DPI = 100


def new_figure(width: float, height: float):
    """A `matplotlib.figure.Figure` of `width` x `height` inches, already attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path | str) -> Path:
    """Lay `figure` out (nothing clipped) and write it to `path` (format from the suffix), folders made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    return path
