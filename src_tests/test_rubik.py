"""The Rubik's-cube baseline (core/rubik.py, ``TrainConfig.method = "rubik"``).

Real torch on tiny volumes: the permutation set, the puzzle's round trip, a few learning
steps through the training engine, and the faces (CLI train → embed, YAML, pipeline rows).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_train_engine import make_cache  # the shared synthetic-cache fixture

from napari_ssl_radiomics import config as C
from napari_ssl_radiomics.cli import main
from napari_ssl_radiomics.core import rubik
from napari_ssl_radiomics.core.cache import CASE_COLUMNS, write_crop
from napari_ssl_radiomics.core.checkpoint import load_model
from napari_ssl_radiomics.core.pipeline import mode_settings
from napari_ssl_radiomics.core.runs import CHECKPOINT, RunFolder
from napari_ssl_radiomics.core.train import _config_mismatch, run_to_end, train
from napari_ssl_radiomics.core.utils import write_csv

OFF = C.AugmentConfig(rotation_p=0, scale_p=0, shift_p=0, gamma_p=0, sharpen_p=0, blur_p=0, noise_p=0)


def test_permutation_set_is_deterministic_and_as_distant_as_the_greedy_promises():
    perms = rubik.permutation_set(100)
    again = rubik.permutation_set.__wrapped__(100)  # computed afresh, not from the cache
    assert np.array_equal(perms, again)
    assert perms.shape == (100, 8)
    assert all(sorted(row) == list(range(8)) for row in perms.tolist())
    pairwise = min(int((a != b).sum()) for a, b in itertools.combinations(perms, 2))
    assert rubik.min_distance(perms) == pairwise
    # greedy max-min: the first 8 are pairwise all-different (a Latin square exists), 100 keep 6 of 8
    assert rubik.min_distance(rubik.permutation_set(8)) == 8
    assert pairwise >= 6
    rng = np.random.default_rng(0)
    assert rubik.min_distance(np.array([rng.permutation(8) for _ in range(100)])) < pairwise


def test_a_puzzle_is_undone_by_its_labels():
    size = 64  # sub-cubes of 28³ (>= 27): no resizing, so the voxels themselves can be found again
    x = torch.rand(3, 2, size, size, size)
    perms = torch.from_numpy(rubik.permutation_set(10)).long()
    edge, offset = rubik.cube_geometry(size, 0.125)
    cubes, labels, rotations = rubik.make_puzzle(x, perms, 0.125, torch.Generator().manual_seed(0))
    assert cubes.shape == (3, 8, 2, edge, edge, edge) and edge >= 27
    assert rotations.shape == (3, 8, 2) and (rotations.sum(dim=2) <= 1).all() and rotations.sum() > 0
    restored = rubik.unscramble(cubes, perms[labels], rotations)
    assert not torch.equal(restored, cubes)
    cell = size // 2
    for b in range(3):
        for i, (d, h, w) in enumerate(itertools.product((0, 1), repeat=3)):
            # the restored cube i is x's cell (d, h, w) at one offset within the gap
            found = [
                (od, oh, ow)
                for od, oh, ow in itertools.product(range(offset + 1), repeat=3)
                if torch.equal(
                    restored[b, i],
                    x[b, :, d * cell + od :, h * cell + oh :, w * cell + ow :][:, :edge, :edge, :edge],
                )
            ]
            assert len(found) == 1


def test_rotations_are_180_degrees_and_their_own_inverse():
    cube = torch.arange(27.0).reshape(1, 3, 3, 3)
    for direction in (0, 1):
        turned = rubik.rotate(cube, direction)
        assert not torch.equal(turned, cube) and torch.equal(rubik.rotate(turned, direction), cube)
    # horizontal: in-plane (H, W) rotation, each axial slice kept; vertical: about W, the W profile kept
    assert torch.equal(rubik.rotate(cube, 0)[0, 0], torch.rot90(cube[0, 0], 2))
    assert torch.equal(rubik.rotate(cube, 1)[0, :, :, 0], torch.rot90(cube[0, :, :, 0], 2))


def test_small_crops_with_a_wide_gap_are_refused(tmp_path):
    cache = make_cache(tmp_path / "cache", cases=4, size=27)
    cfg = C.TrainConfig(method="rubik", mode="none", rubik_gap=0.75, iterations=1, device="cpu", batch_size=2)
    with pytest.raises(ValueError, match="rubik_gap = 0.75"):
        run_to_end(train(cache, tmp_path / "run", cfg, OFF))
    assert not (tmp_path / "run").exists()


def ramp_cache(root: Path, cases: int, size: int = 28) -> Path:
    """Crops whose intensity ramps differently along D, H and W: each cube's place and turn show."""
    rng = np.random.default_rng(0)
    d, h, w = np.mgrid[:size, :size, :size] / size
    rows = []
    for i in range(cases):
        image = 30 + 60 * d + 120 * h + 30 * w + rng.normal(0, 4, d.shape) + rng.uniform(-10, 10)
        write_crop(root, f"c{i}", np.clip(image, 0, 255)[None].astype(np.float32), np.ones(d.shape, np.uint8), {})
        rows.append({"ID": f"c{i}", "Label": "", "Group": "", "status": "ok", "reason": "", "file": f"crops/c{i}.npz"})
    write_csv(root / "cases.csv", pd.DataFrame(rows, columns=CASE_COLUMNS))
    return root


def puzzle_loss(model: torch.nn.Module, x: torch.Tensor, perms: torch.Tensor) -> float:
    """The mean puzzle loss of ``model`` on fixed puzzles of ``x`` (batch statistics, no gradient)."""
    cubes, labels, rotations = rubik.make_puzzle(x, perms, 0.125, torch.Generator().manual_seed(123))
    model.train()
    with torch.no_grad():
        return float(rubik.rubik_loss(*model(cubes.flatten(0, 1))[:2], labels, rotations).mean())


@pytest.mark.learning
def test_a_few_rubik_steps_learn_a_solvable_puzzle(tmp_path, torch_threads):
    cache = ramp_cache(tmp_path / "cache", cases=6)
    cfg = C.TrainConfig(
        method="rubik",
        mode="none",
        rubik_permutations=2,
        iterations=10,
        batch_size=2,
        optimizer="adam",
        lr=1e-3,
        schedule="constant",
        lr_warmup=0,
        health_cases=0,
        device="cpu",
    )
    run_to_end(train(cache, tmp_path / "run", cfg, OFF))
    trained = load_model(tmp_path / "run")
    torch.manual_seed(cfg.seed)  # the engine's initialisation: the untrained network of the same run
    untrained = rubik.RubikNet(1, permutations=2)
    from napari_ssl_radiomics.core.cache import load_prepared

    x = torch.from_numpy(np.asarray(load_prepared(cache).images[:4], dtype=np.float32))
    perms = torch.from_numpy(rubik.permutation_set(2)).long()
    before, after = puzzle_loss(untrained, x, perms), puzzle_loss(trained, x, perms)
    assert after < before - 0.3, (before, after)


def test_a_resumed_rubik_run_equals_an_uninterrupted_one(tmp_path):
    cache = make_cache(tmp_path / "cache", cases=4, size=28)
    cfg = C.TrainConfig(method="rubik", mode="none", iterations=3, batch_size=2, health_cases=0, device="cpu")
    whole = run_to_end(train(cache, tmp_path / "whole", cfg, C.AugmentConfig())).history["loss"]
    gen = train(cache, tmp_path / "parts", cfg, C.AugmentConfig())
    assert next(gen).kind == "step"  # no probe set (health_cases 0): the first event is step 1
    gen.close()  # closing between steps writes a checkpoint
    assert torch.load(tmp_path / "parts" / CHECKPOINT, weights_only=False)["iteration"] == 1
    parts = run_to_end(train(cache, tmp_path / "parts", cfg, C.AugmentConfig(), resume=True)).history["loss"]
    # the puzzle's draws (offsets, classes, turns) come from the checkpointed generator
    assert parts.tolist() == whole.tolist()


def test_cli_trains_rubik_and_embed_exports_256_features(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache", cases=4, size=28)
    run = tmp_path / "run"
    args = ["train", str(cache), "--out", str(run), "--method", "rubik", "--mode", "none", "--iterations", "1"]
    assert main([*args, "--batch-size", "2", "--health-cases", "0", "--device", "cpu", "--no-progress"]) == 0
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    assert ckpt["model_args"]["method"] == "rubik" and ckpt["train"]["method"] == "rubik"
    assert RunFolder(run).display_name == "Rubik's cube"
    assert isinstance(load_model(run), rubik.RubikNet)
    out = tmp_path / "ssl.csv"
    assert main(["embed", str(run), str(cache), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    table = pd.read_csv(out)
    assert table.shape == (4, 257) and np.isfinite(table.iloc[:, 1:].to_numpy()).all()
    assert table.iloc[:, 1:].std(axis=0).max() > 0  # the cases differ: a real encoding, not a constant


def test_yaml_accepts_the_rubik_method_and_row(tmp_path):
    path = tmp_path / "c.yaml"
    settings = {"train": {"method": "rubik", "rubik_permutations": 24}, "modes": ["none", "rubik"]}
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    cfg = C.load_yaml(path)
    assert (cfg.train.method, cfg.train.rubik_permutations, cfg.modes) == ("rubik", 24, ("none", "rubik"))
    row = mode_settings(cfg.train, "rubik")
    assert (row.method, row.mode) == ("rubik", "none")
    assert mode_settings(cfg.train, "se").method == "siam"
    path.write_text(yaml.safe_dump({"train": {"method": "jigsaw"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="TrainConfig.method"):
        C.load_yaml(path)


def test_a_run_recorded_before_the_method_setting_resumes_as_3dsiam():
    given = C.to_dict(C.TrainConfig())
    saved = {k: v for k, v in given.items() if k not in ("method", "rubik_permutations", "rubik_gap")}
    assert _config_mismatch(saved, given, "train") is None
    assert "train.method" in _config_mismatch(saved, {**given, "method": "rubik"}, "train")


def test_the_pipeline_refuses_a_second_place_for_the_method(tmp_path):
    from napari_ssl_radiomics.core.pipeline import run_all

    cfg = C.PipelineConfig(out=str(tmp_path / "out"), train=C.TrainConfig(method="rubik"))
    with pytest.raises(ValueError, match="add 'rubik' to modes"):
        run_all(cfg)


def test_the_training_dock_form_offers_the_method(qtbot):
    pytest.importorskip("magicgui")
    from magicgui.widgets import ComboBox

    from napari_ssl_radiomics.widgets._form import ConfigForm

    form = ConfigForm(C.TrainConfig())
    qtbot.addWidget(form)
    box = form.controls["method"]
    assert isinstance(box, ComboBox) and set(box.choices) == {"siam", "rubik"}
    box.value = "rubik"
    assert form.value().method == "rubik"


def test_the_pipeline_adds_the_rubik_row_to_table_2(tmp_path):
    from napari_ssl_radiomics.core.pipeline import run_all

    cfg = C.PipelineConfig(out=str(tmp_path / "out"), modes=("none", "rubik"), supervised=False)
    cfg.sample = C.SampleConfig(cases=12, size=30, seed=3)
    cfg.prepare = C.PrepareConfig(size=28)
    cfg.train = C.TrainConfig(iterations=1, batch_size=2, health_cases=0, device="cpu")
    cfg.radiomics = C.RadiomicsConfig(jobs=1)
    cfg.evaluate = C.EvaluateConfig(folds=2, label_fractions=(1.0,), group="")
    result = run_all(cfg)
    run = tmp_path / "out" / "runs" / "rubik"
    assert torch.load(run / CHECKPOINT, weights_only=False)["train"]["mode"] == "none"
    assert RunFolder(run).display_name == "Rubik's cube"
    sets = set(result.results["feature_set"])
    assert {"Rubik's cube", "Trad.+Rubik's cube"} <= sets
    comparisons = pd.read_csv(tmp_path / "out" / "evaluation" / "comparisons.csv")
    pairs = set(zip(comparisons["feature_set"], comparisons["reference"]))
    assert {("3DSiam", "Rubik's cube"), ("Trad.+3DSiam", "Trad.+Rubik's cube")} <= pairs
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "3DSiam against the Rubik's-cube baseline" in report and "training_curves.png" in report


def test_3dsiam_is_compared_with_the_rubik_baseline_in_its_own_table():
    from napari_ssl_radiomics.core.compare import BASELINE, comparison_markdown, default_pairs
    from napari_ssl_radiomics.core.runs import MODE_NAMES

    assert MODE_NAMES["rubik"] == BASELINE  # the pipeline names the row as the comparison expects it
    names = ["Trad.", "3DSiam", "3DSiam+SE", "Rubik's cube", "Trad.+3DSiam", "Trad.+3DSiam+SE", "Trad.+Rubik's cube"]
    pairs = default_pairs(names)
    assert ("3DSiam+SE", "Rubik's cube") in pairs and ("Trad.+3DSiam+SE", "Trad.+Rubik's cube") in pairs
    assert ("Rubik's cube", "Rubik's cube") not in pairs and ("Trad.+3DSiam", "Rubik's cube") not in pairs
    row = {"label_fraction": 1.0, "metric": "auc", "mean_feature_set": 0.7, "mean_reference": 0.6}
    comp = pd.DataFrame(
        [
            {**row, "feature_set": "3DSiam", "reference": "Rubik's cube", "difference": 0.1, "ci_low": 0.0},
            {**row, "feature_set": "3DSiam+SE", "reference": "3DSiam", "difference": 0.0, "ci_low": -0.1},
        ]
    ).assign(ci_high=0.2, p_value=0.04, n_folds=5, note="")
    text = comparison_markdown(comp.assign(metric=["auc", "minor_recall"]))
    baseline_table = text.split("Rubik's-cube baseline")[1].split("####")[0]
    assert "| 3DSiam | Rubik's cube |" in baseline_table and "| 3DSiam+SE | 3DSiam |" not in baseline_table


def test_rubik_trains_in_channels_last_3d(tmp_path):
    cache = make_cache(tmp_path / "cache", cases=4, size=28)
    cfg = C.TrainConfig(method="rubik", mode="none", iterations=1, batch_size=2, health_cases=0, device="cpu")
    result = run_to_end(train(cache, tmp_path / "run", cfg, OFF, channels_last=True))
    assert np.isfinite(result.history["loss"]).all()


def test_re_runs_on_the_rubik_loss_and_records_its_weights(tmp_path):
    cache = make_cache(tmp_path / "cache", cases=6, size=28)
    cfg = C.TrainConfig(
        method="rubik", mode="re", clusters=2, warmup_epochs=0, iterations=1, batch_size=6, health_cases=0, device="cpu"
    )
    history = run_to_end(train(cache, tmp_path / "run", cfg, OFF)).history
    assert history["phase"].tolist() == ["re"]
    weights = json.loads(history["weights"][0])
    sizes = json.loads(history["cluster_sizes"][0])
    # RE's N/f_j weights per case (the puzzle's loss is per case): unequal exactly when the clusters are
    assert len(weights) == 6 and sum(sizes) == 6
    assert (len(set(weights)) > 1) == (len(set(sizes)) > 1)
    assert np.isfinite(history["loss"][0])
