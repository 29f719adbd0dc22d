"""The run folder's owner (core/runs.py): its readers on a folder written by hand."""

from __future__ import annotations

import json

import pandas as pd

from napari_ssl_radiomics.core.runs import (
    CHECKPOINT,
    CONFIG_JSON,
    HEALTH_CSV,
    HISTORY_CSV,
    RunFolder,
    parse_ids,
    runs_in,
)


def _run(folder, mode="se"):
    folder.mkdir(parents=True)
    (folder / CHECKPOINT).write_bytes(b"weights")
    (folder / CONFIG_JSON).write_text(json.dumps({"config": {"train": {"mode": mode}}}), encoding="utf-8")
    pd.DataFrame(
        {
            "iteration": [1, 2, 3],
            "phase": ["vanilla", "se", "se"],
            "loss": [-0.1, -0.2, -0.3],
            "selected_ids": ['["a", "b"]', '["c", "d"]', "e;f"],
        }
    ).to_csv(folder / HISTORY_CSV, index=False)
    return RunFolder(folder)


def test_readers_name_and_batches(tmp_path):
    run = _run(tmp_path / "runs" / "se")
    assert run.has_checkpoint and run.steps_done() == 3 and run.health() is None
    assert run.mode == "se" and run.display_name == "3DSiam+SE"
    assert RunFolder.of(run.checkpoint) == run  # a checkpoint names its folder
    batches = run.selected_batches()  # the vanilla warm-up's random batch is not the module's
    assert batches["iteration"].tolist() == [2, 3] and batches["ids"].tolist() == [["c", "d"], ["e", "f"]]
    pd.DataFrame({"iteration": [0], "effective_rank": [5.0]}).to_csv(run.health_csv, index=False)
    assert run.path / HEALTH_CSV == run.health_csv and len(run.health()) == 1
    assert list(runs_in(tmp_path / "runs")) == ["se"]


def test_missing_files_and_next_free(tmp_path):
    empty = RunFolder(tmp_path / "none")
    assert empty.steps_done() == 0 and empty.selected_batches().empty and empty.display_name == "SSL"
    assert RunFolder.next_free(tmp_path, "re").path == tmp_path / "re"
    _run(tmp_path / "re", "re")
    _run(tmp_path / "re-2", "re")
    assert RunFolder.next_free(tmp_path, "re").path == tmp_path / "re-3"
    assert parse_ids(float("nan")) == [] and parse_ids("") == [] and parse_ids("x,y") == ["x", "y"]
