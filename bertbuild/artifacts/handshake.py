"""How a publish and a prune running at once avoid losing a blob.

The race: prune finds a blob that no manifest references and deletes it,
while a publish in progress found that same blob present (so did not upload
it) and is about to write a manifest that names it.

Each side announces itself before it looks at the other:

* publish writes `.staging/<token>/pending.json` (its run, and every digest
  its manifest will name), then waits while any live `.pruning/<token>`
  marker exists, and only then checks which blobs (and whether its manifest)
  are already stored;
* prune writes its `.pruning/<token>` marker, then reads every pending list,
  and never deletes a digest or a run listed in one.

Whichever side announces second sees the first: either prune reads the
publish's pending list and keeps those blobs and that run, or the publish
sees the marker and looks at the store only after that prune has finished
deleting (uploading again whatever it removed). The pending list stays until
the manifest is written and `latest` names the run, so from then on the
manifest protects the blobs and the pointer protects the run: a prune reads
the pending lists before `latest`, so it sees the run in one or the other,
and `latest` never names a run that a prune removed.

A killed prune leaves its marker behind; it counts as live for
`PRUNE_MAX_S` only, and a prune stops deleting before it has run that long.
A killed publish's pending list protects its blobs until its staging dir is
pruned (`STAGING_MAX_AGE_S`). Ages come from the tokens' timestamps, so the
hosts' clocks must roughly agree (NTP is enough).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from bertbuild.artifacts.names import is_sha256
from bertbuild.artifacts.store import (PRUNING_DIR, STAGING_DIR, STAGING_MAX_AGE_S, ArtifactStore, check_segment,
                                       new_token, token_time)

PENDING_NAME = "pending.json"
PRUNE_MAX_S = 3600.0  # a prune marker older than this is a killed prune's
PRUNE_MARGIN_S = 120.0  # a prune stops deleting this long before its marker goes stale
POLL_S = 2.0


def announce_publish(store: ArtifactStore, token: str, digests: Iterable[str],
                     run: tuple[str, str, bool] | None = None) -> None:
    """Record the digests (and the run: model, run id, failed) the publish staging under `token` will reference."""
    record: dict = {"digests": sorted(set(digests))}
    if run is not None:
        model, run_id, failed = run
        record["run"] = {"model": model, "run_id": run_id, "failed": bool(failed)}
    store.write_atomic(f"{store.staging_path(token)}/{PENDING_NAME}", json.dumps(record).encode())


@dataclass
class Pending:
    """What the publishes that may still be running have announced."""

    digests: set[str] = field(default_factory=set)
    runs: set[tuple[str, bool, str]] = field(default_factory=set)  # (model, failed, run_id)


def pending_publishes(store: ArtifactStore, now: datetime | None = None) -> Pending:
    """Every digest and run a publish that may still be running has announced (lists older bertbuild wrote too)."""
    pending = Pending()
    for token in store.tokens(STAGING_DIR, STAGING_MAX_AGE_S, now, stale=False):
        data = store.read_bytes(f"{store.staging_path(token)}/{PENDING_NAME}")
        try:
            record = json.loads(data) if data is not None else {}
        except ValueError:
            continue  # not written by a publish: protects nothing
        if not isinstance(record, dict):
            continue
        listed, run = record.get("digests"), record.get("run")
        if isinstance(listed, list):
            pending.digests.update(d for d in listed if is_sha256(d))
        if isinstance(run, dict) and all(isinstance(run.get(k), str) for k in ("model", "run_id")):
            pending.runs.add((run["model"], bool(run.get("failed")), run["run_id"]))
    return pending


def marker_path(store: ArtifactStore, token: str) -> str:
    return store.path(PRUNING_DIR, check_segment(token, "prune token"))


def announce_prune(store: ArtifactStore, now: datetime | None = None) -> str:
    """Write a live prune marker; returns its token (pass it to `finish_prune`)."""
    token = new_token(now)
    store.write_atomic(marker_path(store, token), b"prune in progress\n")
    return token


def finish_prune(store: ArtifactStore, token: str) -> None:
    store.remove_tree(marker_path(store, token))


def prune_seconds_left(token: str, now: datetime | None = None) -> float:
    """How long the prune holding `token` may still delete before publishes stop waiting for it."""
    born = token_time(token)
    if born is None:
        return 0.0
    return PRUNE_MAX_S - PRUNE_MARGIN_S - ((now or datetime.now(timezone.utc)) - born).total_seconds()


def wait_for_prunes(store: ArtifactStore, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once no live prune marker is left (at most `PRUNE_MAX_S`, when any marker goes stale)."""
    while store.tokens(PRUNING_DIR, PRUNE_MAX_S, stale=False):
        sleep(POLL_S)
