"""The one config definition: YAML round trip, CLI flags, and errors that name the setting."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from napari_ssl_radiomics import config as C


def test_commented_yaml_round_trips_to_the_defaults(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(C.commented_yaml(), encoding="utf-8")
    assert C.load_yaml(path) == C.PipelineConfig()


def test_commented_yaml_documents_every_field():
    lines = C.commented_yaml().splitlines()
    for name, section in C.SECTIONS.items():
        start = lines.index(f"{name}:")
        block = [line for line in lines[start + 1 :] if line.startswith("  ")]
        for f in C.public_fields(section):
            line = next(line for line in block if line.strip().startswith(f"{f.name}:"))
            assert f.metadata["help"] in line


def test_partial_yaml_keeps_other_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"train": {"mode": "re", "iterations": 7}, "evaluate": {"label_fractions": [1, 0.5]}}),
        encoding="utf-8",
    )
    cfg = C.load_yaml(path)
    assert cfg.train.mode == "re" and cfg.train.iterations == 7
    assert cfg.train.lr == C.TrainConfig().lr
    assert cfg.evaluate.label_fractions == (1.0, 0.5)


def test_unknown_setting_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['iteration'\].*iterations"):
        C.from_dict(C.PipelineConfig, {"train": {"iteration": 5}})


def test_bad_choice_and_bad_type_name_the_setting():
    with pytest.raises(ValueError, match=r"TrainConfig.mode = 'se2'"):
        C.from_dict(C.TrainConfig, {"mode": "se2"})
    with pytest.raises(ValueError, match=r"TrainConfig.iterations: 'many'"):
        C.from_dict(C.TrainConfig, {"iterations": "many"})


def test_cli_flags_come_from_the_dataclass_and_override_only_what_is_given():
    parser = argparse.ArgumentParser()
    C.add_arguments(parser, C.TrainConfig)
    C.add_arguments(parser, C.AugmentConfig, only=["rotation"])
    ns = parser.parse_args(["--mode", "re", "--batch-size", "4", "--rotation", "-10", "10"])
    train = C.from_arguments(C.TrainConfig(lr=0.5), ns)
    augment = C.from_arguments(C.AugmentConfig(), ns)
    assert (train.mode, train.batch_size, train.lr) == ("re", 4, 0.5)
    assert augment.rotation == (-10.0, 10.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "bogus"])


def test_ranges_refuse_out_of_range_values_in_yaml_and_cli():
    import argparse

    from napari_ssl_radiomics.config import (
        PipelineConfig,
        TrainConfig,
        add_arguments,
        from_arguments,
        from_dict,
    )

    for section, key, value in [
        ("train", "batch_size", 0),
        ("train", "lr", 0.0),
        ("train", "checkpoint_every", 0),
        ("train", "iterations", -3),
        ("augment", "noise_p", 1.5),
        ("evaluate", "folds", 1),
        ("evaluate", "label_fractions", [0.5, 1.2]),
        ("radiomics", "bin_width", -1),
    ]:
        with pytest.raises(ValueError, match=key):
            from_dict(PipelineConfig, {section: {key: value}})
    with pytest.raises(ValueError, match="choose one of"):
        from_dict(PipelineConfig, {"modes": ["none", "foo"]})
    parser = argparse.ArgumentParser()
    add_arguments(parser, TrainConfig)
    with pytest.raises(ValueError, match="batch_size = 0: must be at least 2"):
        from_arguments(TrainConfig(), parser.parse_args(["--batch-size", "0"]))


def test_yaml_keys_beat_the_recipe_even_at_the_default_value(tmp_path):
    """`recipe: paper` with `optimizer: sgd` (the default) trains SGD; the keys left out follow the paper."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"recipe": "paper", "optimizer": "sgd", "lr": 0.01}}), encoding="utf-8")
    train = C.load_yaml(path).train
    assert (train.recipe, train.optimizer, train.lr) == ("paper", "sgd", 0.01)
    assert (train.schedule, train.lr_warmup, train.fix_pred_lr) == ("constant", 0, False)  # the paper's
    # what the pipeline does with it (one run per mode) and the engine's own resolution keep the choice
    assert C.resolve_recipe(dataclasses.replace(train, mode="re")).optimizer == "sgd"
    # no key: the preset; the library's TrainConfig(recipe="paper") is the paper's recipe
    assert C.from_dict(C.TrainConfig, {"recipe": "paper"}).optimizer == "adam"
    assert C.resolve_recipe(C.TrainConfig(recipe="paper")).optimizer == "adam"
    # resolving for the recipe it holds changes nothing; a config changed to another recipe is resolved again
    assert C.resolve_recipe(dataclasses.replace(train, recipe="default")).optimizer == "sgd"
    assert C.resolve_recipe(dataclasses.replace(C.resolve_recipe(C.TrainConfig()), recipe="paper")).optimizer == "adam"


def test_a_yaml_choice_is_what_the_engine_trains(tmp_path):
    """The pipeline's path (core/pipeline.py `train_stage`): the YAML's train section, one mode, train()."""
    from test_train_engine import assert_ran_paper_with_sgd, make_cache

    from napari_ssl_radiomics.core.events import drive
    from napari_ssl_radiomics.core.train import train

    path = tmp_path / "c.yaml"
    settings = {"recipe": "paper", "optimizer": "sgd", "iterations": 1, "batch_size": 4, "device": "cpu"}
    path.write_text(yaml.safe_dump({"train": {**settings, "health_cases": 0}}), encoding="utf-8")
    cfg = C.load_yaml(path)
    run = tmp_path / "run"
    drive(train(make_cache(tmp_path / "cache", cases=8), run, dataclasses.replace(cfg.train, mode="none"), cfg.augment))
    assert_ran_paper_with_sgd(run)


def test_cli_flags_beat_the_recipe_even_at_the_default_value():
    parser = argparse.ArgumentParser()
    C.add_arguments(parser, C.TrainConfig)
    given = C.from_arguments(C.TrainConfig(), parser.parse_args(["--recipe", "paper", "--optimizer", "sgd"]))
    assert (given.optimizer, given.schedule, given.batch_size) == ("sgd", "constant", 6)
    plain = C.from_arguments(C.TrainConfig(), parser.parse_args(["--recipe", "paper"]))
    assert plain.optimizer == "adam"
    # a run's saved settings (config.json, every key present) are kept on resume whatever the recipe
    saved = C.from_dict(C.TrainConfig, C.to_dict(given))
    assert saved == given and C.from_arguments(saved, parser.parse_args(["--iterations", "9"])).optimizer == "sgd"


def test_the_resolution_mark_is_no_setting():
    internal = "recipe_applied"
    assert internal in C.TrainConfig.__dataclass_fields__
    assert internal not in {f.name for f in C.public_fields(C.TrainConfig)}
    assert internal not in C.to_dict(C.resolve_recipe(C.TrainConfig())) and internal not in C.commented_yaml()
    parser = argparse.ArgumentParser()
    C.add_arguments(parser, C.TrainConfig)
    assert "--recipe-applied" not in parser.format_help()
    with pytest.raises(ValueError, match="unknown setting"):
        C.from_dict(C.TrainConfig, {internal: "paper"})
