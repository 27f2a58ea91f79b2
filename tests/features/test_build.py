"""The `features` stage command: --help, a tiny full run (tables, apply, materialise), clear input errors."""

import json
import os
import subprocess
import sys

import pytest

from core.errors import ShopError
from core.paths import repo_root
from features.build import main
from features.client import OnlineFeatureClient
from features.store import open_store


def _env() -> dict:
    return {**os.environ, "SHOP_FEAST_CONFIG": ""}


def test_help_lists_the_options():
    done = subprocess.run(
        [sys.executable, "-m", "features.build", "--help"],
        capture_output=True,
        text=True,
        cwd=repo_root(),
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 0
    assert "--splits" in done.stdout and "--config" in done.stdout


def test_stage_command_builds_tables_and_online_store(tmp_path, data):
    interactions, items, users = data
    for name, frame in (("train", interactions), ("items", items), ("users", users)):
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    (tmp_path / "features").mkdir()
    config = tmp_path / "features" / "feature_store.yaml"
    config.write_text((repo_root() / "features" / "feature_store.yaml").read_text())
    main(
        params=repo_root() / "params.yaml",
        splits=tmp_path,
        canonical=tmp_path,
        enrichment=tmp_path / "absent",
        out=tmp_path / "data" / "features",
        config=str(config),
        online=True,
    )
    manifest = json.loads((tmp_path / "data" / "features" / "manifest.json").read_text())
    assert manifest["entities"]["users"] == interactions["user_id"].nunique()
    assert manifest["enrichment_used"] is False and manifest["timings"]["materialize_s"] >= 0
    assert (tmp_path / "data" / "feast" / "online.db").exists()
    out, defaulted = OnlineFeatureClient(open_store(config)).get_user_features(["u0"], ["frequency"])
    assert defaulted == [] and out.iloc[0]["frequency"] > 0


def test_missing_training_file_is_a_clear_error(tmp_path):
    with pytest.raises(ShopError, match="train.parquet: file not found"):
        main(
            params=repo_root() / "params.yaml",
            splits=tmp_path,
            canonical=tmp_path,
            enrichment=tmp_path / "absent",
            out=tmp_path / "out",
            config=None,
            online=False,
        )
