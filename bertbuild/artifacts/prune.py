"""Retention: drop old runs of one model, then the blobs no remaining manifest references.

Rules, each kept however `keep` is set:

* the newest `keep` released runs, and the run `latest` names, stay;
* the newest `keep` failed runs stay;
* a run a publish in progress has announced stays (it may be about to
  become `latest`; see `handshake`);
* a blob stays while any remaining manifest of ANY model (released or
  failed) lists it, or while a publish in progress has announced it
  (`handshake`: that publish's manifest may name it any moment now).

`prune` without `apply` only plans: it writes nothing. With `apply` it first
announces itself, so publishes starting meanwhile wait, then removes each
run's manifest before its directory (the run disappears at once), then the
blobs, then staging dirs of publishes killed more than a day ago.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bertbuild.artifacts.handshake import announce_prune, finish_prune, pending_publishes, prune_seconds_left
from bertbuild.artifacts.manifest import MANIFEST_NAME
from bertbuild.artifacts.store import STAGING_DIR, STAGING_MAX_AGE_S, ArtifactStore, check_model
from bertbuild.errors import BertbuildError, IntegrityError, UserInputError

# hook(step, name) before each removal: "run", "failed-run", "blob", "staging". Tests use it.
Hook = Callable[[str, str], None]


@dataclass
class PrunePlan:
    model: str
    keep: int
    latest: str | None
    runs: list[str] = field(default_factory=list)  # released run ids to remove, oldest first
    failed_runs: list[str] = field(default_factory=list)
    blobs: dict[str, int] = field(default_factory=dict)  # sha256 -> size of blobs to remove
    pending: list[str] = field(default_factory=list)  # unreferenced blobs kept for a publish in progress
    publishing: list[str] = field(default_factory=list)  # runs (released or failed) kept for a publish in progress
    stale_staging: list[str] = field(default_factory=list)  # staging tokens of publishes killed long ago

    @property
    def blob_bytes(self) -> int:
        return sum(self.blobs.values())

    @property
    def empty(self) -> bool:
        return not (self.runs or self.failed_runs or self.blobs or self.stale_staging)


def referenced_blobs(store: ArtifactStore, leaving: set[tuple[str, bool, str]]) -> set[str]:
    """Digests every manifest in the store lists, except the runs in `leaving` ((model, failed, run_id)).

    A manifest that cannot be read stops the prune: what it references is unknown.
    """
    digests: set[str] = set()
    for model in store.models():
        for failed in (False, True):
            for run_id in store.runs(model, failed=failed):
                if (model, failed, run_id) in leaving:
                    continue
                try:
                    manifest = store.read_manifest(model, run_id, failed=failed)
                except IntegrityError as exc:
                    raise IntegrityError(f"cannot tell which blobs are in use: run {run_id} of {model}: {exc}") from None
                if manifest is not None and manifest.content_addressed:
                    digests.update(entry["sha256"] for entry in manifest.files.values())
    return digests


def plan_prune(store: ArtifactStore, model: str, keep: int) -> PrunePlan:
    """What a prune of `model` keeping `keep` runs would remove right now."""
    check_model(model)
    if not isinstance(keep, int) or keep < 0:
        raise UserInputError(f"--keep must be 0 or more, not {keep!r}")
    # Pending lists are read first: before `latest` (a publish drops its list only after
    # moving the pointer, so its run is seen in one or the other) and before the
    # manifests (a publish that writes its manifest and drops its list in between is
    # seen in one or the other). See `handshake`.
    pending = pending_publishes(store)
    latest = store.latest(model)
    plan = PrunePlan(model=model, keep=keep, latest=latest)
    for failed, chosen in ((False, plan.runs), (True, plan.failed_runs)):
        run_ids = store.runs(model, failed=failed)  # oldest first
        for run_id in run_ids[:max(len(run_ids) - keep, 0)]:  # beyond the newest `keep`
            if (model, failed, run_id) in pending.runs:
                plan.publishing.append(run_id)
            elif failed or run_id != latest:
                chosen.append(run_id)
    leaving = {(model, False, r) for r in plan.runs} | {(model, True, r) for r in plan.failed_runs}
    in_use = referenced_blobs(store, leaving)
    unreferenced = {d: size for d, size in store.blobs().items() if d not in in_use}
    plan.blobs = {d: size for d, size in sorted(unreferenced.items()) if d not in pending.digests}
    plan.pending = sorted(d for d in unreferenced if d in pending.digests)
    plan.stale_staging = store.tokens(STAGING_DIR, STAGING_MAX_AGE_S, stale=True)
    return plan


def prune(store: ArtifactStore, model: str, keep: int, *, apply: bool = False,
          hook: Hook | None = None) -> PrunePlan:
    """Plan a prune of `model` and, with `apply`, carry it out; returns the plan."""
    if not apply:
        return plan_prune(store, model, keep)
    hook = hook or (lambda step, name: None)
    token = announce_prune(store)
    try:
        plan = plan_prune(store, model, keep)
        for failed, run_ids in ((False, plan.runs), (True, plan.failed_runs)):
            for run_id in run_ids:
                hook("failed-run" if failed else "run", run_id)
                bundle = store.bundle_path(model, run_id, failed=failed)
                store.remove_tree(f"{bundle}/{MANIFEST_NAME}")  # invisible first, then gone
                store.remove_tree(bundle)
        for digest in plan.blobs:
            if prune_seconds_left(token) <= 0:
                raise BertbuildError("prune ran too long: stopped before publishes stop waiting for it; "
                                     "run it again to finish")
            hook("blob", digest)
            store.remove_tree(store.blob_path(digest))
        for staging in plan.stale_staging:
            hook("staging", staging)
            store.remove_tree(store.path(STAGING_DIR, staging))
    finally:
        finish_prune(store, token)
    return plan
