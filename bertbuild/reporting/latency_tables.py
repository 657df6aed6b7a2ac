"""`bertbuild bench`'s tables: timings across backends, one row per (backend, file, compute precision)."""

from __future__ import annotations

from bertbuild.evaluation.latency import PassStats, Timed
from bertbuild.reporting.text_table import text_table


def backend_table(rows: list[Timed]) -> str:
    """Fixed-batch timings; `vs first`: the first row's p50 over each row's (above 1.00x is faster)."""
    header = ("backend", "file", "computes", "p50 ms", "p95 ms", "mean ms", "seq/s", "iters", "vs first")
    first = rows[0].stats
    body = [
        (r.backend, r.stats.name, r.compute, f"{r.stats.p50_ms:.2f}", f"{r.stats.p95_ms:.2f}",
         f"{r.stats.mean_ms:.2f}", f"{r.stats.sequences_per_s:.1f}", str(r.stats.iterations),
         f"{first.p50_ms / r.stats.p50_ms:.2f}x")
        for r in rows
    ]
    return text_table([header, *body], left=3)


def backend_pass_table(rows: list[Timed]) -> str:
    """Held-out passes per length bucket; `vs padded`: windows/s over the padded pass of the same (backend,
    file, compute); `vs first`: windows/s over the first (backend, file, compute)'s at the same bucket, so
    1.00x on the first row."""
    padded = {r.key: r.stats for r in rows if r.stats.length_bucket == 0}
    first_key = rows[0].key
    firsts = {r.stats.length_bucket: r.stats for r in rows if r.key == first_key}
    header = ("backend", "file", "computes", "bucket", "windows", "padding fed", "seconds", "windows/s", "real tok/s",
              "vs padded", "vs first")

    def ratio(stats: PassStats, base: PassStats | None) -> str:
        return f"{stats.windows_per_s / base.windows_per_s:.2f}x" if base is not None else "-"

    body = [
        (r.backend, r.stats.name, r.compute, "padded" if r.stats.length_bucket == 0 else str(r.stats.length_bucket),
         str(r.stats.windows), f"{100 * r.stats.padding_fed:.1f} %", f"{r.stats.seconds:.1f}",
         f"{r.stats.windows_per_s:.2f}", f"{r.stats.real_tokens_per_s:.0f}", ratio(r.stats, padded.get(r.key)),
         ratio(r.stats, firsts.get(r.stats.length_bucket)))
        for r in rows
    ]
    return text_table([header, *body], left=3)
