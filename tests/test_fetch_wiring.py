"""Fetch as the flow and CLI use it: NGC key lookup, CLI exit codes."""

from __future__ import annotations

import os

import pytest

from bertbuild.cli import main


def test_cli_fetch_local_dir_prints_the_checkpoint_dir(tiny_checkpoint, capsys):
    assert main(["fetch", str(tiny_checkpoint.parent)]) == 0  # found in a nested folder
    assert capsys.readouterr().out.strip() == str(tiny_checkpoint.resolve())


def test_cli_fetch_bad_source_is_one_line(tmp_path, capsys):
    code = main(["fetch", "ngc://not-a-valid-source", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "ngc://not-a-valid-source" in err
    assert list(tmp_path.iterdir()) == []


def test_ngc_key_from_env_then_secret_block(monkeypatch, prefect_harness):
    from prefect.blocks.system import Secret

    from bertbuild.tasks.fetch import ngc_api_key

    monkeypatch.delenv("NGC_API_KEY", raising=False)
    assert ngc_api_key() is None
    Secret(value="from-block").save("ngc-api-key", overwrite=True)
    assert ngc_api_key() == "from-block"
    monkeypatch.setenv("NGC_API_KEY", "from-env")
    assert ngc_api_key() == "from-env"
