"""The one config definition: YAML round trip, CLI flags, and errors that name the setting."""

from __future__ import annotations

import argparse

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
        for f in section.__dataclass_fields__.values():
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
