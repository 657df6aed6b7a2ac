"""The tables printed at the end of a run (plain text, fixed columns): engines, and steps."""

from __future__ import annotations

from bertbuild.reporting.text_table import text_table

COLUMNS = (
    ("engine", "engine", "{}"),
    ("compute_precision", "computes in", "{}"),
    ("exact_match", "EM", "{:.2f}"),
    ("f1", "F1", "{:.2f}"),
    ("f1_drop", "ΔF1", "{:+.2f}"),
    ("delta", "ΔF1 95% CI", "{}"),
    ("max_abs_dlogit", "max|Δlogit| vs TF", "{:.2e}"),
    ("argmax_agreement", "argmax agree", "{:.2%}"),
    ("seq_per_s", "seq/s", "{:.1f}"),
    # the scoring pass's own rate over the held-out windows (length-bucketed, engines side by side), beside
    # the benchmark's seq/s (one engine alone, one fixed batch)
    ("windows_per_s", "eval win/s", "{:.1f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("questions", "questions", "{}"),
    ("gates", "gates", "{}"),
)


# One row per step of the run (`bertbuild.resources.read_journal` records).
STEP_COLUMNS = (
    ("step", "step", "{}"),
    ("seconds", "seconds", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MiB", "{:.0f}"),
    ("measured_in", "measured in", "{}"),
    ("cached", "cached", "{}"),
)


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if key == "f1_drop" and value is not None:
        value = 0.0 - value  # shown as the change in F1: negative is worse (and never "-0.00")
    if key == "delta" and value is not None:  # the paired bootstrap interval of ΔF1
        value = f"[{value['f1']['low']:+.2f}, {value['f1']['high']:+.2f}]"
    return "-" if value is None else fmt.format(value)


def format_table(rows: list[dict], columns: tuple = COLUMNS) -> str:
    """One line per row: the first column (the name) left-aligned, the numbers right-aligned."""
    header = [title for _, title, _ in columns]
    return text_table([header, *([_cell(row, key, fmt) for key, _, fmt in columns] for row in rows)])
