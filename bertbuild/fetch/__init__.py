"""Checkpoint and dataset acquisition: NGC, Google Drive, HTTP(S), local files.

Pure library code (no Prefect); `bertbuild.tasks.model.fetch_model` wraps it. See `acquire` for usage.
"""

from bertbuild.fetch.acquire import SQUAD_V11_URLS, Endpoints, fetch_checkpoint, fetch_file
from bertbuild.fetch.archive import Limits
from bertbuild.fetch.cache import default_cache_dir
from bertbuild.fetch.download import RetryPolicy
from bertbuild.fetch.sources import Source, parse_source
from bertbuild.fetch.verify import tree_sha256

__all__ = [
    "SQUAD_V11_URLS",
    "Endpoints",
    "Limits",
    "RetryPolicy",
    "Source",
    "default_cache_dir",
    "fetch_checkpoint",
    "fetch_file",
    "parse_source",
    "tree_sha256",
]
