"""Compare a run with its model's last release (`latest`) before it is published.

Per precision: the EM and F1 deltas (this run minus latest), how many
questions get the same answer text in both runs (from each bundle's
`predictions-<engine>.json`), and the p50 latency ratio (this run / latest)
when both ran on the same kind of host. Also which model and engine files
(by bundle name) and which library versions changed.

Two gates come out of it, both skipped for a model's first release:
`max_f1_drop_vs_latest` (F1 points; default 0.5) and
`max_latency_ratio_vs_latest` (default 1.15; skipped too when the hosts
differ, since timings from different machines say nothing about the build).
Everything read from the store is untrusted: the latest manifest is
validated and its predictions are checked against their sha256.

    report = compare_with_latest(store, model, rows, files)
    report.gates          # GateResult records, one per engine and gate
    report.to_json()      # -> regression.json in the bundle
    # -> Prefect markdown artifact: bertbuild.reporting.regression_markdown(report)
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from bertbuild.artifacts.layout import predictions_name
from bertbuild.artifacts.manifest import clean_results, is_report
from bertbuild.host import hardware as this_hardware, host_kind, package_versions
from bertbuild.artifacts.store import ArtifactStore, as_store, check_model
from bertbuild.errors import BertbuildError, IntegrityError
from bertbuild.evaluation.gates import GateResult, judge, skipped
from bertbuild.hashing import sha256_file
from bertbuild.squad.metrics import read_predictions

F1_GATE = "max_f1_drop_vs_latest"
LATENCY_GATE = "max_latency_ratio_vs_latest"
DEFAULT_MAX_F1_DROP = 0.5  # F1 points (0-100 scale)
DEFAULT_MAX_LATENCY_RATIO = 1.15  # this run's p50 / latest's p50, same kind of host only
MAX_PREDICTIONS_BYTES = 64 << 20  # a SQuAD dev set's predictions are about 0.5 MB


@dataclass
class RunSnapshot:
    """What the comparison needs of one run."""

    run_id: str | None
    rows: list[dict]  # clean_results rows
    digests: dict[str, str]  # model and engine files: bundle name -> sha256
    versions: dict
    hardware: dict
    predictions: dict[str, dict[str, str]] = field(default_factory=dict)  # engine -> {qid: answer text}
    missing_predictions: dict[str, str] = field(default_factory=dict)  # engine -> why there are none


def local_snapshot(rows: list[dict], files: Mapping[str, Path | str], versions: dict | None = None,
                   hardware: dict | None = None, run_id: str | None = None) -> RunSnapshot:
    """The run being built: its result rows and its local bundle files (bundle name -> path)."""
    snapshot = RunSnapshot(run_id=run_id, rows=clean_results(rows),
                           digests={n: sha256_file(p) for n, p in files.items() if not is_report(n)},
                           versions=dict(versions if versions is not None else package_versions()),
                           hardware=dict(hardware if hardware is not None else this_hardware()))
    for row in snapshot.rows:
        path = files.get(predictions_name(row["engine"]))
        if path is None:
            snapshot.missing_predictions[row["engine"]] = "not in this run's bundle"
        else:
            snapshot.predictions[row["engine"]] = read_predictions(Path(path))
    return snapshot


def latest_snapshot(store: ArtifactStore | str, model: str) -> RunSnapshot | None:
    """The run `latest` names, read from the store; None if the model has no release yet."""
    store = as_store(store)
    run_id = store.latest(check_model(model))
    if run_id is None:
        return None
    manifest = store.read_manifest(model, run_id)
    if manifest is None:
        raise IntegrityError(f"{model}/latest names run {run_id}, which has no manifest in {store.url}: "
                             f"cannot compare with the last release")
    snapshot = RunSnapshot(run_id=run_id, rows=manifest.results,
                           digests={n: e["sha256"] for n, e in manifest.files.items() if not is_report(n)},
                           versions=dict(manifest.versions or {}), hardware=dict(manifest.hardware or {}))
    bundle = store.run_path(model, run_id)
    for row in snapshot.rows:
        engine, name = row["engine"], predictions_name(row["engine"])
        entry = manifest.files.get(name)
        if entry is None:
            snapshot.missing_predictions[engine] = "not in the latest bundle"
        elif entry["size"] > MAX_PREDICTIONS_BYTES:
            snapshot.missing_predictions[engine] = f"{name} is larger than {MAX_PREDICTIONS_BYTES} bytes"
        else:
            try:
                snapshot.predictions[engine] = _fetch_predictions(store, store.content_path(bundle, manifest, name),
                                                                  name, entry["sha256"])
            except (BertbuildError, OSError) as exc:
                snapshot.missing_predictions[engine] = f"unavailable: {str(exc).splitlines()[0]}"
    return snapshot


def _fetch_predictions(store: ArtifactStore, path: str, name: str, sha256: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="bertbuild-latest-") as tmp:
        local = Path(tmp) / "predictions.json"
        try:
            store.fetch(path, local)
        except FileNotFoundError:
            raise IntegrityError(f"{name} is absent from the store") from None
        if sha256_file(local) != sha256:
            raise IntegrityError(f"{name} in the store does not match its sha256 in the latest manifest")
        return read_predictions(local)


def _pairs(current: list[dict], latest: list[dict]) -> list[tuple[str, dict | None, dict | None]]:
    """(label, current row, latest row) per precision; a precision with several engines pairs by engine."""
    order = list(dict.fromkeys([r["precision"] for r in current] + [r["precision"] for r in latest]))
    pairs = []
    for precision in order:
        mine = [r for r in current if r["precision"] == precision]
        theirs = [r for r in latest if r["precision"] == precision]
        if len(mine) <= 1 and len(theirs) <= 1:
            pairs.append((precision, mine[0] if mine else None, theirs[0] if theirs else None))
            continue
        for engine in dict.fromkeys([r["engine"] for r in mine + theirs]):
            pairs.append((f"{precision} [{engine}]", next((r for r in mine if r["engine"] == engine), None),
                          next((r for r in theirs if r["engine"] == engine), None)))
    return pairs


def _delta(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else round(new - old, 4) + 0.0


def _agreement(current: RunSnapshot, latest: RunSnapshot, mine: dict, theirs: dict) -> dict:
    """Share of questions both runs answered with the same text."""
    for snapshot, row in ((current, mine), (latest, theirs)):
        if row["engine"] not in snapshot.predictions:
            why = snapshot.missing_predictions.get(row["engine"], "not available")
            return {"answer_agreement": None, "answers_compared": 0,
                    "answer_note": f"predictions of {row['engine']}: {why}"}
    a, b = current.predictions[mine["engine"]], latest.predictions[theirs["engine"]]
    common = a.keys() & b.keys()
    if not common:
        return {"answer_agreement": None, "answers_compared": 0, "answer_note": "no question in common",
                "other_questions": True}
    same = sum(a[q] == b[q] for q in common)
    note = "" if len(common) == len(a) == len(b) else f"{len(common)} questions in common ({len(a)} vs {len(b)})"
    return {"answer_agreement": round(same / len(common), 6), "answers_compared": len(common), "answer_note": note,
            "other_questions": bool(note)}


def _latency(mine: dict, theirs: dict, same_host: bool) -> dict:
    if not same_host:
        return {"p50_ratio": None, "latency_note": "not compared: different host"}
    if mine["p50_ms"] is None or theirs["p50_ms"] is None or theirs["p50_ms"] <= 0:
        return {"p50_ratio": None, "latency_note": "not compared: no p50 in one of the runs"}
    return {"p50_ratio": round(mine["p50_ms"] / theirs["p50_ms"], 4), "latency_note": ""}


def _compare_rows(label: str, mine: dict | None, theirs: dict | None, current: RunSnapshot, latest: RunSnapshot,
                  same_host: bool) -> dict:
    row = {"precision": label, "status": "compared" if mine and theirs else ("new" if mine else "missing"),
           "engine": mine and mine["engine"], "latest_engine": theirs and theirs["engine"]}
    for key in ("exact_match", "f1", "p50_ms"):
        row[key] = mine and mine[key]
        row[f"latest_{key}"] = theirs and theirs[key]
    if mine and theirs:
        row.update(em_delta=_delta(mine["exact_match"], theirs["exact_match"]), f1_delta=_delta(mine["f1"], theirs["f1"]))
        row.update(_agreement(current, latest, mine, theirs))
        row.update(_latency(mine, theirs, same_host))
    return row


def _changed_files(current: dict[str, str], latest: dict[str, str]) -> dict:
    return {"changed": sorted(n for n in current.keys() & latest.keys() if current[n] != latest[n]),
            "added": sorted(current.keys() - latest.keys()),
            "removed": sorted(latest.keys() - current.keys()),
            "unchanged": sum(1 for n in current.keys() & latest.keys() if current[n] == latest[n])}


def _changed_versions(current: dict, latest: dict) -> dict:
    return {name: {"latest": latest.get(name), "current": current.get(name)}
            for name in sorted(current.keys() | latest.keys()) if current.get(name) != latest.get(name)}


def _gates(model: str, current: RunSnapshot, precisions: list[dict], latest: RunSnapshot | None,
           same_host: bool | None, max_f1_drop: float | None, max_latency_ratio: float | None) -> list[GateResult]:
    """One result per engine and gate: judged where a precision was compared, else skipped, saying why."""
    gates = []
    for name, threshold in ((F1_GATE, max_f1_drop), (LATENCY_GATE, max_latency_ratio)):
        why = None
        if threshold is None:
            why = "disabled"
        elif latest is None:
            why = f"first release of {model}"
        elif name == LATENCY_GATE and not same_host:
            why = "latest was measured on a different host"
        if why:
            gates += [skipped(row["engine"], name, threshold, "max", why) for row in current.rows]
        else:
            gates += [_gate(name, threshold, row, latest.run_id) for row in precisions
                      if row["status"] == "compared"]
    return gates


def _gate(name: str, threshold: float, row: dict, latest_run: str | None) -> GateResult:
    engine = row["engine"]
    if name == F1_GATE:
        if row["f1_delta"] is None:
            return skipped(engine, name, threshold, "max", "no F1 in one of the runs")
        if row.get("other_questions"):  # F1 over other questions (a 200-question demo vs a nightly) is no trend
            return skipped(engine, name, threshold, "max", f"scored on other questions: {row['answer_note']}")
        drop = round(-row["f1_delta"], 4) + 0.0  # + 0.0: no "-0" for an unchanged F1
        return judge(engine, name, drop, threshold, "max",
                     f"F1 {row['f1']:.2f} vs {row['latest_f1']:.2f} in {latest_run}")
    if row["p50_ratio"] is None:
        return skipped(engine, name, threshold, "max", row["latency_note"].removeprefix("not compared: "))
    return judge(engine, name, row["p50_ratio"], threshold, "max",
                 f"p50 {row['p50_ms']:.2f} ms vs {row['latest_p50_ms']:.2f} ms in {latest_run}")


@dataclass
class RegressionReport:
    model: str
    run_id: str | None  # the run being compared (None before it has an id)
    latest_run_id: str | None  # None: first release of the model, nothing to compare
    same_host: bool | None
    host: dict
    latest_host: dict | None
    thresholds: dict
    precisions: list[dict] = field(default_factory=list)
    files: dict = field(default_factory=dict)  # model/engine files: changed, added, removed, unchanged
    versions: dict = field(default_factory=dict)  # name -> {"latest", "current"} where they differ
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def compare(model: str, current: RunSnapshot, latest: RunSnapshot | None, *,
            max_f1_drop: float | None = DEFAULT_MAX_F1_DROP,
            max_latency_ratio: float | None = DEFAULT_MAX_LATENCY_RATIO) -> RegressionReport:
    """The comparison of `current` with `latest` (None: first release), and its gates."""
    host = host_kind(current.hardware)
    report = RegressionReport(model=model, run_id=current.run_id, latest_run_id=latest and latest.run_id,
                              same_host=None, host=host, latest_host=None,
                              thresholds={F1_GATE: max_f1_drop, LATENCY_GATE: max_latency_ratio})
    if latest is not None:
        report.latest_host = host_kind(latest.hardware)
        report.same_host = report.latest_host == host
        report.precisions = [_compare_rows(label, mine, theirs, current, latest, report.same_host)
                             for label, mine, theirs in _pairs(current.rows, latest.rows)]
        report.files = _changed_files(current.digests, latest.digests)
        report.versions = _changed_versions(current.versions, latest.versions)
    report.gates = _gates(model, current, report.precisions, latest, report.same_host, max_f1_drop,
                          max_latency_ratio)
    return report


def compare_with_latest(store: ArtifactStore | str, model: str, rows: list[dict], files: Mapping[str, Path | str],
                        *, versions: dict | None = None, hardware: dict | None = None, run_id: str | None = None,
                        max_f1_drop: float | None = DEFAULT_MAX_F1_DROP,
                        max_latency_ratio: float | None = DEFAULT_MAX_LATENCY_RATIO) -> RegressionReport:
    """Compare the run about to be published (result rows, bundle name -> local file) with `latest`.

    `versions` and `hardware` default to this host's (as `build_manifest`
    records them). A threshold of None turns its gate off.
    """
    current = local_snapshot(rows, files, versions, hardware, run_id)
    return compare(model, current, latest_snapshot(store, model),
                   max_f1_drop=max_f1_drop, max_latency_ratio=max_latency_ratio)
