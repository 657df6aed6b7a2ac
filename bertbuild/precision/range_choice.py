"""Calibration method per tensor: keep, for each activation, the range its MatMuls are least hurt by.

No single method fits every tensor of a BERT: clipping (percentile, entropy)
helps a tensor whose tail is a few stray values and hurts one whose tail is a
whole outlier channel that the next MatMul needs. Here every candidate
threshold of the collected histogram is tried on the real FP32 activations of
a few calibration batches: the activation and the weights are fake-quantized
as the INT8 file will run them (sensitivity.py) and the candidate with the
least relative output error summed over the tensor's MatMuls,
||x_q @ w_q - x @ w||^2 / ||x @ w||^2, wins.

The data are the calibration samples (train half): no tune or held-out
question is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertbuild import onnx_files
from bertbuild.precision.activations import activation_session
from bertbuild.precision.calibration_set import CalibrationSet
from bertbuild.precision.range_stats import AbsHistogram, amax_entropy, amax_minmax, amax_percentile
from bertbuild.precision.ranges import TensorRange
from bertbuild.precision.sensitivity import fake_quantize_activation, fake_quantize_weight
from bertbuild.squad.batching import real_positions

CHOICE_BATCHES = 4  # calibration batches the candidates are tried on

# name -> threshold of a histogram; the names are what a calibration records per tensor.
CANDIDATES = {
    "minmax": amax_minmax,
    "percentile-99.9": lambda hist: amax_percentile(hist, 99.9),
    "percentile-99.99": lambda hist: amax_percentile(hist, 99.99),
    "percentile-99.999": lambda hist: amax_percentile(hist, 99.999),
    "entropy": amax_entropy,
}


def candidate_ranges(hist: AbsHistogram) -> dict[str, TensorRange]:
    return {name: TensorRange(min=hist.low, max=hist.high, amax=max(threshold(hist), 1e-8))
            for name, threshold in CANDIDATES.items()}


def choose_ranges(model_path: Path | str, stats: dict[str, AbsHistogram], readers: dict[str, list[str]],
                  samples: CalibrationSet, variant: str, batches: int, batch_size: int,
                  threads: int | None = None) -> dict[str, tuple[str, TensorRange]]:
    """activation -> (winning candidate, its range); `readers` maps activation -> its weight names."""
    # Structure only, then just the weights the tensors' MatMuls read (external data stays on disk).
    model = onnx_files.load(model_path, load_external_data=False)
    weights = {init.name: onnx_files.array(init, model_path).astype(np.float32)
               for init in model.graph.initializer if any(init.name in names for names in readers.values())}
    del model
    quantized_weights = {name: fake_quantize_weight(w) for name, w in weights.items()}
    tensors = list(stats)
    candidates = {name: candidate_ranges(stats[name]) for name in tensors}
    # noise[tensor][candidate][weight] and signal[weight], summed over batches as sensitivity.py does.
    noise = {name: {label: dict.fromkeys(readers[name], 0.0) for label in candidates[name]} for name in tensors}
    signal = dict.fromkeys(weights, 0.0)
    session = activation_session(model_path, tensors, threads)
    for feed in samples.batches(batch_size, limit=batches):
        for name, x in zip(tensors, session.run(tensors, feed)):
            x = real_positions(x, feed["input_mask"])  # errors at padding positions are nobody's
            exact = {w: x @ weights[w] for w in readers[name]}
            for w, y in exact.items():
                signal[w] += float(np.sum(y.astype(np.float64) ** 2))
            for label, tensor_range in candidates[name].items():
                x_q = fake_quantize_activation(x, *tensor_range.bounds(variant), variant)
                for w in readers[name]:
                    noise[name][label][w] += float(np.sum((x_q @ quantized_weights[w] - exact[w]).astype(np.float64) ** 2))

    def relative_error(name: str, label: str) -> float:
        return sum(noise[name][label][w] / max(signal[w], 1e-30) for w in readers[name])

    chosen = {}
    for name in tensors:
        best = min(candidates[name], key=lambda label: relative_error(name, label))
        chosen[name] = (best, candidates[name][best])
    return chosen
