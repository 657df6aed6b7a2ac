"""The package as a user installs it: a wheel, in a fresh venv outside the checkout, runs the tiny config.

The wheel must carry everything a run reads (the bundled SQuAD set, the vocab,
the TensorRT operator matrices); nothing may be found through the source tree.
The fresh venv gets the project's already-installed dependencies through a .pth
line (pip would otherwise download TensorFlow again, and tests use no network);
the project itself comes only from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # No build isolation: setuptools comes from the locked environment, so no index is needed.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
          str(PROJECT_ROOT)])
    (built,) = out.glob("bertbuild-*.whl")
    return built


def test_wheel_ships_the_data_and_only_the_bertbuild_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "bertbuild/data/squad/dev-v1.1.json.zip" in names and "bertbuild/data/vocab-uncased.txt" in names
    assert any(n.startswith("bertbuild/data/tensorrt/") and n.endswith(".json") for n in names)
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"bertbuild"}  # flows/, tasks/ and artifacts/ live inside it: no generic top-level names


def test_installed_wheel_runs_the_tiny_config_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "locked-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])

    work = tmp_path / "work"  # not the checkout: nothing can be read relative to the source tree
    work.mkdir()
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "generated-tiny.yaml").read_text())
    config |= {"eval": {"limit": 8, "batch_size": 4}, "benchmark": {"batch": 2, "seq": 128, "iterations": 2},
               "publish": {"store": str(tmp_path / "store")}, "cache": {"dir": str(tmp_path / "cache")}}
    (work / "tiny.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    where = _run([str(python), "-c", "import bertbuild; print(bertbuild.__file__)"], cwd=work, env=env).stdout
    assert Path(where.strip()).is_relative_to(site) and not Path(where.strip()).is_relative_to(PROJECT_ROOT)
    result = _run([str(env_dir / "bin" / "bertbuild"), "run", "--config", "tiny.yaml"], cwd=work, env=env)
    from bertbuild.backends.registry import resolve_backend

    assert f"{resolve_backend('auto')[0]}-fp32" in result.stdout and "PASS" in result.stdout
    assert len(list((work / "runs" / "generated-tiny").glob("*/results.json"))) >= 1
