"""The line each DVC stage prints: its expected time (this machine's last run, else the reference), then its time."""

import json
import logging

from core import stage_times


def test_a_stage_expects_the_reference_then_its_own_last_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(stage_times, "LOCAL", tmp_path / "cache" / "stage_times.json")
    monkeypatch.setattr(stage_times, "REFERENCE", tmp_path / "reference.json")
    (tmp_path / "reference.json").write_text(json.dumps({"train@search-aug": 168.0}))
    monkeypatch.setenv("DVC_STAGE", "train@search-aug")
    with caplog.at_level(logging.INFO, logger="stage"):
        stage = stage_times.started()
        stage_times.finished(stage, 95.0)
        stage_times.started()
    assert [r.getMessage() for r in caplog.records] == [
        "stage train@search-aug: started, expected about 2.8 min (reference: default params, 2 CPU cores)",
        "stage train@search-aug: done in 1.6 min",
        "stage train@search-aug: started, expected about 1.6 min (its last run here)",
    ]
    assert stage_times.expected("features") == "no expected time (not measured yet)"


def test_an_unreadable_record_or_no_dvc_stage_never_stops_a_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_times, "LOCAL", tmp_path / "stage_times.json")
    monkeypatch.setattr(stage_times, "REFERENCE", tmp_path / "missing.json")
    (tmp_path / "stage_times.json").write_text("{not json")
    assert stage_times.expected("fuse") == "no expected time (not measured yet)"
    stage_times.finished("fuse", 12.0)  # replaces the corrupt record
    assert json.loads((tmp_path / "stage_times.json").read_text()) == {"fuse": 12.0}
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert stage_times.started() is None
