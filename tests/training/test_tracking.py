"""A real MLflow run (SQLite + local artifacts): params, batched metrics, lineage inputs, registered model."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow_helpers import TinyPyfunc, lineage, tiny_model_dir
from real_slices import search_slice
from typer.testing import CliRunner

from core.errors import ShopError
from core.tasks import get_task
from serving.launch import free_port
from training import model_store, registry, tracking, train
from training.model_store import load_model, save_model
from training.models import BiEncoder, TextTower
from training.registry import ensure_experiment
from training.serving_api import SearchModel


def test_run_logs_params_metrics_lineage_and_registers_challenger(mlflow_params, data_root, tmp_path):
    with tracking.start_run(mlflow_params, "retail", "aug", root=data_root) as run:
        digests = run.log_datasets(lineage(data_root, "retail", "aug"))
        for step in range(1200):  # > one batch: must arrive complete through log_batch
            run.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        run.log_metrics({"valid/ndcg@10": 0.25})
        time.sleep(1.2)  # let the system-metrics sampler (0.5 s) report at least once
        version = run.log_model(
            tiny_model_dir(tmp_path / "model", 0.5),
            python_model=TinyPyfunc(),
            input_example=pd.DataFrame({"history": [["a", "b"], ["a"]]}),
        )

    client = MlflowClient()
    logged = client.get_run(run.run_id)
    assert logged.data.params["promote.margin"] == str(mlflow_params.promote.margin)
    assert logged.data.params["mlflow.experiment"] == "shopaug"
    assert logged.data.tags["variant"] == "aug" and logged.data.tags["git_commit"]
    assert logged.data.tags["synthetic_generators"] == "cf_interactions"
    assert len(client.get_metric_history(run.run_id, "train/loss")) == 1200
    assert logged.data.metrics["valid/ndcg_at_10"] == pytest.approx(0.25)
    assert any(key.startswith("system/") for key in logged.data.metrics), sorted(logged.data.metrics)

    inputs = {d.dataset.name: d for d in logged.inputs.dataset_inputs}
    assert {"retail-train", "retail-valid", "retail-fused-aug", "synthetic-cf_interactions"} <= set(inputs)
    # digest from dvc.lock where it has the file, else the file's md5
    assert inputs["retail-fused-aug"].dataset.digest == "0123456789abcdef0123456789abcdef"
    train_md5 = tracking.file_md5(data_root / "data/splits/retail/train.parquet")
    assert inputs["retail-train"].dataset.digest == train_md5
    synthetic = inputs["synthetic-cf_interactions"].dataset
    assert digests["data/synthetic/cf_interactions/rows.parquet"] == synthetic.digest
    assert '"data/fused/retail/aug/train.parquet"' in inputs["retail-fused-aug"].dataset.source
    artifacts = {a.path for a in client.list_artifacts(run.run_id, "lineage/manifests")}
    assert artifacts == {"lineage/manifests/cf_interactions.manifest.json"}

    assert str(version.version) == "1" and version.name == "shopaug-recommender"
    by_alias = client.get_model_version_by_alias("shopaug-recommender", "challenger")
    assert str(by_alias.version) == "1" and by_alias.run_id == run.run_id
    assert by_alias.tags["variant"] == "aug" and by_alias.tags["synthetic_generators"] == "cf_interactions"
    loaded = mlflow.pyfunc.load_model("models:/shopaug-recommender@challenger")
    assert loaded.metadata.signature is not None
    assert loaded.predict(pd.DataFrame({"history": [["a"]]})).shape == (1, 4)
    assert (model_store.download_model_dir("models:/shopaug-recommender@challenger") / "quality.json").exists()

    traced = tracking.trace("models:/shopaug-recommender@challenger")
    assert traced["run"]["run_id"] == run.run_id
    assert traced["generators"]["cf_interactions"]["params"] == {"per_user": 5}
    assert {d["source"] for d in traced["datasets"]} >= {"data/fused/retail/aug/train.parquet"}


def test_unregistered_variant_moves_no_alias(mlflow_params, data_root, tmp_path):
    with tracking.start_run(mlflow_params, "search", "noaug", root=data_root) as run:
        result = run.log_model(
            tiny_model_dir(tmp_path / "m", 0.1),
            python_model=TinyPyfunc(),
            input_example=pd.DataFrame({"query": ["drill"]}),
        )
    assert result is None and run.model_uri
    assert MlflowClient().search_registered_models() == []


def test_failed_block_marks_run_failed_and_flushes_metrics(mlflow_params, data_root):
    run_cm = tracking.start_run(mlflow_params, "retail", "aug", root=data_root)
    with pytest.raises(RuntimeError), run_cm as run:
        run.log_metrics({"train/loss": 0.5}, step=0)
        raise RuntimeError("boom")
    logged = MlflowClient().get_run(run.run_id)
    assert logged.info.status == "FAILED" and logged.data.metrics["train/loss"] == 0.5


def test_file_inside_a_dvc_tracked_folder_gets_its_dvc_hash(tmp_path):
    def dvc(*args):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, check=True, capture_output=True)

    dvc("init", "--no-scm")
    dvc("stage", "add", "-n", "make", "-o", "out", "mkdir -p out/sub && echo hello > out/sub/a.txt")
    dvc("repro")
    inside = tmp_path / "out" / "sub" / "a.txt"
    assert tracking.dataset_digest(inside, tmp_path) == (tracking.file_md5(inside), "dvc.lock")
    outside = tmp_path / "loose.txt"
    outside.write_text("not tracked\n")
    assert tracking.dataset_digest(outside, tmp_path) == (tracking.file_md5(outside), "md5")


def test_relative_sqlite_uri_resolves_against_repo_and_env_wins(mlflow_params, monkeypatch, tmp_path):
    assert registry.resolve_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert registry.resolve_uri("http://mlflow:5000") == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    tracking_uri, registry_uri = registry.configure(mlflow_params.mlflow)
    assert tracking_uri == registry_uri == f"sqlite:///{tmp_path / 'other.db'}"


def test_a_dvc_experiment_in_a_temporary_copy_logs_to_the_workspace_mlflow_store(tmp_path):
    """`dvc exp run --temp` (as a queued run) works in a copy under .dvc/tmp; its run must land in the user's
    mlflow.db, not in the copy that DVC deletes afterwards."""
    log_run = (
        "import mlflow; from training.registry import resolve_uri; "
        "mlflow.set_tracking_uri(resolve_uri('sqlite:///mlflow.db')); "
        "mlflow.start_run(); mlflow.log_metric('ndcg', 0.5); mlflow.end_run()"
    )
    workspace = tmp_path / "shop"
    workspace.mkdir()
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))} | git

    def run(*args):
        subprocess.run(args, cwd=workspace, env=env, check=True, capture_output=True, timeout=300)

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    (workspace / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"log": {"cmd": f'{sys.executable} -c "{log_run}"'}}})
    )
    (workspace / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "toy")
    run(sys.executable, "-m", "dvc", "exp", "run", "--temp")
    runs = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}").search_runs(experiment_ids=["0"])
    assert [r.data.metrics["ndcg"] for r in runs] == [0.5]


def test_unknown_task_and_bad_model_uri_are_refused(mlflow_params):
    with pytest.raises(ShopError, match="task 'books'"):
        get_task("books").registered_model(mlflow_params.mlflow)
    with pytest.raises(ShopError, match="expected models:/"):
        registry.resolve_version("runs:/abc/model")


def tiny_search_model() -> SearchModel:
    items = pd.DataFrame(
        {
            "item_id": ["1", "2"],
            "title": ["cordless drill", "white paint"],
            "description": "",
            "category": "",
            "price": 1.0,
        }
    )
    config = {
        "name": "tiny",
        "shared_items": True,
        "encoder": "minilm",
        "query_max_length": 16,
        "item_max_length": 16,
        "variant": "aug",
    }
    return SearchModel(BiEncoder(TextTower("minilm", 16), True, 0.05), items, config, None)


QUERIES = ["drill", "paint for walls"]


def test_real_search_model_round_trips_through_registry(mlflow_params, data_root, tmp_path):
    """The training code's own model folder, logged by the default pyfunc wrapper, loads back by alias."""
    model = tiny_search_model()
    folder = save_model(model, tmp_path / "search-model")
    with tracking.start_run(mlflow_params, "search", "aug", root=data_root) as run:
        version = run.log_model(folder, "search")

    uri = "models:/shopaug-search@challenger"
    assert str(version.version) == "1" and tracking.run_record(folder)["version"] == "1"
    loaded = load_model(uri)
    np.testing.assert_allclose(loaded.encode_queries(QUERIES), model.encode_queries(QUERIES), atol=1e-5)
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert pyfunc.metadata.signature.inputs.input_names() == ["query"]
    np.testing.assert_allclose(
        pyfunc.predict(pd.DataFrame({"query": QUERIES})), model.encode_queries(QUERIES), atol=1e-5
    )


def test_mlflow_models_serve_answers_from_the_registered_model_outside_the_repository(
    mlflow_params, data_root, tmp_path
):
    """`mlflow models serve -m models:/...@alias` (the local environment, started in a folder outside the
    repository): the logged model carries its code (`code_paths`) and pinned requirements, and /invocations
    answers what the model computes here. (This environment has the project installed too; the logged code
    comes first on the model's path.)"""
    model = tiny_search_model()
    folder = save_model(model, tmp_path / "search-model")
    with tracking.start_run(mlflow_params, "search", "aug", root=data_root) as run:
        run.log_model(folder, "search")
    uri = "models:/shopaug-search@challenger"
    logged = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "logged")))
    for package in tracking.CODE_PACKAGES:
        assert (logged / "code" / package / "__init__.py").is_file()
    requirements = (logged / "requirements.txt").read_text()
    assert all(f"{name}==" in requirements for name in ("feast", "bm25s", "nltk", "peft", "torch", "mlflow"))

    elsewhere, port = tmp_path / "elsewhere", free_port()
    elsewhere.mkdir()
    bin_dir = Path(sys.executable).parent  # mlflow execs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_params.mlflow.tracking_uri, "HF_HUB_OFFLINE": "1"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([*command, "-p", str(port)], cwd=elsewhere, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(1)
        body = {"dataframe_split": {"columns": ["query"], "data": [[q] for q in QUERIES]}}
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert response.status_code == 200, response.text
        served = np.asarray(response.json()["predictions"], dtype=np.float32)
        np.testing.assert_allclose(served, model.encode_queries(QUERIES), atol=1e-5)
        bad = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_split": {"columns": ["x"]}})
        assert 400 <= bad.status_code < 500
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_train_stage_run_covers_training_with_live_step_and_system_metrics(mlflow_params, tmp_path):
    """`python -m training.train` opens its MLflow run before training: step metrics arrive while it trains
    (their timestamps spread over the training), system metrics are sampled, and the model is logged to it."""
    root = search_slice(tmp_path)
    tiny = {"trainable_layers": 1, "max_seq_len": 16, "batch_size": 16, "max_steps": 20, "eval_every": 10}
    params = mlflow_params.model_dump(mode="json")
    params["train"]["search"].update(tiny)
    params["train"]["cache_dir"] = str(tmp_path / "cache")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    splits, out = root / "data/splits/search", tmp_path / "model"
    args = ["--params", str(params_file), "--task", "search", "--variant", "noaug"]
    args += ["--data", str(root / "data/fused/search/noaug"), "--splits", str(splits)]
    args += ["--canonical", str(root / "data/canonical/search"), "--out", str(out)]
    args += ["--metrics", str(tmp_path / "train.json"), "--checkpoints", str(tmp_path / "ckpt")]
    args += ["--curves", str(tmp_path / "curves")]
    result = CliRunner().invoke(train.app, args)
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    (run,) = client.search_runs([ensure_experiment(mlflow_params.mlflow)], "tags.task = 'search'")
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == list(range(1, 21))
    assert run.info.start_time <= losses[0].timestamp < losses[-1].timestamp  # logged live, not after the fact
    assert len(client.get_metric_history(run.info.run_id, "train/valid")) == 2
    assert any(key.startswith("system/") for key in run.data.metrics)
    assert "train/train_seconds" in run.data.metrics and tracking.run_record(out)["run_id"] == run.info.run_id
    loss, valid = (json.loads((tmp_path / "curves" / f"{n}.json").read_text()) for n in ("loss", "valid"))
    assert [r["step"] for r in loss] == list(range(1, 21))  # what dvc.yaml's training-curve plots read
    assert [sorted(r) for r in valid] == [["step", "valid_ndcg@10"]] * 2


def test_params_win_over_uris_mlflow_itself_exported(mlflow_params, tmp_path):
    first, _ = registry.configure(mlflow_params.mlflow)
    other = mlflow_params.model_copy(
        update={
            "mlflow": mlflow_params.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path / 'second.db'}"})
        }
    )
    second, registry_uri = registry.configure(other.mlflow)
    assert first.endswith("mlflow.db") and second.endswith("second.db") and registry_uri == second
