"""`python -m training.ablation`: the ablation models are added to experiments.models in a real `dvc exp run`."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from core.errors import ShopError
from core.params import ModelSpec
from training import ablation

SCORE = (
    "import json, yaml; m = yaml.safe_load(open('params.yaml'))['experiments']['models']; "
    "json.dump({'search': {'models': {s['variant']: s.get('train', {}) for s in m.values()}}}, "
    "open('metrics/results.json', 'w'))"
)


def test_overrides_add_each_model_in_hydra_syntax_and_drop_the_ablation_list():
    specs = {"search-aug_fgm": ModelSpec(task="search", variant="aug_fgm", data="aug", train={"fgm_epsilon": 0.1})}
    assert ablation.overrides(specs) == [
        "+experiments.models.search-aug_fgm={task:'search',variant:'aug_fgm',data:'aug',train:{fgm_epsilon:0.1}}",
        "~experiments.ablation",
    ]
    assert ablation.hydra_value({"w": [0.5, None, True], "s": "it's"}) == "{w:[0.5,null,true],s:'it\\'s'}"
    with pytest.raises(ShopError, match="experiments.ablation is empty"):
        ablation.overrides({})


def test_the_experiment_trains_the_added_models_and_its_results_are_exported(tmp_path, monkeypatch):
    """A toy pipeline with the loop's shape (train foreach over experiments.models, then a scoring stage):
    the experiment runs in a temporary copy and the workspace keeps its params; the export reads its results."""
    for key in [k for k in os.environ if k.startswith("DVC_")]:
        monkeypatch.delenv(key)
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    params = {
        "experiments": {
            "models": {"search-aug": {"task": "search", "variant": "aug"}},
            "ablation": {
                "search-aug_fgm": {"task": "search", "variant": "aug_fgm", "data": "aug", "train": {"fgm_epsilon": 0.1}}
            },
        }
    }
    stages = {
        "train": {
            "foreach": "${experiments.models}",
            "do": {
                "cmd": "echo ${item.variant} > models/${key}",
                "params": ["experiments.models.${key}"],
                "outs": ["models/${key}"],
            },
        },
        "evaluate": {
            "cmd": f'{sys.executable} -c "{SCORE}"',
            "deps": ["models"],
            "params": ["experiments"],
            "metrics": [{"metrics/results.json": {"cache": False}}],
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (tmp_path / "models").mkdir()
    (tmp_path / "metrics").mkdir()

    def run(*args):
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True, timeout=300)

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "default loop")

    specs = {name: ModelSpec(**spec) for name, spec in params["experiments"]["ablation"].items()}
    ablation.run_experiment("ablation-test", ablation.overrides(specs), tmp_path)
    doc = ablation.export("ablation-test", list(specs), tmp_path, tmp_path / "metrics" / "ablation.json")

    assert doc["search"]["models"] == {"aug": {}, "aug_fgm": {"fgm_epsilon": 0.1}}
    assert json.loads((tmp_path / "metrics" / "ablation.json").read_text())["experiment"]["name"] == "ablation-test"
    assert json.loads((tmp_path / "metrics" / "results.json").read_text())["search"]["models"] == {"aug": {}}
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == params  # the workspace is untouched
    with pytest.raises(ShopError, match="cannot read metrics/results.json of experiment 'nope'"):
        ablation.export("nope", [], tmp_path, tmp_path / "x.json")
