"""A separate OS process that publishes to, or reads from, an artifact store: the concurrency tests' other side.

    python tests/store_worker.py publish STORE MODEL   # per stdin line "RUN_ID FILES_DIR START_AT":
                                                      #   wait until START_AT (time.time()), publish,
                                                      #   print {"run", "latest", "t0", "t1"} (or {"error"})
    python tests/store_worker.py read STORE MODEL DEST_DIR STOP_FILE
                                                      # until STOP_FILE exists: download `latest`, verify it,
                                                      #   print {"run", "t0", "t1"} (or {"none"}, {"error"})

An S3 store is reached through the AWS_* variables of the environment. Every
output line is one JSON object, flushed at once.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path


def say(record: dict) -> None:
    print(json.dumps(record), flush=True)


def publish(store_url: str, model: str) -> None:
    from bertbuild.artifacts.publish import publish_bundle
    from bertbuild.evaluation.gates import GateResult
    from bertbuild.artifacts.store import ArtifactStore

    store = ArtifactStore(store_url)
    for line in sys.stdin:
        run_id, files_dir, start_at = line.split()
        files = {p.name.replace("__", "/"): p for p in Path(files_dir).iterdir()}
        time.sleep(max(0.0, float(start_at) - time.time()))
        t0 = time.time()
        try:
            result = publish_bundle(store, model, run_id, files, {}, [GateResult("onnxruntime-fp32", "parity", 1e-6, 1e-4, True, "max")], True)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            say({"run": run_id, "error": f"{type(exc).__name__}: {exc}"})
            continue
        say({"run": run_id, "latest": result.latest, "t0": t0, "t1": time.time()})


def read(store_url: str, model: str, dest_dir: str, stop_file: str) -> None:
    from bertbuild.artifacts.download import download, verify_dir
    from bertbuild.artifacts.store import ArtifactStore
    from bertbuild.errors import UserInputError

    store = ArtifactStore(store_url)
    n = 0
    while not Path(stop_file).exists():
        dest = Path(dest_dir) / f"read-{n}"
        n += 1
        t0 = time.time()
        try:
            result = download(store, model, dest, run="latest")
            verify_dir(dest)  # every file listed, present, and of its sha256
            # Each run's results.json names its run: a mix of two bundles would show here.
            named = json.loads((dest / "results.json").read_text())["run"]
            if named != result.run_id:
                raise AssertionError(f"latest named {result.run_id} but its results.json is {named}'s")
            say({"run": result.run_id, "t0": t0, "t1": time.time()})
        except UserInputError as exc:
            if "no released run" not in str(exc):
                say({"error": f"{type(exc).__name__}: {exc}"})
            else:
                say({"none": True})
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            say({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    {"publish": publish, "read": read}[role](*args)
