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


@pytest.fixture
def ngc_secret_block(prefect_harness):
    """A `ngc-api-key` Secret block that exists for one test only (the test database is shared)."""
    from prefect.blocks.system import Secret

    from bertbuild.tasks.model import NGC_SECRET_BLOCK

    Secret(value="from-block").save(NGC_SECRET_BLOCK, overwrite=True)
    yield
    Secret.delete(NGC_SECRET_BLOCK)


def test_ngc_key_from_env_then_secret_block(monkeypatch, prefect_harness):
    from bertbuild.tasks.model import ngc_api_key

    monkeypatch.delenv("NGC_API_KEY", raising=False)
    assert ngc_api_key() is None


def test_ngc_key_from_the_secret_block_unless_the_env_has_one(monkeypatch, ngc_secret_block):
    from bertbuild.tasks.model import ngc_api_key

    monkeypatch.delenv("NGC_API_KEY", raising=False)
    assert ngc_api_key() == "from-block"
    monkeypatch.setenv("NGC_API_KEY", "from-env")
    assert ngc_api_key() == "from-env"


def test_the_secret_block_is_gone_after_its_test(prefect_harness):
    from prefect.blocks.system import Secret

    with pytest.raises(ValueError):
        Secret.load("ngc-api-key")
