"""Range statistics of one activation: a histogram of |x| that grows in one pass, and the clipping
thresholds (amax) the calibration methods take from it.

The histogram has `num_bins` bins over [0, edge]; when a later batch exceeds
the edge, the edge doubles and adjacent bins merge, so no second pass over the
data is needed. From it:

- minmax:     amax = max |x|
- percentile: amax = the `percentile`-th percentile of |x|
- entropy:    amax = the clipping threshold whose 128-level quantized
               histogram is closest (KL divergence) to the observed one.
"""

from __future__ import annotations

import numpy as np

QUANTIZED_LEVELS = 128  # positive levels of symmetric INT8, as the entropy search quantizes to


class AbsHistogram:
    """Histogram of |x| over [0, edge] that grows by doubling (merging bin pairs)."""

    def __init__(self, num_bins: int):
        if num_bins % 2:
            raise ValueError(f"num_bins must be even, got {num_bins}")
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.edge = 0.0
        self.low = float("inf")
        self.high = float("-inf")

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        magnitude = np.abs(values)
        peak = float(magnitude.max())
        if self.edge == 0.0:
            self.edge = peak if peak > 0 else 1e-12
        while peak > self.edge:
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(axis=1),
                                          np.zeros(self.num_bins // 2, dtype=np.int64)])
            self.edge *= 2.0
        index = np.minimum((magnitude * (self.num_bins / self.edge)).astype(np.int64), self.num_bins - 1)
        self.counts += np.bincount(index, minlength=self.num_bins)

    @property
    def width(self) -> float:
        return self.edge / self.num_bins


def amax_minmax(hist: AbsHistogram) -> float:
    return max(abs(hist.low), abs(hist.high))


def amax_percentile(hist: AbsHistogram, percentile: float) -> float:
    cumulative = np.cumsum(hist.counts)
    index = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0))
    return min((index + 1) * hist.width, amax_minmax(hist))


def amax_entropy(hist: AbsHistogram, levels: int = QUANTIZED_LEVELS) -> float:
    """Threshold minimizing KL(P || Q), P the clipped histogram, Q its `levels`-level quantization.

    For each candidate number of bins i, P is the first i bins with everything
    beyond folded into the last one; Q spreads each of `levels` equal groups'
    total evenly over the group's non-empty bins. Bins empty in P are ignored,
    bins non-empty in P but empty in Q get a tiny mass (instead of infinity).
    """
    counts = hist.counts.astype(np.float64)
    n = counts.size
    if counts.sum() == 0 or n <= levels:
        return amax_minmax(hist)
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = counts[i:].sum()
    best_i, best_kl = n, np.inf
    for i in range(levels, n + 1):
        reference = counts[:i]
        p = reference.copy()
        p[-1] += tail[i]
        bounds = np.linspace(0, i, levels + 1).astype(np.int64)[:-1]
        group_sum = np.add.reduceat(reference, bounds)
        group_nonzero = np.add.reduceat((reference > 0).astype(np.float64), bounds)
        sizes = np.diff(np.append(bounds, i))
        per_bin = np.divide(group_sum, group_nonzero, out=np.zeros_like(group_sum), where=group_nonzero > 0)
        q = np.repeat(per_bin, sizes) * (reference > 0)
        mask = p > 0
        p_n = p[mask] / p.sum()
        q_m = q[mask]
        q_total = q.sum()
        if q_total == 0:
            continue
        q_n = np.maximum(q_m / q_total, 1e-12)
        kl = float(np.sum(p_n * np.log(p_n / q_n)))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return min(best_i * hist.width, amax_minmax(hist))
