"""Each training stage takes the paths dvc.yaml passes it (`--params` plus its inputs and outputs)."""

import json

import pytest
from typer.testing import CliRunner

from training import baselines, evaluate, promote, report, train

STAGES = {
    "train": (
        train.app,
        [],
        ["--params", "--task", "--variant", "--data", "--splits", "--canonical", "--out", "--metrics"],
    ),
    "evaluate": (
        evaluate.app,
        [],
        ["--params", "--models", "--splits", "--canonical", "--fused", "--baselines", "--out", "--sweep"],
    ),
    "baselines": (baselines.app, [], ["--params", "--splits", "--canonical", "--out"]),
    "report": (report.app, [], ["--results", "--out"]),
    "promote": (promote.app, ["run"], ["--params", "--results", "--out"]),
    "rollback": (promote.app, ["rollback"], ["--params", "--task"]),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_accepts_the_paths_dvc_passes(stage):
    app, command, options = STAGES[stage]
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output, f"{stage}: {option} missing"


def test_a_variant_fuse_skipped_leaves_outputs_without_a_model(tmp_path):
    data = tmp_path / "data/fused/retail/aug"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"variant": "aug", "skipped": "no synthetic rows"}))
    out, metrics = tmp_path / "models/retail/aug", tmp_path / "metrics/train/retail-aug.json"
    args = ["--task", "retail", "--variant", "aug", "--data", str(data), "--splits", str(tmp_path / "splits")]
    args += ["--canonical", str(tmp_path / "canonical"), "--out", str(out), "--metrics", str(metrics), "--no-track"]
    args += ["--curves", str(tmp_path / "curves")]  # the default is the repository's own metrics/curves/retail-aug
    result = CliRunner().invoke(train.app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(metrics.read_text()) == {"skipped": "no synthetic rows"}
    assert json.loads((tmp_path / "curves" / "valid.json").read_text()) == []
    assert out.is_dir() and not (out / "model.json").exists()
