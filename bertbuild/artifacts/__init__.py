"""Publishing and downloading verified build bundles (no Prefect here; see `bertbuild/tasks/publish.py`)."""

from bertbuild.artifacts.download import DownloadResult, download, verify_dir
from bertbuild.artifacts.manifest import Manifest, build_manifest
from bertbuild.artifacts.prune import PrunePlan, prune
from bertbuild.artifacts.publish import PublishResult, publish_bundle, write_plots
from bertbuild.artifacts.regression import RegressionReport, compare_with_latest
from bertbuild.artifacts.store import ArtifactStore, default_store, make_run_id

__all__ = [
    "ArtifactStore",
    "DownloadResult",
    "Manifest",
    "PrunePlan",
    "PublishResult",
    "RegressionReport",
    "build_manifest",
    "compare_with_latest",
    "default_store",
    "download",
    "make_run_id",
    "prune",
    "publish_bundle",
    "verify_dir",
    "write_plots",
]
