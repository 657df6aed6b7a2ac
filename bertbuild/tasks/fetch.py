"""Prefect tasks that acquire a checkpoint or a data file.

Thin on purpose: the logic (cache, retries, verification) lives in
`bertbuild.fetch` and works without Prefect. The tasks add no retries of their
own (the downloader already retries what is worth retrying) and no Prefect
caching (our cache is keyed by source + pin and survives Prefect's storage).
The NGC API key is read inside the task from NGC_API_KEY or a Prefect Secret
block named `ngc-api-key`, never passed as a parameter, so Prefect never
records it with the task run.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from bertbuild.fetch import fetch_checkpoint, fetch_file

NGC_SECRET_BLOCK = "ngc-api-key"


def ngc_api_key() -> str | None:
    """NGC_API_KEY if set, else the `ngc-api-key` Secret block if one exists, else None."""
    if os.environ.get("NGC_API_KEY"):
        return os.environ["NGC_API_KEY"]
    from prefect.blocks.system import Secret

    try:
        return Secret.load(NGC_SECRET_BLOCK).get()
    except ValueError:  # no such block: public models need no key
        return None


@task(name="fetch-checkpoint", retries=0, cache_policy=NO_CACHE)
def fetch_checkpoint_task(source: str, sha256: str | None, work_dir: str) -> str:
    """Directory holding bert_config.json and model.ckpt* (local, generated or downloaded)."""
    key = ngc_api_key() if source.startswith("ngc://") else None
    return str(fetch_checkpoint(source, sha256=sha256, api_key=key))


@task(name="fetch-file", retries=0, cache_policy=NO_CACHE)
def fetch_file_task(source: str, sha256: str | None = None, cache_dir: str | None = None) -> str:
    """Path (as a string) of the fetched file, e.g. a SQuAD JSON."""
    return str(fetch_file(source, sha256=sha256, cache_dir=Path(cache_dir) if cache_dir else None))
