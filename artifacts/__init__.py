"""Publishing and downloading verified build bundles (no Prefect here; see `tasks/publish.py`)."""

from artifacts.download import DownloadResult, download, verify_dir
from artifacts.manifest import IntegrityError, Manifest, build_manifest
from artifacts.publish import PublishResult, RunConflict, bundle_files, gate_result, publish_bundle, write_plots
from artifacts.store import ArtifactStore, default_store, make_run_id

__all__ = [
    "ArtifactStore",
    "DownloadResult",
    "IntegrityError",
    "Manifest",
    "PublishResult",
    "RunConflict",
    "build_manifest",
    "bundle_files",
    "default_store",
    "download",
    "gate_result",
    "make_run_id",
    "publish_bundle",
    "verify_dir",
    "write_plots",
]
