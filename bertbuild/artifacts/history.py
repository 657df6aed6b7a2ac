"""A model's released runs over time, one `HistoryEntry` per run (shown by `bertbuild.reporting.history_*`).

Everything comes from the runs' manifests: `created`, `git`, `versions` and
the result rows in `meta["results"]`. Runs published before the results
were recorded there still get a row, with dashes for the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bertbuild.artifacts.store import ArtifactStore, check_model
from bertbuild.errors import IntegrityError
from bertbuild.kinds import Precision

KEY_VERSIONS = ("onnxruntime", "tensorflow", "tensorrt")
REFERENCE = "fp32 (reference)"


@dataclass
class HistoryEntry:
    run_id: str
    created: str
    commit: str | None
    dirty: bool | None
    versions: dict[str, str | None]
    results: dict[str, dict] = field(default_factory=dict)  # precision -> {"exact_match", "f1", "p50_ms"}
    problem: str = ""  # why the manifest could not be read, if it could not


def read_history(store: ArtifactStore, model: str) -> list[HistoryEntry]:
    """One entry per released run of `model`, oldest first (run ids sort by time)."""
    entries = []
    for run_id in store.runs(check_model(model)):
        try:
            manifest = store.read_manifest(model, run_id)
        except IntegrityError as exc:
            entries.append(HistoryEntry(run_id, "", None, None, {}, problem=str(exc).splitlines()[0]))
            continue
        if manifest is None:
            continue  # removed since it was listed
        git, versions = manifest.git, manifest.versions  # dicts (validated), their values untrusted
        results = {}
        for row in manifest.results:
            results.setdefault(row["precision"], {k: row[k] for k in ("exact_match", "f1", "p50_ms")})
        entries.append(HistoryEntry(
            run_id=run_id, created=str(manifest.created or ""),
            commit=git.get("commit") if isinstance(git.get("commit"), str) else None,
            dirty=git.get("dirty") if isinstance(git.get("dirty"), bool) else None,
            versions={k: versions.get(k) if isinstance(versions.get(k), str) else None for k in KEY_VERSIONS},
            results=results))
    return entries


def precisions_in(entries: list[HistoryEntry]) -> list[str]:
    """Every precision with results, reference first, then build order, then any others."""
    seen = {p for e in entries for p in e.results}
    known = [REFERENCE, *Precision]
    return [p for p in known if p in seen] + sorted(seen - set(known))
