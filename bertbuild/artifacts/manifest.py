"""`manifest.json`: what a bundle holds and how it was made.

Every file's sha256 and size, the model source and its checksum, the config,
package versions (read from installed metadata: TensorFlow is never
imported), the hardware, the git commit, the gate results and the flow run.
The manifest is written last when publishing, and checked on download.

Schema 2 bundles keep each file's bytes once in the store's content-addressed
blobs (found by the sha256 listed here); schema 1 bundles kept them beside
the manifest. Each file entry records the precision the file belongs to
(`artifacts.layout`; absent for a file of the whole run and in bundles
published before it was recorded). A manifest read from a store is
untrusted: `Manifest.from_json` validates it as a pydantic model and rejects
unsafe or colliding file names, malformed digests, gate records and
duplicate keys.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import NotRequired, TypedDict

from bertbuild.artifacts.names import MANIFEST_NAME, bundle_name_problem, name_set_problem
from bertbuild.errors import BertbuildError, IntegrityError
from bertbuild.evaluation.gates import GateResult
from bertbuild.kinds import Precision
from bertbuild.hashing import sha256_stream
from bertbuild.host import hardware, package_versions

SCHEMA_VERSION = 2
FIRST_BLOB_SCHEMA = 2  # from this schema on, file bytes live in the store's blobs

# Bundle files with these suffixes are reports: a failed run publishes only
# these (under failed/), and `download --precision` always includes them.
REPORT_SUFFIXES = frozenset({".json", ".md", ".txt", ".png", ".svg", ".csv", ".log", ".html", ".yaml", ".yml"})


def is_report(name: str) -> bool:
    return Path(name).suffix.lower() in REPORT_SUFFIXES


def sha256_and_size(path: Path | str) -> tuple[str, int]:
    """What a manifest records of a local file: its sha256 and its size in bytes."""
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def git_info(directory: Path | str | None = None) -> dict:
    """`{"commit": sha, "dirty": bool}` of the repository holding `directory`, or nulls outside one."""
    directory = Path(directory) if directory else Path(__file__).resolve().parent.parent
    git = shutil.which("git")
    if not git:
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run([git, "-C", str(directory), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=15)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run([git, "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"commit": commit.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so the manifest holds plain data only (paths become strings)."""
    return json.loads(json.dumps(value, default=str))


class FileEntry(TypedDict):
    """What a manifest records of one bundle file (kept a plain dict: callers read `entry["sha256"]`)."""

    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(strict=True, ge=0)]
    precision: NotRequired[Precision]  # absent: a file of the whole run (results, plots, vocab)


class Manifest(BaseModel):
    """A bundle's manifest. Read from a store it is untrusted: `from_json` validates every field's type,
    every file entry, the file names (safe and writable side by side) and the gate records."""

    model_config = ConfigDict(extra="ignore")  # fields a newer bertbuild adds are read past, not refused

    model: str
    run_id: str
    passed: StrictBool
    files: dict[str, FileEntry] = {}
    source: dict = {}  # {"source", "sha256" (pin), "checkpoint_sha256"}
    config: dict = {}
    versions: dict = {}
    hardware: dict = {}
    git: dict = {}
    gates: list[GateResult] = []
    flow_run_id: str | None = None
    created: str = ""
    meta: dict = {}
    schema_version: Annotated[int, Field(strict=True, ge=1, alias="schema")] = SCHEMA_VERSION

    @field_validator("files", mode="before")
    @classmethod
    def _safe_names(cls, files: object) -> object:
        """Unsafe names, or names that cannot be written side by side, are refused before the entries' own
        fields (`FileEntry`) are checked, so a hostile name is named as such even when its entry is malformed too."""
        if not isinstance(files, dict):
            raise IntegrityError("manifest.json: 'files' is not an object")
        for name in files:
            problem = bundle_name_problem(name)
            if problem:
                raise IntegrityError(f"manifest.json lists an unsafe file name {name!r}: it {problem}")
        problem = name_set_problem(files)
        if problem:
            raise IntegrityError(f"manifest.json lists colliding file names: {problem}")
        return files

    @field_validator("gates", mode="before")
    @classmethod
    def _gate_records(cls, gates: object) -> object:
        return [_legacy_gate(g) for g in gates] if isinstance(gates, list) else gates

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        """A manifest from untrusted JSON: every field is checked before anything uses it."""
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except ValueError as exc:
            raise IntegrityError(f"manifest.json is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "files" not in data or "run_id" not in data:
            raise IntegrityError("manifest.json is not a bertbuild manifest")
        schema = data.get("schema", 1)
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
            raise BertbuildError(f"manifest.json has schema {schema}, newer than this bertbuild reads "
                                 f"({SCHEMA_VERSION}): upgrade bertbuild")
        try:
            return cls.model_validate({"schema": 1, **data})
        except PydanticValidationError as exc:
            problem = exc.errors()[0]
            loc = problem["loc"]
            if len(loc) >= 2 and loc[0] == "files":
                raise IntegrityError(f"manifest.json: entry for {loc[1]!r} needs a lowercase hex sha256 and a size "
                                     f"(and a known precision, if any): {'.'.join(map(str, loc[2:])) or 'entry'}: "
                                     f"{problem['msg']}") from None
            raise IntegrityError(f"manifest.json: {'.'.join(map(str, loc))}: {problem['msg']}") from None

    @property
    def results(self) -> list[dict]:
        """The run's result rows (`meta["results"]`, one per engine), sanitised; [] if none were recorded.

        Each row has `engine` and `precision` (strings) and `exact_match`, `f1`,
        `p50_ms`, `argmax_agreement`, `questions` (numbers or None). Rows
        without a precision are dropped: they cannot be compared across runs.
        """
        return clean_results(self.meta.get("results"))

    @property
    def content_addressed(self) -> bool:
        """True when the files' bytes are the store's blobs; False for schema 1 bundles (files beside it)."""
        return self.schema_version >= FIRST_BLOB_SCHEMA

    @property
    def total_size(self) -> int:
        return sum(int(entry["size"]) for entry in self.files.values())

    def precision_of(self, name: str) -> str | None:
        """The precision a listed file belongs to, as recorded when it was published (None: the whole run's)."""
        precision = self.files[name].get("precision")
        return None if precision is None else str(precision)

    def records_precisions(self) -> bool:
        """Whether this bundle was published with each file's precision (older bundles were not)."""
        return any("precision" in entry for entry in self.files.values())

    def check(self, name: str, sha256: str, size: int) -> None:
        """Raise `IntegrityError` naming `name` unless it matches its manifest entry."""
        entry = self.files.get(name)
        if entry is None:
            raise IntegrityError(f"{name}: not listed in manifest.json")
        if entry["sha256"] != sha256 or int(entry["size"]) != size:
            raise IntegrityError(
                f"checksum mismatch: {name} (expected sha256 {entry['sha256'][:12]}... {entry['size']} bytes, "
                f"got {sha256[:12]}... {size} bytes)"
            )


def _legacy_gate(record: object) -> object:
    """A gate as bundles before the one gate record wrote it ({name: "engine:gate", value, message}), as one now."""
    if not isinstance(record, dict) or "name" not in record or "engine" in record:
        return record
    engine, _, gate = str(record["name"]).rpartition(":")
    message = str(record.get("message") or "")
    value, threshold = record.get("value"), record.get("threshold")
    skipped = message.removeprefix("skipped: ") if message.startswith("skipped: ") else None
    # The old record did not say which way its threshold pointed: "max" (every old gate of a drop or a
    # ratio) unless the recorded verdict says the value had to reach it.
    kind = "max"
    if isinstance(value, (int, float)) and isinstance(threshold, (int, float)) and value != threshold:
        kind = "min" if bool(record.get("passed")) == (value > threshold) else "max"
    return {"engine": engine or "-", "gate": gate, "measured": value, "threshold": threshold,
            "passed": record.get("passed"), "kind": kind, "skipped": skipped,
            "detail": "" if skipped else message}


RESULT_NUMBERS = ("exact_match", "f1", "p50_ms", "argmax_agreement", "questions")


def _number(value: Any) -> float | None:
    """A finite number from untrusted JSON, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def clean_results(rows: Any) -> list[dict]:
    """Result rows as regression and history read them (see `Manifest.results`), from untrusted data."""
    clean = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and isinstance(row.get("precision"), str) and row["precision"]:
            compute = row.get("compute_precision")
            clean.append({"engine": str(row.get("engine") or ""), "precision": row["precision"],
                          "compute_precision": compute if isinstance(compute, str) else None,
                          **{key: _number(row.get(key)) for key in RESULT_NUMBERS}})
    return clean


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json.loads keeps the last of two equal keys; a manifest listing a name twice is refused instead."""
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise IntegrityError(f"manifest.json lists {key!r} twice")
        result[key] = value
    return result


def build_manifest(files: dict[str, Path | str], *, model: str, run_id: str, passed: bool,
                   gates: list[GateResult] | None = None, meta: dict | None = None,
                   precisions: dict[str, str] | None = None, created: datetime | None = None) -> Manifest:
    """Hash `files` (bundle name -> local path) and gather provenance.

    Recognised `meta` keys: `config` (the config dict; the model source and its
    pin are read from `config["model"]`), `source` (overrides that: a string,
    or a dict with `source`/`sha256`), `checkpoint_dir` (hashed with
    `tree_sha256` into `source.checkpoint_sha256`), `flow_run_id`; a `gates`
    key is dropped (the `gates` argument is what is recorded). Everything else
    is kept under `meta`.
    """
    meta = dict(meta or {})
    config = meta.pop("config", None) or {}
    flow_run_id = meta.pop("flow_run_id", None)
    checkpoint_dir = meta.pop("checkpoint_dir", None)
    meta.pop("gates", None)  # recorded once, in `gates`
    model_cfg = config.get("model", {}) if isinstance(config, dict) else {}
    source: dict = {"source": model_cfg.get("source"), "sha256": model_cfg.get("sha256"), "checkpoint_sha256": None}
    given = meta.pop("source", None)
    if isinstance(given, str):
        source["source"] = given
    elif isinstance(given, dict):
        source.update(given)
    if checkpoint_dir and Path(checkpoint_dir).is_dir():
        from bertbuild.fetch.verify import tree_sha256

        source["checkpoint_sha256"] = tree_sha256(Path(checkpoint_dir))
        source.setdefault("checkpoint_dir", str(checkpoint_dir))

    entries = {}
    for name in sorted(files):
        digest, size = sha256_and_size(files[name])
        entries[name] = {"sha256": digest, "size": size}
        if (precisions or {}).get(name):
            entries[name]["precision"] = str(Precision(precisions[name]))
    when = (created or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return Manifest(
        model=model, run_id=run_id, passed=bool(passed), files=entries,
        source=_jsonable(source), config=_jsonable(config), versions=package_versions(),
        hardware=hardware(), git=git_info(), gates=list(gates or []),
        flow_run_id=str(flow_run_id) if flow_run_id else None,
        created=when.isoformat(timespec="seconds").replace("+00:00", "Z"), meta=_jsonable(meta),
    )
