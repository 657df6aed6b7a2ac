"""The commands the README and docs/deploy.md show are real: each parses, each config loads, each make target exists.

Cheap ones (`backends`, `passes`, `trt-check` on a project file, `doctor`
without a server) are also run. The long ones (`run`, `finetune`) run in the
flow and end-to-end tests.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bertbuild.cli import build_parser

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCS = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "docs" / "deploy.md"]


def _shell_lines(path: Path) -> list[str]:
    """Every command line of the ```bash blocks, continuations joined and comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _commands(program: str) -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        for line in _shell_lines(doc):
            words = shlex.split(line)
            if words and Path(words[0]).name == program:
                found.append((f"{doc.name}: {line}", words[1:]))
    return found


@pytest.mark.parametrize("where, args", _commands("bertbuild"), ids=lambda v: v if isinstance(v, str) else None)
def test_every_bertbuild_command_shown_parses(where, args):
    if any("[" in word or "|" in word for word in args):  # a synopsis: its command and action must exist
        args = [word for word in args if not word.startswith(("-", "[")) and word.isidentifier()][:2] + ["--help"]
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(args)
        assert exited.value.code == 0, where
        return
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"{where}: does not parse (exit {exc.code})")
    if getattr(parsed, "config", None) and not parsed.config.startswith("/"):
        from bertbuild.config import load_config

        assert (PROJECT_ROOT / parsed.config).is_file(), where
        load_config(PROJECT_ROOT / parsed.config)


def test_the_readme_shows_the_main_commands():
    shown = {args[0] for _, args in _commands("bertbuild")}
    assert {"run", "finetune", "ask", "artifacts", "doctor", "trt-check", "backends"} <= shown


@pytest.mark.parametrize("where, args", _commands("make"), ids=lambda v: v if isinstance(v, str) else None)
def test_every_make_target_shown_exists(where, args):
    targets = set(re.findall(r"^([a-z][\w-]*):", (PROJECT_ROOT / "Makefile").read_text(), re.MULTILINE))
    assert args[0] in targets, where


def test_every_config_preset_loads():
    from bertbuild.config import load_config

    presets = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))
    assert len(presets) >= 6
    for preset in presets:
        load_config(preset)  # offline: an ngc:// source is not fetched at load


@pytest.mark.parametrize("args", [["backends"], ["passes"], ["doctor"],
                                  ["trt-check", "tests/fixtures-do-not-exist.onnx"]])
def test_cheap_commands_run(args, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect"),
           "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    result = subprocess.run([sys.executable, "-m", "bertbuild.cli", *args], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    if args[0] == "trt-check":  # a missing file: one line, exit 2
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and "bertbuild: error:" in result.stderr
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip()


def _layout_rows() -> dict[str, str]:
    """The README's Layout table: its first cell (a folder) -> the rest of the row."""
    section = PROJECT_ROOT.joinpath("README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([^`]+)`[^|]* \| (.*) \|$", section, re.MULTILINE))


def test_the_readme_layout_names_every_package_and_top_level_module():
    rows = _layout_rows()
    described = " ".join(rows.values())
    package = PROJECT_ROOT / "bertbuild"
    missing = [f"bertbuild/{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
               and f"bertbuild/{p.name}/" not in rows and f"`{p.name}/`" not in described]
    missing += [p.name for p in package.glob("*.py") if p.name != "__init__.py" and f"`{p.name}`" not in described]
    assert not missing, f"README's Layout does not name: {missing}"


def test_every_module_the_readme_layout_names_exists():
    package = PROJECT_ROOT / "bertbuild"
    absent = []
    for folder, text in _layout_rows().items():
        root = PROJECT_ROOT / folder if folder.endswith("/") else package
        absent += [f"{folder}: {name}" for name in re.findall(r"`([\w/]+\.py)`", text)
                   if not (PROJECT_ROOT / name).is_file() and not list(root.rglob(Path(name).name))]
    assert not absent, f"README's Layout names modules that do not exist: {absent}"
