"""The ``recsys`` command line end to end on real data, through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    model_dir = tmp_path_factory.mktemp("models")
    for extra in ([], ["--no-fit-weights"]):
        result = runner.invoke(app, ["train", "--data-dir", str(data_dir), "--model-dir",
                                     str(model_dir), "--no-event-log", *extra])
        assert result.exit_code == 0, result.output
    return model_dir


def test_train_publishes_increasing_versions(published: Path) -> None:
    assert (published / "v1" / "manifest.json").is_file()
    assert (published / "v2" / "arrays.npz").is_file()
    assert (published / "CURRENT").read_text().strip() == "2"
    manifest = json.loads((published / "v2" / "manifest.json").read_text())
    # v2 reused v1's fitted weights instead of refitting them
    v1 = json.loads((published / "v1" / "manifest.json").read_text())
    assert manifest["blend_weights"] == v1["blend_weights"]
    assert manifest["data_window"]["interactions"] == 100_000


def test_model_list_show_and_rollback(published: Path) -> None:
    listed = runner.invoke(app, ["model", "list", "--model-dir", str(published)])
    assert listed.exit_code == 0 and "ml-100k" in listed.output
    shown = runner.invoke(app, ["model", "show", "1", "--model-dir", str(published)])
    assert shown.exit_code == 0 and '"version": 1' in shown.output
    rolled = runner.invoke(app, ["model", "rollback", "--model-dir", str(published)])
    assert rolled.exit_code == 0
    assert (published / "CURRENT").read_text().strip() == "1"
    forward = runner.invoke(app, ["model", "rollback", "2", "--model-dir", str(published)])
    assert forward.exit_code == 0
    assert (published / "CURRENT").read_text().strip() == "2"


def test_recommend_prints_ten_movies_with_reasons(published: Path, data_dir: Path) -> None:
    result = runner.invoke(app, ["recommend", "42", "--data-dir", str(data_dir),
                                 "--model-dir", str(published)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Top 10 for user 42" in result.output
    assert any(r in result.output for r in ("because you watched", "because you just watched",
                                            "people who liked", "fans of",
                                            "popular"))


def test_recommend_unknown_user_is_a_clear_error(published: Path, data_dir: Path) -> None:
    result = runner.invoke(app, ["recommend", "no-such-user", "--data-dir", str(data_dir),
                                 "--model-dir", str(published)])
    assert result.exit_code == 1
    assert "no-such-user" in result.output
    assert "Traceback" not in result.output


def test_eval_rating_writes_json_and_chart(tmp_path: Path, data_dir: Path) -> None:
    result = runner.invoke(app, ["eval", "-p", "rating", "--data-dir", str(data_dir),
                                 "--out", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "eval-ml-100k.json").read_text())
    assert data["rating"]["models"]["biased_mf_als"]["rmse"] < 0.92
    png = (tmp_path / "eval-ml-100k.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "-p", "nonsense"], "unknown protocol"),
        (["eval", "--seeds", "a,b"], "--seeds"),
        (["train", "--dataset", "no-such-dataset"], "no-such-dataset"),
        (["model", "show", "99"], "no model version 99"),
    ],
)
def test_bad_input_exits_1_with_a_message(
    args: list[str], message: str, tmp_path: Path, data_dir: Path
) -> None:
    result = runner.invoke(app, [*args, "--data-dir", str(data_dir)] if args[0] != "model"
                           else [*args, "--model-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_model_commands_find_the_stack_models_and_say_where_they_looked(
    published: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECSYS_MODEL_DIR", raising=False)
    missing = runner.invoke(app, ["model", "list"])
    assert missing.exit_code == 1
    assert "artifacts/models" in missing.output
    # a stack ran here: its models are found without --model-dir
    shutil.copytree(published, tmp_path / "runs" / "stack" / "models")
    (tmp_path / "runs" / "stack" / "stack.json").write_text("{}")
    listed = runner.invoke(app, ["model", "list"])
    assert listed.exit_code == 0, listed.output
    assert "runs/stack/models" in listed.output.replace("\n", "")
    top = runner.invoke(app, ["recommend", "42", "-k", "3", "--data-dir", str(data_dir)])
    assert top.exit_code == 0, top.output
    assert "Top 3 for user 42" in top.output


def test_a_new_start_keeps_the_previous_runs_models_and_says_so(
    published: Path, tmp_path: Path
) -> None:
    import shutil

    from devstack.runfile import RunDir

    run = RunDir.at(tmp_path / "run")
    shutil.copytree(published, run.models)
    notes = run.prepare()
    assert not run.models.exists()
    assert (run.root / "previous-models" / "v2" / "manifest.json").is_file()
    assert len(notes) == 1 and "previous-models" in notes[0]
    assert run.prepare() == []  # nothing published since: nothing moved, the kept run stays
    assert (run.root / "previous-models" / "v1").is_dir()
