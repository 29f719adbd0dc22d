"""One definition of every parameter, shared by the CLI, the widgets and the config file.

Each section is a dataclass whose fields carry a ``help`` text in their metadata. The CLI
builds its flags from these fields (:func:`add_arguments`, :func:`from_arguments`), the
widgets build their controls from them, and ``ssl-radiomics config`` prints them as a
commented YAML file (:func:`commented_yaml`). Defaults are the paper's unless a comment
says otherwise.

Recipes (:data:`RECIPES`, :func:`resolve_recipe`) are presets of TrainConfig's optimisation
settings. A setting the user chose explicitly beats the preset, even when it equals the
default: each face says which settings were given (:func:`from_arguments`: the flags on
the command line; :func:`from_dict`: the keys of the YAML file or the run's recorded config; the widget
form writes the preset into its controls, so every control is given) and resolves the recipe
there. The resolved config is marked (``TrainConfig.recipe_applied``), so the training
engine, which resolves too (for library calls), does not apply the preset a second time.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (and a list/tuple default made safe).

    Metadata keys that :func:`validate`, the CLI and the widgets all read: ``choices``
    (allowed values), ``min`` / ``max`` (inclusive bounds of a number, or of each item of a
    tuple), ``gt`` (an exclusive lower bound, for values that must be positive), ``check``
    (a function of the value returning what is wrong with it, or None).
    """
    if isinstance(default, (list, tuple)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class SampleConfig:
    """The built-in synthetic cohort (see :mod:`napari_ssl_radiomics.core.sample`)."""

    cases: int = option(48, "number of synthetic cases", min=4)
    size: int = option(48, "edge of each synthetic volume, in voxels (1 mm spacing)", min=16, max=512)
    seed: int = option(0, "seed of the generator")


@dataclass
class PrepareConfig:
    """Resampling, cropping and intensity scaling of each case (paper, section 3)."""

    spacing: float = option(1.0, "isotropic output spacing, mm", gt=0)
    size: int = option(96, "edge of the cubic crop, voxels", min=8, max=512)
    crop: str = option(
        "centroid",
        "'centroid': a cube centred on the mask's centroid (on the BoxMask's centroid when the manifest gives a "
        "BoxMask), padded with the background; "
        "'bbox': the bounding box of the mask (or of the manifest's BoxMask, e.g. the whole lung as in the "
        "paper's lung setting) plus margin, resized to the cube",
        choices=("centroid", "bbox"),
    )
    margin: float = option(10.0, "margin around the mask's bounding box for crop='bbox', mm", min=0)
    interpolator: str = option(
        "linear", "image interpolator (masks always use nearest neighbour)", choices=("linear", "bspline")
    )
    intensity: str = option(
        "percentile",
        "rescale to [0, 255] from a percentile range of the image or from a fixed window",
        choices=("percentile", "window"),
    )
    percentiles: tuple[float, float] = option(
        (0.5, 99.5), "low and high percentile for intensity='percentile'", min=0, max=100
    )
    window: tuple[float, float] = option(
        (-1000.0, 400.0), "low and high value for intensity='window' (e.g. a CT HU window)"
    )
    resample_mask: bool = option(
        False, "resample a mask whose geometry differs from the image onto the image (nearest neighbour)"
    )
    mask_label: str = option(
        "",
        "ROI label(s) of cases whose manifest gives no MaskLabel: empty (the mask's only nonzero value), "
        "a value (2), values joined by + (1+2+4: their union) or 'all' (every nonzero label: the whole "
        "tumour of a BraTS-style mask); used by prepare and radiomics alike",
    )
    tolerance: float = option(1e-3, "relative tolerance when comparing image and mask geometry", gt=0)
    jobs: int = option(1, "parallel processes for preparation (0: all cores)", min=0)


@dataclass
class AugmentConfig:
    """3D augmentations drawn independently per sample on the training device.

    Each augmentation has a range and a probability. Ranges are in the units given by
    each help text; a probability of 0 switches an augmentation off.
    """

    rotation: tuple[float, float] = option((-20.0, 20.0), "rotation about each of the three axes, degrees")
    rotation_p: float = option(1.0, "probability of rotating", min=0, max=1)
    scale: tuple[float, float] = option((0.7, 1.3), "isotropic scale factor", gt=0)
    scale_p: float = option(1.0, "probability of scaling", min=0, max=1)
    shift: tuple[float, float] = option((-0.05, 0.05), "shift along each axis, fraction of the volume's size")
    shift_p: float = option(1.0, "probability of shifting", min=0, max=1)
    zoom: tuple[float, float] = option(
        (0.5, 1.0),
        "zoom-in crop: edge of a random sub-cube inside the volume, a fraction of the volume's edge, "
        "resampled to the full size (SimSiam's random resized crop)",
        gt=0,
        max=1,
    )
    zoom_p: float = option(0.0, "probability of a zoom-in crop (0: off, the paper's augmentations)", min=0, max=1)
    gamma: tuple[float, float] = option((0.7, 1.5), "gamma exponent applied to intensities scaled to [0, 1]", gt=0)
    gamma_p: float = option(0.8, "probability of a gamma change", min=0, max=1)
    sharpen: tuple[float, float] = option((0.2, 1.0), "unsharp-mask strength (0: none)", min=0)
    sharpen_p: float = option(0.3, "probability of sharpening", min=0, max=1)
    blur: tuple[float, float] = option((0.5, 1.5), "Gaussian blur sigma, voxels", min=0)
    blur_p: float = option(0.3, "probability of blurring", min=0, max=1)
    noise: tuple[float, float] = option(
        (0.0, 10.0), "Gaussian noise standard deviation, intensity units of [0, 255]", min=0
    )
    noise_p: float = option(0.3, "probability of adding noise", min=0, max=1)


@dataclass
class TrainConfig:
    """3DSiam training with the RE/SE imbalance module.

    ``recipe`` names a preset of the optimisation settings (:data:`RECIPES`): "default" is
    this class's defaults; "paper" is the paper's literal recipe (Adam, lr 1e-2, constant,
    batch 6, dense8 exported). :func:`resolve_recipe` applies it: a setting given explicitly
    (flag, YAML key, widget control) or set to another value than its default keeps its value.
    ``recipe_applied`` is internal (no flag, YAML key or control; not in the run's recorded config): the
    recipe whose preset the values already hold, '' before resolution.
    """

    mode: str = option(
        "none",
        "imbalance module: none (vanilla 3DSiam, the default: on AdrenalMNIST3D neither module measured above it, "
        "and SE costs twice its step), re (re-weighting) or se (selection, the paper's method)",
        choices=("none", "re", "se"),
    )
    method: str = option(
        "siam",
        "pretext task: siam (3DSiam) or rubik (the Rubik's-cube baseline of Table 2, Zhuang et al. 2019: the same "
        "encoder solves a scrambled 2x2x2 cube; its classifier head is dropped at export); RE/SE (mode) apply to both",
        choices=("siam", "rubik"),
    )
    rubik_permutations: int = option(
        100,
        "method=rubik: K permutation classes of the 8 sub-cubes (maximal Hamming distance; the paper: 100)",
        min=2,
        max=40320,
    )
    rubik_gap: float = option(
        0.125,
        "method=rubik: the random gap between sub-cubes, a fraction of half the crop (at least 1 voxel)",
        min=0,
        max=0.75,
    )
    recipe: str = option(
        "default",
        "optimisation preset: 'default' (SGD with warm-up and cosine decay, measured to keep the "
        "representation alive) or 'paper' (the paper's Adam, lr 1e-2, constant, batch 6); a setting you "
        "give explicitly (flag, YAML key, widget control) wins over the preset, even when it equals the default",
        choices=("default", "paper"),
    )
    clusters: int = option(3, "k of the k-means in the RE/SE module", min=1)
    pool: int = option(
        0,
        "SE candidate pool N drawn per step, larger than the global batch m (batch size x processes); "
        "0: the paper's clusters x 10 up to m = 6, clusters x 10 x m / 6 beyond",
        min=0,
    )
    batch_size: int = option(6, "batch size m (for SE, the size of the selected batch)", min=2)
    iterations: int = option(2000, "optimisation steps", min=1)
    warmup_epochs: int = option(1, "epochs of vanilla training before RE/SE starts (the paper: 1)", min=0)
    optimizer: str = option("sgd", "optimiser: sgd (with momentum) or adam", choices=("sgd", "adam"))
    lr: float = option(0.01, "base learning rate (the peak after the warm-up)", gt=0)
    momentum: float = option(0.9, "SGD momentum (ignored by adam)", min=0, max=0.999)
    weight_decay: float = option(1e-4, "weight decay (L2 for SGD and Adam)", min=0)
    schedule: str = option(
        "cosine",
        "learning-rate schedule after the warm-up: cosine decay to 0, or constant",
        choices=("cosine", "constant"),
    )
    lr_warmup: int = option(
        50, "steps of linear learning-rate warm-up from 0, at most a quarter of the iterations (0: none)", min=0
    )
    out_bn: bool = option(False, "end the projector with SimSiam's BN without affine parameters (Table 3: no BN)")
    vc_weight: float = option(
        0.0,
        "weight of a VICReg-style variance-covariance term on both views' z, added to 3DSiam's loss against "
        "dimensional collapse at small batch (0: off, plain 3DSiam; method=siam only)",
        min=0,
    )
    pred_hidden: int = option(64, "hidden width of the predictor MLP (SimSiam: dim / 4)", min=1)
    fix_pred_lr: bool = option(True, "keep the predictor's learning rate at its base value, not scheduled (SimSiam)")
    export: str = option(
        "head",
        "layer exported as the representation: head (dense8, as in the paper) or backbone (the 256-d global pool)",
        choices=("head", "backbone"),
    )
    health_cases: int = option(
        256,
        "cases of the fixed probe set whose embeddings are checked for collapse at every checkpoint "
        "(rank, variance share, spread; a linear probe on the cache's Label column, for monitoring "
        "only, never used for training); 0: off",
        min=0,
    )
    device: str = option("auto", "auto (CUDA when present), cuda, cuda:N or cpu")
    precision: str = option(
        "auto",
        "auto (bf16/fp16 autocast on CUDA, fp32 on the CPU), fp32, bf16 or fp16; bf16 on a CPU with "
        "native bf16 units (AVX512-BF16, AMX) is ~2x faster than fp32 but learned less at 28³ and diverged at 64³",
        choices=("auto", "fp32", "bf16", "fp16"),
    )
    seed: int = option(0, "seed of every random draw (augmentation, sampling, k-means, weights)")
    checkpoint_every: int = option(
        100, "write a checkpoint and check the representation's health every N steps (also at the end)", min=1
    )
    embed_batch_size: int = option(16, "batch size when computing representations", min=1)
    memory_gb: float = option(
        0.0,
        "GiB the cohort may take in memory (float32); a larger one is read from a memory-mapped uint8 copy of "
        "the cache (CACHE/stream/, crops rounded to whole grey levels) with read-ahead; 0: half of the RAM",
        min=0,
    )
    recipe_applied: str = field(
        default="",
        compare=False,
        repr=False,
        metadata={"internal": True, "help": "the recipe whose preset these values hold ('': not resolved yet)"},
    )


#: the settings a recipe sets; "default" is TrainConfig's own defaults
RECIPE_FIELDS = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "lr_warmup",
    "batch_size",
    "out_bn",
    "pred_hidden",
    "fix_pred_lr",
    "export",
)
RECIPES: dict[str, dict[str, Any]] = {
    "default": {name: getattr(TrainConfig(), name) for name in RECIPE_FIELDS},
    "paper": {
        "optimizer": "adam",
        "lr": 1e-2,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "constant",
        "lr_warmup": 0,
        "batch_size": 6,
        "out_bn": False,
        "pred_hidden": 64,
        "fix_pred_lr": False,
        "export": "head",
    },
}


def resolve_recipe(cfg: TrainConfig, given: Iterable[str] | None = None) -> TrainConfig:
    """``cfg`` with its recipe's preset applied to the settings the user did not choose.

    Parameters
    ----------
    cfg : the settings, ``cfg.recipe`` naming the preset
    given : names of the settings the user gave explicitly (the face knows: flags present,
        YAML keys present, widget controls). None (a library call): only a value other than
        the default can be told apart as a choice.

    Returns
    -------
    TrainConfig
        A recipe setting keeps its value when it is in ``given`` or differs from the
        default; the others take the preset's. So ``--recipe paper --optimizer sgd`` is the
        paper's recipe with SGD, and ``TrainConfig(recipe="paper")`` the paper's recipe. The
        result is marked as resolved (``recipe_applied``): resolving it again, as the
        training engine does, changes nothing, so a face's explicit choice survives the
        engine and a resumed run keeps the values its recorded config holds.
    """
    if cfg.recipe_applied == cfg.recipe:
        return cfg
    preset, default = RECIPES[cfg.recipe], RECIPES["default"]
    keep = set(given or ())
    changes = {k: v for k, v in preset.items() if k not in keep and getattr(cfg, k) == default[k]}
    return dataclasses.replace(cfg, **changes, recipe_applied=cfg.recipe)


def apply_presets(cfg: Any, given: Iterable[str] | None = None) -> Any:
    """``cfg`` with its presets resolved (:func:`resolve_recipe` for a TrainConfig), else ``cfg``."""
    return resolve_recipe(cfg, given) if isinstance(cfg, TrainConfig) else cfg


def public_fields(cfg: Any) -> list[dataclasses.Field]:
    """The fields of a config (class or instance) that users set: all but the ``internal`` ones."""
    return [f for f in dataclasses.fields(cfg) if not f.metadata.get("internal")]


@dataclass
class RadiomicsConfig:
    """Traditional features with pyradiomics."""

    params: str = option("", "a pyradiomics parameter YAML (empty: the 107 default 3D features)")
    bin_width: float = option(25.0, "pyradiomics binWidth when no params file is given", gt=0)
    jobs: int = option(0, "parallel processes (0: all cores)", min=0)


#: the protocols a Dask scheduler address may name (distributed.comm's backends)
DASK_PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
_DASK_ADDRESS = re.compile(
    r"^(?:(?P<proto>[A-Za-z0-9+.-]+)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$"
)


def scheduler_problem(address: str) -> str | None:
    """Why ``address`` is not a Dask scheduler address (None when it is, or is empty).

    Dask's form is ``PROTOCOL://HOST:PORT`` (``tcp://``, ``tls://``, ``ws://``, ``wss://``,
    ``ucx://``; ``HOST:PORT`` alone means ``tcp://``). Checked before any Dask client
    exists: a client of a malformed address lingers and prints a traceback when collected.
    """
    if not address:
        return None
    form = "give PROTOCOL://HOST:PORT, e.g. tcp://127.0.0.1:8786 (protocols: " + ", ".join(DASK_PROTOCOLS[:5]) + ")"
    if address.startswith("inproc://"):
        return None
    match = _DASK_ADDRESS.match(address.strip())
    if match is None:
        return f"not a Dask scheduler address; {form}"
    proto = (match["proto"] or "tcp").lower()
    if proto not in DASK_PROTOCOLS:
        return f"{proto}:// is not a protocol Dask speaks; {form}"
    if not 0 < int(match["port"]) < 65536:
        return f"port {match['port']} is out of range; {form}"
    return None


@dataclass
class ClusterConfig:
    """Where prepare and radiomics run their cases: this machine, or a Dask cluster."""

    scheduler: str = option(
        "",
        "Dask scheduler address (tcp://host:8786) for prepare and radiomics, one task per case; the workers must "
        "see the same files at the same paths; empty: a local process pool of --jobs processes",
        check=scheduler_problem,
    )
    timeout: float = option(
        30.0,
        "seconds to wait for the scheduler and its first worker, and for a worker again when all are lost "
        "(the cases done so far stay cached; run the command again to finish the rest)",
        gt=0,
    )


#: the SVM's C values the validation part of each training fold chooses from (the protocol's, not a setting)
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class EvaluateConfig:
    """The paper's evaluation: a linear SVM under stratified 5-fold cross-validation."""

    label: str = option("Label", "column with the class")
    group: str = option(
        "Group",
        "column with the patient, or whatever must not be split across folds (grouped folds; fewer groups "
        "than folds is refused); empty or absent: not grouped",
    )
    folds: int = option(5, "cross-validation folds", min=2)
    label_fractions: tuple[float, ...] = option(
        (1.0, 0.5), "fractions of each training fold's labels to use", gt=0, max=1
    )
    repeats: int = option(1, "repeats with other seeds (mean ± sd)", min=1)
    positive: str = option("", "the positive class for sensitivity (empty: chosen by `convention`)")
    convention: str = option(
        "minority",
        "positive class when `positive` is empty: 'minority' (the clinical convention) or 'majority' "
        "(the paper's Table 2, HGG positive: its specificity is then the minor-class recall)",
        choices=("minority", "majority"),
    )
    class_weight: bool = option(False, "weight the SVM's classes by inverse frequency")
    seed: int = option(0, "seed of the folds and of the label subsampling")
    jobs: int = option(0, "parallel processes over feature sets, folds and repeats (0: all cores)", min=0)


@dataclass
class PipelineConfig:
    """Everything that ``ssl-radiomics run`` needs, in one file."""

    cohort: str = option("", "manifest CSV or folder of the cohort (empty: the built-in sample cohort)")
    out: str = option("results", "output folder")
    modes: tuple[str, ...] = option(
        ("none", "re", "se"),
        "training modes to compare: none, re, se (3DSiam without/with the imbalance module) and rubik (the "
        "Rubik's-cube baseline, method=rubik with mode none)",
        choices=("none", "re", "se", "rubik"),
    )
    supervised: bool = option(True, "also train the supervised baseline (weighted cross-entropy)")
    supervised_iterations: int = option(500, "training steps of the supervised baseline on each training fold", min=1)
    supervised_lr: float = option(
        1e-3,
        "Adam learning rate of the supervised baseline (its own: the SSL recipe's SGD settings are tuned for "
        "the Siamese loss, not for cross-entropy)",
        gt=0,
    )
    sample: SampleConfig = field(default_factory=SampleConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    radiomics: RadiomicsConfig = field(default_factory=RadiomicsConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


SECTIONS = {
    "sample": SampleConfig,
    "prepare": PrepareConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "radiomics": RadiomicsConfig,
    "evaluate": EvaluateConfig,
    "cluster": ClusterConfig,
}


# --- conversion -------------------------------------------------------------------------


#: settings added after runs were recorded without them, with the value such a run had: a run
#: recorded without one is read as having it, and a stage key leaves it out while it holds it
ADDED_SETTINGS: dict[str, dict[str, Any]] = {
    "train": {"method": "siam", "rubik_permutations": 100, "rubik_gap": 0.125, "vc_weight": 0.0},
    "augment": {"zoom": [0.5, 1.0], "zoom_p": 0.0},
}


def key_dict(cfg: TrainConfig | AugmentConfig) -> dict:
    """:func:`to_dict` without the :data:`ADDED_SETTINGS` that hold their earlier value, so that
    a stage key computed before a setting existed stays the same."""
    added = ADDED_SETTINGS["train" if isinstance(cfg, TrainConfig) else "augment"]
    return {k: v for k, v in to_dict(cfg).items() if k not in added or added[k] != v}


def to_dict(cfg: Any) -> dict:
    """A plain dict (tuples as lists) that YAML and JSON can hold."""
    out = {}
    for f in public_fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def from_dict(cls: type, data: dict | None) -> Any:
    """Build ``cls`` from a dict, checking names and converting types.

    The keys present are the settings given: a TrainConfig's recipe is resolved with them
    (:func:`resolve_recipe`), so a YAML file's ``optimizer: sgd`` beats ``recipe: paper``.

    Raises
    ------
    ValueError
        For an unknown key (with the known ones listed) or a value of the wrong type.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in public_fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value)
        else:
            kwargs[name] = _convert(value, hint, f"{cls.__name__}.{name}")
    cfg = cls(**kwargs)
    validate(cfg)
    return apply_presets(cfg, given=data)


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            args = typing.get_args(hint)
            item = args[0]
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            return tuple(_convert(v, item, where) for v in value)
        if hint is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint in (int, float, str, bool):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return hint(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a valid {getattr(hint, '__name__', hint)}") from None
    return value


def validate(cfg: Any) -> None:
    """Check every field's ``choices`` and range (see :func:`option`); raise ValueError naming it."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value)
            continue
        problem = check_value(f, value)
        if problem:
            raise ValueError(f"{type(cfg).__name__}.{f.name} = {value!r}: {problem}")


def check_value(f: dataclasses.Field, value: Any) -> str | None:
    """Why ``value`` does not fit field ``f`` (its choices and range), or None when it does."""
    check = f.metadata.get("check")
    if check is not None and isinstance(value, str):
        return check(value)
    choices = f.metadata.get("choices")
    if choices:
        values = value if isinstance(value, tuple) else (value,)
        bad = [v for v in values if v not in choices]
        return f"choose one of {list(choices)}" if bad else None
    items = value if isinstance(value, tuple) else (value,)
    lo, hi, gt = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("gt")
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        if item != item:  # NaN
            return "must be a number, not NaN"
        if gt is not None and not item > gt:
            return f"must be greater than {gt}"
        if lo is not None and item < lo:
            return f"must be at least {lo}"
        if hi is not None and item > hi:
            return f"must be at most {hi}"
    return None


def describe_range(f: dataclasses.Field) -> str:
    """The range of a field in words, for help texts ('' when it has none)."""
    lo, hi, gt = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("gt")
    low = f"> {gt}" if gt is not None else f">= {lo}" if lo is not None else ""
    high = f"<= {hi}" if hi is not None else ""
    return ", ".join(p for p in (low, high) if p)


def load_yaml(path: str | Path) -> PipelineConfig:
    """Read a pipeline config file; missing settings take their defaults."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping of settings")
    return from_dict(PipelineConfig, data)


def dump_yaml(cfg: Any) -> str:
    """The config as YAML, without comments."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def commented_yaml(cfg: Any | None = None) -> str:
    """The config (default: the defaults) as YAML with each field's help as a comment."""
    cfg = cfg if cfg is not None else PipelineConfig()
    lines = ["# napari-ssl-radiomics pipeline configuration (ssl-radiomics run CONFIG.yaml)"]
    _commented(cfg, lines, indent="")
    return "\n".join(lines) + "\n"


def _commented(cfg: Any, lines: list[str], indent: str) -> None:
    for f in public_fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines.append("")
            lines.append(f"{indent}# {(type(value).__doc__ or '').strip().splitlines()[0]}")
            lines.append(f"{indent}{f.name}:")
            _commented(value, lines, indent + "  ")
            continue
        plain = list(value) if isinstance(value, tuple) else value
        text = yaml.safe_dump({f.name: plain}, default_flow_style=True, width=1000).strip()
        text = text[1:-1] if text.startswith("{") else text
        lines.append(f"{indent}{text}  # {f.metadata.get('help', '')}")


# --- command line -----------------------------------------------------------------------


def _boolean(text: str) -> bool:
    """A boolean flag's value; argparse shows the error after the flag's name."""
    try:
        return _convert(text, bool, "")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a choice; choose true or false (also yes/no, on/off, 1/0)"
        ) from None


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type, only: list[str] | None = None) -> None:
    """Add one flag per field of ``cls`` (or of ``only``), defaulting to None (= keep)."""
    hints = typing.get_type_hints(cls)
    for f in public_fields(cls):
        if only is not None and f.name not in only:
            continue
        hint = hints[f.name]
        kw: dict[str, Any] = {"dest": f"{cls.__name__}.{f.name}", "default": None}
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        bounds = describe_range(f)
        kw["help"] = f"{f.metadata.get('help', '')} (default: {default}{'; ' + bounds if bounds else ''})"
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        if typing.get_origin(hint) is tuple:
            kw["nargs"] = "+"
            kw["type"] = typing.get_args(hint)[0]
        elif hint is bool:
            kw["type"] = _boolean
            kw["metavar"] = "{true,false}"
        else:
            kw["type"] = hint
        parser.add_argument(flag(f.name), **kw)


def from_arguments(cfg: Any, ns: argparse.Namespace) -> Any:
    """A copy of ``cfg`` with every flag given on the command line applied.

    The flags present are the settings given: a TrainConfig's recipe is resolved with them
    (:func:`resolve_recipe`), so ``--recipe paper --optimizer sgd`` trains with SGD. A ``cfg``
    already resolved for its recipe (a resumed run's) keeps its values.
    """
    changes = {}
    prefix = type(cfg).__name__ + "."
    for key, value in vars(ns).items():
        if key.startswith(prefix) and value is not None:
            name = key[len(prefix) :]
            hint = typing.get_type_hints(type(cfg))[name]
            changes[name] = _convert(value, hint, key)
    new = dataclasses.replace(cfg, **changes)
    validate(new)
    return apply_presets(new, given=changes)
