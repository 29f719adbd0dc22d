"""The training engine: learning, stop/resume, checkpoints, divergence, RE/SE records.

Real torch training on a tiny synthetic cache (27³ crops written with core.cache), a few
steps each. ``make_cache`` is shared with test_train_cli.py and test_embed_features.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from napari_ssl_radiomics.config import AugmentConfig, TrainConfig
from napari_ssl_radiomics.core import monitors
from napari_ssl_radiomics.core.cache import CASE_COLUMNS, load_prepared, write_crop
from napari_ssl_radiomics.core.checkpoint import load_model
from napari_ssl_radiomics.core.runs import CHECKPOINT, CONFIG_JSON, HISTORY_CSV
from napari_ssl_radiomics.core.train import (
    HISTORY_COLUMNS,
    TrainingDiverged,
    _Run,
    resolve_recipe,
    run_to_end,
    train,
)
from napari_ssl_radiomics.core.utils import write_csv

SIZE = 27  # the encoder's minimum edge: the cheapest volume it takes


def make_cache(root: Path, cases: int = 12, size: int = SIZE, seed: int = 0) -> Path:
    """A prepared cache of bright spheres (radius 4 or 9 voxels, two classes) on a noisy background."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[:size, :size, :size] - size / 2 + 0.5
    rows = []
    for i in range(cases):
        centre = rng.uniform(-3, 3, 3)[:, None, None, None]
        dist = np.sqrt(((grid - centre) ** 2).sum(axis=0))
        radius = 4 if i % 3 else 9  # an imbalanced toy: one large sphere for two small ones
        image = 40 + 160 / (1 + np.exp((dist - radius) * 1.5)) + rng.normal(0, 8, dist.shape)
        image = np.clip(image, 0, 255)[None].astype(np.float32)
        case_id = f"case{i:02d}"
        write_crop(root, case_id, image, (dist < radius).astype(np.uint8), {"toy": True})
        rows.append(
            {
                "ID": case_id,
                "Label": "large" if radius == 9 else "small",
                "Group": "",
                "status": "ok",
                "reason": "",
                "file": f"crops/{case_id}.npz",
            }
        )
    write_csv(root / "cases.csv", pd.DataFrame(rows, columns=CASE_COLUMNS))
    return root


def assert_ran_paper_with_sgd(run: Path) -> None:
    """The run recorded the paper's recipe with an explicit SGD, and its optimiser state is SGD's."""
    saved = json.loads((run / CONFIG_JSON).read_text(encoding="utf-8"))["config"]["train"]
    assert (saved["recipe"], saved["optimizer"], saved["schedule"], saved["lr_warmup"]) == (
        "paper",
        "sgd",
        "constant",
        0,
    )
    group = torch.load(run / CHECKPOINT, weights_only=False)["optimizer"]["param_groups"][0]
    assert "momentum" in group and "betas" not in group  # SGD ran, not the preset's Adam


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("cache"))


def small(**kw) -> TrainConfig:
    # no lr warm-up (a few steps only) and no health checks unless a test asks (they cost a pass)
    base = dict(
        mode="none", batch_size=4, iterations=4, device="cpu", seed=0, checkpoint_every=100, lr_warmup=0, health_cases=0
    )
    base.update(kw)
    return TrainConfig(**base)


def events(gen) -> list:
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as done:
            return out, done.value


@pytest.mark.learning
def test_loss_falls_on_a_learnable_toy_without_collapse(cache, tmp_path):
    cfg = small(mode="none", batch_size=4, iterations=12, recipe="paper")  # Adam 1e-2: 12 steps show learning
    evs, result = events(train(cache, tmp_path / "run", cfg, AugmentConfig()))
    steps = [e.row for e in evs if e.kind == "step"]
    losses = np.array([e.loss for e in steps])
    assert len(steps) == 12 and evs[-1].kind == "done" and not result.stopped
    # random init gives a cosine near 0; SimSiam pulls the two views together (about -0.6 here)
    assert losses[-4:].mean() < losses[:2].mean() - 0.3, losses
    assert min(e.collapse for e in steps) > 0.02  # healthy is about 1/sqrt(256) = 0.0625
    history = pd.read_csv(tmp_path / "run" / HISTORY_CSV)
    assert list(history.columns) == HISTORY_COLUMNS
    np.testing.assert_allclose(history["loss"], losses)
    config = json.loads((tmp_path / "run" / CONFIG_JSON).read_text(encoding="utf-8"))
    assert config["config"]["train"]["iterations"] == 12 and "torch" in config["versions"]


def test_stop_and_close_then_resume_equals_an_uninterrupted_run(tmp_path):
    # SE after one vanilla epoch (6 cases / batch 2 = 3 steps): exercises the sampler,
    # the augmentation generator, k-means seeds and the optimiser state across resumes.
    cache = make_cache(tmp_path / "cache", cases=6)
    # health checks every 2 steps: they must not disturb the trajectory (no RNG, eval mode)
    cfg = small(mode="se", clusters=2, pool=6, batch_size=2, iterations=5, health_cases=6, checkpoint_every=2)
    aug = AugmentConfig()
    _, full = events(train(cache, tmp_path / "full", cfg, aug))

    run = tmp_path / "parts"
    gen = train(cache, run, cfg, aug)
    assert [next(gen).kind for _ in range(2)] == ["progress", "health"]  # step 0: the untrained encoder
    for _ in range(2):
        assert next(gen).kind == "step"
    gen.close()  # closing between steps writes a checkpoint
    assert torch.load(run / CHECKPOINT, weights_only=False)["iteration"] == 2

    count = {"n": 0}

    def stop() -> bool:
        count["n"] += 1
        return count["n"] > 2  # asked before the resumed check's one batch and before one more step, then stop

    evs, part = events(train(cache, run, cfg, aug, resume=True, stop=stop))
    assert part.stopped and evs[-1].kind == "stopped" and evs[-1].iteration == 3
    rest_evs, rest = events(train(cache, run, cfg, aug, resume=True))
    assert not rest.stopped
    # a resumed run yields each earlier check once, in order (then the check that the close skipped at
    # step 2, then its own): a consumer that starts fresh draws them; the widget replaces what it holds
    assert [e.iteration for e in evs if e.kind == "health"] == [0, 2]
    assert [e.iteration for e in rest_evs if e.kind == "health"] == [0, 2, 4, 5]
    # bit-identical on the CPU
    assert rest.history["loss"].tolist() == full.history["loss"].tolist()
    assert rest.history["selected_ids"].tolist() == full.history["selected_ids"].tolist()
    assert pd.read_csv(run / "health.csv").equals(pd.read_csv(tmp_path / "full" / "health.csv"))
    a, b = load_model(tmp_path / "full"), load_model(run)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_se_and_re_record_clusters_weights_and_selection(cache, tmp_path):
    data = load_prepared(cache)
    cfg = small(mode="se", clusters=3, pool=9, iterations=4)  # steps 1-3 vanilla, step 4 SE
    evs, result = events(train(cache, tmp_path / "se", cfg, AugmentConfig()))
    steps = [e.row for e in evs if e.kind == "step"]
    assert [e.phase for e in steps] == ["vanilla"] * 3 + ["se"]
    assert steps[0].cluster_sizes == [] and len(steps[0].selected_ids) == 4
    se = steps[-1]
    assert sum(se.cluster_sizes) == 9 and len(se.cluster_sizes) <= 3
    assert len(set(se.selected_ids)) == 4 and set(se.selected_ids) <= set(data.ids)
    assert se.weights == [1.0] * 4
    row = result.history.iloc[-1]
    assert json.loads(row["cluster_sizes"]) == se.cluster_sizes
    assert json.loads(row["selected_ids"]) == se.selected_ids
    # every case once per vanilla epoch
    assert sorted(sum((e.selected_ids for e in steps[:3]), [])) == sorted(data.ids)

    cfg = small(mode="re", clusters=2, iterations=2, warmup_epochs=0)
    evs, result = events(train(cache, tmp_path / "re", cfg, AugmentConfig()))
    steps = [e.row for e in evs if e.kind == "step"]
    assert all(e.phase == "re" for e in steps)
    for e in steps:
        assert sum(e.cluster_sizes) == 4
        w = np.array(e.weights)
        assert w.min() == 1.0
        # N / f_j rescaled: a sample's weight is (largest cluster) / (its cluster's size)
        assert sorted(set(np.round(w, 6))) == sorted(set(np.round(max(e.cluster_sizes) / np.array(e.cluster_sizes), 6)))
    saved = pd.read_csv(tmp_path / "re" / HISTORY_CSV)
    assert [json.loads(w) for w in saved["weights"]] == [e.weights for e in steps]


def test_checkpoint_round_trips_model_and_optimiser(cache, tmp_path):
    cfg = small(iterations=2, batch_size=2)
    run_to_end(train(cache, tmp_path / "a", cfg, AugmentConfig()))
    ckpt = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)
    state = _Run(load_prepared(cache), tmp_path / "b", cfg, AugmentConfig(), ckpt)
    for name, value in ckpt["model"].items():
        assert torch.equal(state.model.state_dict()[name], value), name
    opt = state.optimizer.state_dict()
    assert opt["param_groups"] == ckpt["optimizer"]["param_groups"]
    for key, entry in ckpt["optimizer"]["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(opt["state"][key][name]), torch.as_tensor(value))
    state.save()
    again = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)
    assert again["iteration"] == 2 and again["rng"]["sampler"] == ckpt["rng"]["sampler"]
    assert torch.equal(again["rng"]["augment"], ckpt["rng"]["augment"])


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(cache, tmp_path):
    # an absurd learning rate: Adam's first step moves every weight by about lr
    cfg = small(iterations=4, lr=1e30, checkpoint_every=1, batch_size=2, optimizer="adam")
    gen = train(cache, tmp_path / "run", cfg, AugmentConfig())
    seen = []
    with pytest.raises(TrainingDiverged, match=r"diverged.*lower --lr.*fp32"):
        for event in gen:
            seen.append(event)
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    good = [e.iteration for e in seen if e.kind == "checkpoint"]
    assert good and ckpt["iteration"] == good[-1] < 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert all(math.isfinite(row["loss"]) for row in ckpt["history"])
    assert len(pd.read_csv(tmp_path / "run" / HISTORY_CSV)) == ckpt["iteration"]


def test_resume_refuses_other_settings_and_overwrites_nothing(cache, tmp_path):
    cfg = small(iterations=1, batch_size=2)
    run_to_end(train(cache, tmp_path / "run", cfg, AugmentConfig()))
    with pytest.raises(ValueError, match="already holds a training run"):
        next(train(cache, tmp_path / "run", cfg, AugmentConfig()))
    with pytest.raises(ValueError, match=r"train\.lr"):
        next(train(cache, tmp_path / "run", small(iterations=2, batch_size=2, lr=0.5), AugmentConfig(), resume=True))
    with pytest.raises(ValueError, match=r"augment\.gamma_p"):
        next(train(cache, tmp_path / "run", small(iterations=2, batch_size=2), AugmentConfig(gamma_p=0.0), resume=True))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        next(train(cache, tmp_path / "none", cfg, AugmentConfig(), resume=True))
    # iterations may be raised: the run continues where it stopped
    evs, result = events(
        train(cache, tmp_path / "run", small(iterations=2, batch_size=2), AugmentConfig(), resume=True)
    )
    assert [e.iteration for e in evs if e.kind == "step"] == [2] and len(result.history) == 2


def test_bad_cohorts_are_named(cache, tmp_path):
    data = load_prepared(cache)
    data.images[3, 0, 5, 5, 5] = np.nan
    with pytest.raises(ValueError, match="case03.*NaN"):
        next(train(data, tmp_path / "run", small(), AugmentConfig()))
    small_root = make_cache(tmp_path / "tiny", cases=3, size=20)
    with pytest.raises(ValueError, match="smaller than the encoder's minimum"):
        next(train(small_root, tmp_path / "run2", small(), AugmentConfig()))


def test_a_collapsed_representation_warns_once(tmp_path, monkeypatch):
    # identical featureless cases and no augmentation: every view is the same volume, so
    # the batch's outputs coincide and the collapse metric is 0 from the first step
    root = make_cache(tmp_path / "flat", cases=4)
    data = load_prepared(root)
    data.images[:] = 100.0
    off = AugmentConfig(rotation_p=0, scale_p=0, shift_p=0, gamma_p=0, sharpen_p=0, blur_p=0, noise_p=0)
    monkeypatch.setattr(monitors, "COLLAPSE_STEPS", 2)  # the real threshold is 50 steps
    evs, _ = events(train(data, tmp_path / "run", small(iterations=3, batch_size=2), off))
    assert all(e.row.collapse < 1e-3 for e in evs if e.kind == "step")
    warnings = [e for e in evs if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].iteration == 2 and "collapsing" in warnings[0].message


def test_recipes_paper_and_default_and_explicit_settings_win(cache, tmp_path):
    paper = resolve_recipe(TrainConfig(recipe="paper"))
    assert (paper.optimizer, paper.lr, paper.schedule, paper.lr_warmup, paper.batch_size, paper.export) == (
        "adam",
        1e-2,
        "constant",
        0,
        6,
        "head",
    )
    assert resolve_recipe(TrainConfig()) == TrainConfig()  # the default recipe is the defaults
    # a setting given another value than its default is kept; the rest follows the preset
    mixed = resolve_recipe(TrainConfig(recipe="paper", lr=1e-3, batch_size=4))
    assert (mixed.optimizer, mixed.lr, mixed.batch_size, mixed.schedule) == ("adam", 1e-3, 4, "constant")
    assert resolve_recipe(paper) == paper  # resolving twice changes nothing (resume)
    # a setting a face says was given wins even when it equals the default (--recipe paper --optimizer sgd)
    chosen = resolve_recipe(TrainConfig(recipe="paper", optimizer="sgd"), given={"recipe", "optimizer"})
    assert (chosen.optimizer, chosen.schedule, chosen.lr_warmup) == ("sgd", "constant", 0)
    assert resolve_recipe(chosen).optimizer == "sgd"  # the engine's own resolution keeps it
    assert resolve_recipe(TrainConfig(recipe="paper", optimizer="sgd")).optimizer == "adam"  # nothing said: preset
    # the engine trains what the recipe says and records the resolved settings
    cfg = small(recipe="paper", batch_size=2, iterations=3)  # lr_warmup=0 and batch 2 as given
    evs, _ = events(train(cache, tmp_path / "paper", cfg, AugmentConfig()))
    assert [e.row.lr for e in evs if e.kind == "step"] == [1e-2] * 3  # constant
    saved = json.loads((tmp_path / "paper" / CONFIG_JSON).read_text(encoding="utf-8"))["config"]["train"]
    assert (saved["optimizer"], saved["lr"], saved["schedule"]) == ("adam", 1e-2, "constant")
    state = _Run(load_prepared(cache), tmp_path / "x", resolve_recipe(cfg), AugmentConfig())
    assert isinstance(state.optimizer, torch.optim.Adam)
    # a face's resolved config goes through train() as it is: SGD trains and config.json says so
    run_to_end(train(cache, tmp_path / "sgd", resolve_recipe(cfg, given={"optimizer"}), AugmentConfig()))
    saved = json.loads((tmp_path / "sgd" / CONFIG_JSON).read_text(encoding="utf-8"))["config"]["train"]
    assert (saved["recipe"], saved["optimizer"], saved["schedule"]) == ("paper", "sgd", "constant")
    group = torch.load(tmp_path / "sgd" / CHECKPOINT, weights_only=False)["optimizer"]["param_groups"][0]
    assert "momentum" in group and "betas" not in group  # SGD's state, not Adam's
    assert "recipe_applied" not in saved  # internal: not a setting
    # the default recipe: SGD, linear warm-up, then cosine decay to 0; the predictor keeps its lr
    cfg = small(batch_size=2, iterations=8, lr_warmup=2)  # warm-up: at most a quarter of the steps
    evs, _ = events(train(cache, tmp_path / "default", cfg, AugmentConfig()))
    lrs = [e.row.lr for e in evs if e.kind == "step"]
    assert lrs[0] == pytest.approx(cfg.lr / 2) and lrs[1] == pytest.approx(cfg.lr)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    state = _Run(load_prepared(cache), tmp_path / "y", cfg, AugmentConfig())
    state.set_lr(8)
    assert isinstance(state.optimizer, torch.optim.SGD)
    assert [g["lr"] for g in state.optimizer.param_groups] == [pytest.approx(0.0, abs=1e-12), cfg.lr]


def test_backbone_export_embeds_the_global_pool(cache, tmp_path):
    from napari_ssl_radiomics.core.embed import embed

    run_to_end(train(cache, tmp_path / "run", small(iterations=1, batch_size=2, export="backbone"), AugmentConfig()))
    model = load_model(tmp_path / "run")
    data = load_prepared(cache)
    table = embed(tmp_path / "run", cache, device="cpu")
    with torch.no_grad():
        pooled = model.encoder.backbone(torch.from_numpy(data.images[:3])).numpy()
    np.testing.assert_allclose(table.iloc[:3, 1:].to_numpy(), pooled, rtol=1e-5, atol=1e-6)
    assert (pooled >= 0).all()  # after ReLU and average pooling, unlike dense8


def test_se_pool_grows_with_the_batch_and_a_pool_no_larger_is_refused(tmp_path, capsys):
    from napari_ssl_radiomics.cli import main

    cache = make_cache(tmp_path / "cache", cases=30)
    data = load_prepared(cache)

    def pool(**kw) -> int:
        return _Run(data, tmp_path / "x", small(**{"mode": "se", "clusters": 2, **kw}), AugmentConfig()).pool_size

    # the paper's k x 10 up to a batch of 6, then k x 10 x m / 6, at most the cohort; a given pool is kept
    assert [pool(batch_size=4), pool(batch_size=8), pool(batch_size=20), pool(batch_size=8, pool=9)] == [20, 27, 30, 9]
    # an SE step draws that pool and selects the batch from it
    run = _Run(data, tmp_path / "x", small(mode="se", clusters=2, batch_size=8), AugmentConfig())
    positions, _, sizes = run.plan("se", 1)
    assert sum(sizes) == 27 and len(set(positions.tolist())) == len(positions) == 8

    # a pool no larger than the batch would select nothing: refused, naming both numbers and what to do
    with pytest.raises(ValueError, match=r"pool \(--pool\) = 8 is no larger than the batch of 8.*--pool larger than 8"):
        next(train(cache, tmp_path / "a", small(mode="se", pool=8, batch_size=8), AugmentConfig()))
    six = make_cache(tmp_path / "six", cases=6)  # SE's pool is cut to the cohort: 6, the batch
    with pytest.raises(ValueError, match=r"cohort's 6 prepared cases, no larger than the batch of 6.*batch-size of 5"):
        next(train(six, tmp_path / "b", small(mode="se", batch_size=6), AugmentConfig()))
    assert pool(mode="re", pool=2, batch_size=8) == 2  # RE and vanilla draw no pool: nothing to refuse

    # the command line says it in one line, exit status 2, and trains nothing
    args = ["train", str(cache), "--out", str(tmp_path / "c"), "--mode", "se", "--pool", "8", "--batch-size", "8"]
    assert main([*args, "--device", "cpu", "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssl-radiomics train: error: TrainConfig.pool (--pool) = 8 is no"), (
        lines
    )
    assert not (tmp_path / "c" / CHECKPOINT).exists()


def test_stop_during_a_health_check_abandons_it_between_batches(tmp_path):
    """A Stop during the step-0 check waits for one embedding batch, not the whole probe set."""
    cache = make_cache(tmp_path / "cache", cases=12)
    cfg = small(mode="none", batch_size=2, iterations=4, health_cases=12, embed_batch_size=2)
    asked = {"n": 0}

    def stop() -> bool:
        asked["n"] += 1
        return asked["n"] > 2  # after two of the six batches

    evs, result = events(train(cache, tmp_path / "run", cfg, AugmentConfig(), stop=stop))
    progress = [e.message for e in evs if e.kind == "progress"]
    assert progress == [
        "health check (untrained encoder): 2 of 12 cases",
        "health check (untrained encoder): 4 of 12 cases",
    ]
    assert result.stopped and evs[-1].kind == "stopped" and evs[-1].iteration == 0
    assert not any(e.kind in ("health", "step") for e in evs)  # the check was abandoned, no step ran
    assert (tmp_path / "run" / CHECKPOINT).exists()
    # a resumed run measures the untrained encoder it never finished measuring
    evs, result = events(train(cache, tmp_path / "run", cfg, AugmentConfig(), resume=True))
    assert [e.iteration for e in evs if e.kind == "health"][0] == 0 and not result.stopped


def test_stop_during_an_se_pool_encoding_abandons_the_step_and_resume_is_exact(tmp_path):
    """A Stop while step 4 encodes its SE pool ends the run at step 3 (step 4 never updates the
    model), and the resumed run draws step 4's pool again: it equals an uninterrupted run."""
    cache = make_cache(tmp_path / "cache", cases=6)
    # one vanilla epoch (3 steps of 2), then SE over a pool of 6 encoded in three batches of 2
    cfg = small(mode="se", clusters=2, pool=6, batch_size=2, iterations=5, embed_batch_size=2)
    aug = AugmentConfig()
    _, full = events(train(cache, tmp_path / "full", cfg, aug))

    asked = {"n": 0}

    def stop() -> bool:
        asked["n"] += 1
        # asked before steps 1-4 (4 calls), then before each pool batch of step 4: true at its second
        return asked["n"] > 5

    run = tmp_path / "parts"
    evs, part = events(train(cache, run, cfg, aug, stop=stop))
    assert part.stopped and evs[-1].kind == "stopped" and evs[-1].iteration == 3
    assert [e.row.iteration for e in evs if e.kind == "step"] == [1, 2, 3]  # step 4 did not complete
    assert torch.load(run / CHECKPOINT, weights_only=False)["iteration"] == 3
    _, rest = events(train(cache, run, cfg, aug, resume=True))
    assert not rest.stopped and rest.history["iteration"].tolist() == [1, 2, 3, 4, 5]
    assert rest.history["selected_ids"].tolist() == full.history["selected_ids"].tolist()
    assert rest.history["loss"].tolist() == full.history["loss"].tolist()
    a, b = load_model(tmp_path / "full"), load_model(run)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
