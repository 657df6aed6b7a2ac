"""Import optional heavy packages only when a command needs them.

TensorFlow takes seconds to import and TensorRT exists only on GPU hosts, so
nothing imports them at module level: `bertbuild --help` stays instant and a
host without them gets a one-line `MissingDependency` naming the fix.
"""

from __future__ import annotations

import importlib
import os

_EXTRAS = {
    "tensorflow": "pip install 'bertbuild[tf]'",
    "tf2onnx": "pip install 'bertbuild[tf]'",
    "tensorrt": "install TensorRT >= 10.14 on a GPU host ('pip install bertbuild[trt]')",
    "prefect_dask": "pip install 'bertbuild[dask]'",
    "s3fs": "pip install 'bertbuild[s3]'",
}


def require(module: str):
    """Import `module` or raise MissingDependency saying how to install it."""
    from bertbuild.errors import MissingDependency

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        fix = _EXTRAS.get(top, f"pip install {top}")
        raise MissingDependency(f"{module} is not installed ({exc}); {fix}") from None


def is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def import_tensorflow():
    """TensorFlow with its C++ start-up chatter silenced (it is not ours to show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    tf = require("tensorflow")
    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf
