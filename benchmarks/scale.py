"""A whole build of a full-size NGC-layout checkpoint: where the time and the memory go, step by step.

    .venv/bin/python benchmarks/scale.py --size base|large [--work /tmp/bertbuild-scale] [--layers N]
        [--set KEY=VALUE ...]

1. Generates a random-weight checkpoint of the seed model's shape in NVIDIA's
   NGC layout (Adam slots, `global_step`, a flat zip) under --work, once.
2. Runs `bertbuild run --config configs/bert-<size>-ngc.yaml --no-cache` on it
   with small evaluation limits (below), as a separate process.
3. Prints each step's seconds and peak RSS (from the run's results.json), the
   flow process's and every child's peak, the budgets of issue #21, and each
   engine's time per window at the config's sequence length, with what a CPU
   nightly over the whole SQuAD dev set would cost at that rate.
4. Times the run's files with `bertbuild bench` (a separate process) on ONNX
   Runtime and OpenVINO at batch 8 x the config's benchmark sequence:
   model-fp32.onnx, model-bf16.onnx and int8/model.int8-{s8s8,u8s8,ort}.onnx,
   those that exist; prints its table, then one row per (backend, file) with
   p50, seq/s, the speed-up over ONNX Runtime FP32, the whole model's rate
   2 x MACs / p50 in GOPS and its share of this CPU's INT8 GEMM ceiling at the
   model's shapes (`int8_gemm_ceiling.ceiling`), and the same as Markdown.

    .venv/bin/python benchmarks/scale.py --bench-only RUN_DIR [--bench-seconds 5] [--work DIR]

does step 4 alone on a finished run (the directory holding results.json).
MACs of one forward pass at batch B, sequence S (T = B x S tokens), hidden H,
FFN F, L layers: L x (4 T H^2 + 2 T H F + 2 B S^2 H), the weight GEMMs plus
attention's QK^T and AV; the embeddings and the QA head are left out (under
0.1 % of it at BERT-base shapes). H, F and L come from the run's checkpoint
(bert_config.json), so `--layers` is accounted for.

With random weights the accuracy gates fail by design: the run ends Failed
with its reports, and that is the expected end here (exit 0 if every step ran).
Generated files stay under --work (default in /tmp), never in the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GiB = 2**30
# Small limits: a few batches per pass, so a 2-core CPU builds BERT-large in well under an hour.
SMALL_LIMITS = [
    "eval.limit=16", "validation.batches=1", "precision.int8.samples=16", "precision.tune.questions=16",
    "precision.fallback.enabled=false", "benchmark.warmup=1", "benchmark.iterations=3",
]
WHOLE_RUN_BUDGET = {"base": 6 * GiB, "large": 12 * GiB}


def export_budget(weight_bytes: int) -> int:
    return int(2.5 * weight_bytes + 1.5 * GiB)


def generate(size: str, work: Path, layers: int | None) -> Path:
    from bertbuild.data import UNCASED_VOCAB, bundled_file
    from bertbuild.model.random_checkpoint import write_ngc_zip

    name = f"bert-{size}-ngc" + (f"-{layers}l" if layers else "") + ".zip"
    target = work / name
    if not target.is_file():
        start = time.perf_counter()
        write_ngc_zip(target, size, bundled_file(UNCASED_VOCAB), layers=layers)
        print(f"generated {target} ({target.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
    return target


class TreeSampler:
    """The highest summed RSS of a process and all its descendants (the flow and its child steps at once)."""

    def __init__(self, pid: int):
        import threading

        self.peak, self._pid, self._stop = 0, pid, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import psutil

        root = psutil.Process(self._pid)
        while not self._stop.wait(0.2):
            try:
                tree = [root, *root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                continue

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_build(size: str, source: Path, work: Path, overrides: list[str]) -> tuple[int, float, int, int, Path]:
    """(exit code, seconds, flow process peak RSS, process tree peak RSS, results.json) of one `bertbuild run`."""
    out = work / "runs"
    command = [sys.executable, "-m", "bertbuild.cli", "run", "--config", str(ROOT / f"configs/bert-{size}-ngc.yaml"),
               "--no-cache", "--set", f"model.source={source}", "--set", f"model.name=scale-{size}",
               "--set", f"output_dir={out}", "--set", f"publish.store={work / 'store'}"]
    for assignment in SMALL_LIMITS + overrides:
        command += ["--set", assignment]
    env = {**os.environ, "BERTBUILD_CACHE": str(work / "cache")}
    log = work / f"run-{size}.log"
    print(f"running: {' '.join(command[1:])}\n  log: {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = TreeSampler(process.pid)
        _, status, usage = os.wait4(process.pid, 0)  # this process's own rusage: the flow process's peak
        process.returncode = os.waitstatus_to_exitcode(status)
        tree_peak = sampler.stop()
    seconds = time.perf_counter() - start
    return (process.returncode, seconds, usage.ru_maxrss * 1024, tree_peak,
            out / f"scale-{size}" / "latest" / "results.json")


def dev_set_windows(seq: int, stride: int, query: int) -> int:
    """How many windows the whole SQuAD v1.1 dev set (10,570 questions) makes at this sequence length."""
    from bertbuild.config import EvalConfig
    from bertbuild.data import UNCASED_VOCAB, bundled_file
    from bertbuild.evaluation.score import scoring_set

    cfg = EvalConfig(split="all", limit=None, max_seq_length=seq, doc_stride=stride, max_query_length=query)
    return len(scoring_set(cfg, bundled_file(UNCASED_VOCAB), lower_case=True))


# What step 4 times, relative to the run directory, in this order (the first is the baseline).
BENCH_FILES = ("model-fp32.onnx", "model-bf16.onnx", "int8/model.int8-s8s8.onnx", "int8/model.int8-u8s8.onnx",
               "int8/model.int8-ort.onnx")
BENCH_BATCH = 8


def model_shape(run_dir: Path, results: dict, size: str | None = None, layers: int | None = None) -> dict:
    """{"hidden", "ffn", "layers", "source"} of the run's model: its checkpoint's bert_config.json, else the
    generated NGC shape of `size` (and `layers`), else read off model-fp32.onnx's MatMul weights."""
    from bertbuild.model.checkpoint import CONFIG_FILE, read_config

    for directory in (results.get("checkpoint_dir"), run_dir):
        if directory and (Path(directory) / CONFIG_FILE).is_file():
            cfg = read_config(Path(directory) / CONFIG_FILE)
            return {"hidden": cfg.hidden_size, "ffn": cfg.intermediate_size, "layers": cfg.num_hidden_layers,
                    "source": str(Path(directory) / CONFIG_FILE)}
    if size:
        from bertbuild.model.random_checkpoint import ngc_config

        cfg = ngc_config(size, layers=layers)
        return {"hidden": cfg.hidden_size, "ffn": cfg.intermediate_size, "layers": cfg.num_hidden_layers,
                "source": f"the generated bert-{size} shape"}
    return _onnx_shape(run_dir / BENCH_FILES[0])


def _onnx_shape(path: Path) -> dict:
    """Hidden, FFN and layer count from an unfused FP32 export: H x H weights are Q, K, V and the attention
    output (4 a layer), H x F the FFN input (1 a layer)."""
    from collections import Counter

    from bertbuild import onnx_files

    graph = onnx_files.load(path, load_external_data=False).graph
    dims = {t.name: tuple(t.dims) for t in graph.initializer if len(t.dims) == 2}
    shapes = Counter(dims[n.input[1]] for n in graph.node if n.op_type == "MatMul" and n.input[1] in dims)
    square = [k for k, _ in shapes.most_common() if k[0] == k[1]]
    if not square:
        raise SystemExit(f"cannot tell the model's shape from {path}: no bert_config.json and no H x H weights")
    hidden = square[0][0]
    ffn_in = [(k, c) for k, c in shapes.items() if k[0] == hidden and k[1] > hidden]
    (_, ffn), layers = max(ffn_in, key=lambda kc: kc[1])
    return {"hidden": hidden, "ffn": ffn, "layers": layers, "source": f"{path.name}'s MatMul weights"}


def forward_macs(batch: int, seq: int, hidden: int, ffn: int, layers: int) -> int:
    """Multiply-accumulates of one encoder forward pass: weight GEMMs and attention (QK^T, AV), no embeddings or
    QA head."""
    tokens = batch * seq
    return layers * (4 * tokens * hidden * hidden + 2 * tokens * hidden * ffn + 2 * batch * seq * seq * hidden)


def bench_run(run_dir: Path, seq: int, seconds: float, out_json: Path, warmup: int = 5) -> dict | None:
    """`bertbuild bench` on the run's files, ONNX Runtime then OpenVINO; its JSON record, None if it failed."""
    files = [run_dir / name for name in BENCH_FILES if (run_dir / name).is_file()]
    if not files:
        print(f"bench: none of {', '.join(BENCH_FILES)} in {run_dir}")
        return None
    command = [sys.executable, "-m", "bertbuild.cli", "bench", "--backend", "onnxruntime", "--backend", "openvino"]
    for path in files:
        command += ["--onnx", str(path)]
    command += ["--batch", str(BENCH_BATCH), "--seq", str(seq), "--min-seconds", str(seconds), "--warmup", str(warmup),
                "--json", str(out_json)]
    print(f"\nrunning: bertbuild {' '.join(command[3:])}", flush=True)
    out_json.unlink(missing_ok=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout.rstrip())
    if done.returncode != 0 or not out_json.is_file():
        print(f"bertbuild bench exited {done.returncode}:\n{done.stderr.strip()[-2000:]}")
        return None
    return json.loads(out_json.read_text())


def _baseline(rows: list[dict]) -> tuple[dict, str]:
    """The row the speed-ups are over: ONNX Runtime on model-fp32.onnx, else the first row."""
    for row in rows:
        if row["backend"] == "onnxruntime" and Path(row["name"]).name == BENCH_FILES[0]:
            return row, "vs ORT FP32"
    return rows[0], f"vs {rows[0]['backend']} {rows[0]['name']}"


def bench_table(record: dict, shape: dict, seq: int, ceiling: dict | None) -> tuple[list[dict], str, str]:
    """(rows with "gops" and "ceiling_share", a plain table, a Markdown table) of `bertbuild bench`'s record."""
    from bertbuild.reporting.text_table import text_table

    macs = forward_macs(BENCH_BATCH, seq, shape["hidden"], shape["ffn"], shape["layers"])
    base, vs = _baseline(record["rows"])
    top = ceiling["ceiling_gops"] if ceiling else None
    rows = []
    for row in record["rows"]:
        gops = 2 * macs / (row["p50_ms"] / 1e3) / 1e9
        rows.append({**row, "speedup": base["p50_ms"] / row["p50_ms"], "gops": gops,
                     "ceiling_share": gops / top if top else None})
    header = ("backend", "file", "computes", "p50 ms", "seq/s", vs, "GOPS", "of INT8 ceiling")
    body = [(r["backend"], Path(r["name"]).name, r["compute_precision"], f"{r['p50_ms']:.1f}",
             f"{r['sequences_per_s']:.1f}", f"{r['speedup']:.2f}x", f"{r['gops']:.0f}",
             f"{100 * r['ceiling_share']:.0f} %" if r["ceiling_share"] is not None else "-") for r in rows]
    plain = text_table([header, *body], left=3)
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                          + ["| " + " | ".join(line) + " |" for line in body])
    return rows, plain, markdown


def bench_step(run_dir: Path, results: dict, work: Path, seconds: float, ceiling_seconds: float,
               size: str | None = None, layers: int | None = None, warmup: int = 5) -> bool:
    """Step 4 on a finished run: bench, the ceiling at the model's shapes, the tables. True if it all ran."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    import int8_gemm_ceiling

    seq = results["config"]["benchmark"]["seq"]
    shape = model_shape(run_dir, results, size, layers)
    name = f"{results.get('model', run_dir.name)}-{results.get('run_id', 'run')}"
    record = bench_run(run_dir, seq, seconds, work / f"bench-{name}.json", warmup)
    if record is None or not record.get("rows"):
        return False
    threads = record.get("threads") or os.cpu_count() or 1
    print(f"\nINT8 GEMM ceiling at the model's shapes (hidden {shape['hidden']}, FFN {shape['ffn']}, "
          f"M = {BENCH_BATCH} x {seq} tokens, {threads} thread(s)):", flush=True)
    ceiling = int8_gemm_ceiling.ceiling((shape["hidden"], shape["ffn"]), BENCH_BATCH, seq, threads,
                                        ceiling_seconds, packed=False)
    int8_gemm_ceiling.print_report(ceiling)
    rows, plain, markdown = bench_table(record, shape, seq, ceiling)
    macs = forward_macs(BENCH_BATCH, seq, shape["hidden"], shape["ffn"], shape["layers"])
    layers = f"{shape['layers']} layer" + ("s" if shape["layers"] != 1 else "")
    note = (f"batch {BENCH_BATCH} x seq {seq}; {layers}, hidden {shape['hidden']}, FFN {shape['ffn']} "
            f"(from {shape['source']}); {2 * macs / 1e9:.1f} GOP a call (2 x MACs: weight GEMMs + attention, "
            f"embeddings and QA head left out); INT8 GEMM ceiling "
            + (f"{ceiling['ceiling_gops']:.0f} GOPS ({' '.join(int8_gemm_ceiling.KINDS[ceiling['ceiling_kind']][:2])}, "
                  "one layer's weight GEMMs)" if ceiling["ceiling_kind"]
               else "not measured") + f"; {record.get('machine', '')}")
    print(f"\nbench, whole model: GOPS = 2 x MACs / p50; {note}\n{plain}")
    print(f"\nMarkdown (benchmarks/README.md):\n\n{note}\n\n{markdown}\n")
    summary = work / f"scale-bench-{name}.json"
    summary.write_text(json.dumps({"run_dir": str(run_dir), "batch": BENCH_BATCH, "seq": seq, "shape": shape,
                                   "macs": macs, "ceiling": ceiling, "bench": record, "rows": rows}, indent=2) + "\n")
    print(f"wrote {summary}")
    return True


def _run_dir(path: Path) -> tuple[Path, dict]:
    """The run directory (the one results.json is in) and its results, from a directory or a results.json path."""
    results_path = path if path.name == "results.json" else path / "results.json"
    if not results_path.is_file():
        raise SystemExit(f"no results.json in {path}")
    return results_path.parent, json.loads(results_path.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("base", "large"), help="the model to generate and build (required "
                                                                   "unless --bench-only)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bertbuild-scale"))
    parser.add_argument("--layers", type=int, default=None, help="fewer encoder layers than the real model")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--bench-only", type=Path, metavar="RUN_DIR",
                        help="skip generation and the build: only bench an existing run (the directory of its "
                             "results.json)")
    parser.add_argument("--bench-seconds", type=float, default=5.0, help="bench's --min-seconds per row (default 5)")
    parser.add_argument("--bench-warmup", type=int, default=5, help="bench's untimed calls per row (default 5)")
    parser.add_argument("--ceiling-seconds", type=float, default=1.0,
                        help="timing budget per GEMM graph of the INT8 ceiling (default 1)")
    args = parser.parse_args()
    if args.bench_only is None and args.size is None:
        parser.error("--size is required (or --bench-only RUN_DIR)")

    args.work.mkdir(parents=True, exist_ok=True)
    if args.bench_only is not None:
        run_dir, results = _run_dir(args.bench_only)
        ok = bench_step(run_dir, results, args.work, args.bench_seconds, args.ceiling_seconds, args.size, args.layers,
                        args.bench_warmup)
        return 0 if ok else 1

    from bertbuild.reporting.run_table import STEP_COLUMNS, format_table
    from bertbuild.memory_budget import estimate
    from bertbuild.model.random_checkpoint import ngc_config

    source = generate(args.size, args.work, args.layers)
    code, seconds, flow_peak, tree_peak, results_path = run_build(args.size, source, args.work, args.overrides)
    if not results_path.is_file():
        print(f"bertbuild run exited {code} after {seconds:.0f} s without results.json; see the log")
        return 1
    results = json.loads(results_path.read_text())
    steps = results["reports"]["steps"]
    config = results["config"]
    weights = estimate(ngc_config(args.size, layers=args.layers)).weight_bytes
    print(f"\nbert-{args.size} ({weights / GiB:.2f} GiB FP32 weights): bertbuild run exited {code} after "
          f"{seconds / 60:.1f} min; {os.cpu_count()} CPUs\n")
    print(format_table(steps, STEP_COLUMNS))

    child_peaks = [s["child_peak_rss_mb"] * 2**20 for s in steps if "child_peak_rss_mb" in s]
    export = next(s for s in steps if s["step"] == "export-onnx")
    # The host's figure: the flow process and the child running beside it (the TensorFlow reference runs
    # while the flow fuses and quantizes), summed, sampled every 0.2 s; never below any single peak.
    whole = max([tree_peak, flow_peak, *child_peaks])
    print(f"\nflow process peak RSS {flow_peak / GiB:.2f} GiB (wait4); largest child step {max(child_peaks) / GiB:.2f} GiB; "
          f"flow + children together {tree_peak / GiB:.2f} GiB (sampled)")
    checks = [("export-onnx peak", export["peak_rss_mb"] * 2**20, export_budget(weights),
               "2.5 x FP32 weights + 1.5 GiB"),
              ("whole run peak", whole, WHOLE_RUN_BUDGET[args.size], f"bert-{args.size} budget")]
    for label, value, limit, rule in checks:
        print(f"{label:18s} {value / GiB:6.2f} GiB  budget {limit / GiB:5.2f} GiB ({rule}): "
              f"{'within' if value <= limit else 'OVER'}")

    ev, bench = config["eval"], config["benchmark"]
    windows = dev_set_windows(ev["max_seq_length"], ev["doc_stride"], ev["max_query_length"])
    print(f"\ntime per window at sequence {bench['seq']} (benchmark batch {bench['batch']}, p50), "
          f"and one pass over the whole dev set ({windows} windows):")
    for row in results["results"]:
        if row.get("p50_ms") is None:
            continue
        per_window = row["p50_ms"] / bench["batch"]
        print(f"  {row['engine']:24s} {per_window:8.1f} ms/window   {per_window * windows / 3.6e6:5.2f} h")
    benched = bench_step(results_path.parent, results, args.work, args.bench_seconds, args.ceiling_seconds,
                         args.size, args.layers, args.bench_warmup)
    return 0 if benched and all(not s.get("failed") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
