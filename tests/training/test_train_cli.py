"""`idcscan train` refuses what cannot work with one clear line (exit 2), before heavy work."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from idcscan.cli import app


@pytest.fixture
def cli():
    return CliRunner()


def _train(cli, *args):
    return cli.invoke(app, ["train", *map(str, args)])


def test_refuses_to_overwrite_an_existing_run(cli, prepared_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    result = _train(cli, prepared_data, "--out", run)
    assert result.exit_code == 2
    assert "--resume" in result.output and "Traceback" not in result.output


def test_resume_without_a_run_says_so(cli, prepared_data, tmp_path):
    result = _train(cli, prepared_data, "--out", tmp_path / "nothing", "--resume")
    assert result.exit_code == 2
    assert "Nothing to resume" in result.output


def test_unknown_backbone_and_bad_settings(cli, prepared_data, tmp_path):
    result = _train(cli, prepared_data, "--out", tmp_path / "a", "--backbone", "resnet9000",
                    "--weights", "none")
    assert result.exit_code == 2 and "Unknown backbone" in result.output
    result = _train(cli, prepared_data, "--out", tmp_path / "b", "--input-size", "8")
    assert result.exit_code == 2 and "--input-size" in result.output


def test_not_a_prepared_dataset(cli, tmp_path):
    result = _train(cli, tmp_path, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "idcscan prepare" in result.output


def test_help_lists_the_contract_options(cli):
    result = cli.invoke(app, ["train", "--help"])
    for option in ("--out", "--backbone", "--weights", "--input-size", "--frozen-epochs",
                   "--finetune-epochs", "--batch-size", "--devices", "--max-minutes", "--seed",
                   "--resume"):
        assert option in result.output
