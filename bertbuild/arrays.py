"""Reading saved NumPy arrays from tasks that run side by side in threads.

numpy parses every .npy header (in .npz files, and in Polygraphy's RunResults)
with `ast.literal_eval`. CPython 3.11 can fail building an AST while another
thread builds one: "SystemError: AST constructor recursion depth mismatch"
(python/cpython#106905; seen here on 3.11.7, when a run's scoring tasks loaded
their SQuAD set at the same moment on Dask's threads). The reads below take one
lock, so two of them never parse a header at once; each is short, and only the
read is serialised, never the work done with the arrays.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

# Held while numpy parses .npy headers (ast.literal_eval); see the module docstring.
HEADER_PARSE_LOCK = threading.Lock()


def load_npz(path: Path | str) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read into memory (the file is closed on return)."""
    with HEADER_PARSE_LOCK, np.load(path) as data:
        return {name: data[name] for name in data.files}
