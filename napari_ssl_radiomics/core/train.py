"""3DSiam training with the RE/SE imbalance module, as one generator of progress events.

:func:`train` yields a :class:`TrainEvent` after every step (and on checkpoints, warnings,
the end and a stop); the CLI's progress bar, the napari widget and the tests all consume
the same generator. A run folder holds::

    RUN/
      checkpoint.pt   model, optimiser, grad scaler, every RNG state, configs, history
      config.json     train + augment config (recipe resolved), cohort, device, processes,
                      global batch, SE's resolved pool, provenance
      history.csv     one row per step: the fields of :class:`HistoryRow`, in order
      health.csv      one row per health check (step 0 = the untrained encoder, every
                      checkpoint, the end): the fields of :class:`health.Health`

Recipes. ``TrainConfig.recipe`` names a preset of the optimisation settings (``RECIPES``).
"default" is TrainConfig's own defaults: SGD with lr 0.01, momentum 0.9, a linear warm-up then a
cosine decay, SimSiam's fixed predictor learning rate; it was chosen by the ablation in
benchmarks/README.md ("Representation quality") because it keeps the representation's rank
and linear probe where the paper's recipe collapses them. "paper" is the paper's literal
recipe: Adam, lr 1e-2, weight decay 1e-4, constant, batch 6, dense8 exported.
:func:`resolve_recipe` (defined with the settings in ``config.py``, with ``RECIPES`` and
``RECIPE_FIELDS``, and imported here) applies a preset to the settings the user did not
choose: a setting given explicitly (flag, YAML key, widget control) keeps its value even
when it equals the default. The faces resolve with what they know was given and mark the
config resolved, so :func:`train`'s own call (for library calls: ``TrainConfig(recipe=
"paper")`` is the paper's recipe) does not apply the preset over their choices. The
resolved settings are what config.json and the checkpoint record.

Health. At step 0 (the untrained encoder), at every checkpoint and at the end, a fixed,
seeded probe set of up to ``health_cases`` cases is embedded in eval mode and measured
(:mod:`health`: effective rank, first-PC share, spread, and with labels a cross-validated
linear probe). The labels come from the cache's ``Label`` column and are used only for this
monitoring: never by the loss, the sampler or RE/SE. Each check is yielded as a "health"
event (``TrainEvent.health``), written to health.csv, and a warning event is yielded when a
label-free figure (rank, first-PC share, spread) stays off for ``health.PATIENCE`` checks; the
probe is recorded and shown, never used to warn (tuning on it would tune on the test labels).

Method choices the paper leaves open (see also docs/field-notes.md):

- Schedule. ``warmup_epochs`` epochs of vanilla 3DSiam (batches of m drawn without
  replacement from a seeded permutation of the cohort), then RE or SE at every step with
  features from the encoder of the last iteration ("dynamic" features, paper section 3).
  ``mode='none'`` is vanilla 3DSiam all along. An epoch is n cases trained on, so the
  warm-up lasts ``ceil(warmup_epochs * n / m)`` steps.
- RE: the next m cases of the permutation stream are encoded, clustered (k-means, k =
  ``clusters``) and weighted N/f_j (min 1); the loss is sum(w l) / sum(w).
- SE: a pool of N = ``pool`` cases is drawn at random without replacement, encoded,
  clustered, and the m/2 nearest to each of the two farthest centroids form the batch
  (equal weights). ``pool`` 0 is :func:`imbalance.default_pool` of the global batch m:
  the paper's k x 10 for m <= 6, growing as k x 10 x m / 6 beyond, so that SE still
  selects when torchrun multiplies the batch. A pool no larger than m (given, or cut by a
  small cohort) is refused (:func:`se_pool`): SE would train on the whole pool, i.e. a
  vanilla batch.
- Features for RE/SE are computed from the *un-augmented* crops under ``torch.no_grad``
  with the encoder in **eval mode**: in train mode batch norm would (a) fold the pool's
  statistics into its running averages, a side effect on the model from a pass that is not
  training, and (b) make each case's vector depend on which other cases share the pool.
  Eval mode gives each case the representation :func:`embed.encode` would give it.
- Collapse metric per step: the std over the batch of the L2-normalised encoder output z1,
  mean over dimensions; about 1/sqrt(256) = 0.0625 when healthy. It sees only complete
  collapse (the health checks above see dimensional collapse). Below 0.1/sqrt(d) for 50
  consecutive steps a single "warning" event is yielded.
- Learning rate of step i (1-based): ``lr * i / w`` during the warm-up of
  w = min(``lr_warmup``, ``iterations`` // 4) steps, then cosine
  decay to 0 at ``iterations`` (or constant). The predictor keeps ``lr`` when
  ``fix_pred_lr`` (SimSiam). Growing ``iterations`` on resume stretches the cosine.

Speed: the cohort lives on the device when it takes < 40% of free device memory (else it
stays in pinned host memory and each batch is copied); augmentation runs on the device with
its parameters drawn on a seeded CPU generator; autocast (bf16, or fp16 with a grad
scaler) and channels_last_3d on CUDA; cudnn.benchmark; the loss and collapse metric are the
only values read back per step.

Reproducibility: every random draw comes from state the checkpoint holds (model init from
``seed``; the augmentation generator; the sampler's numpy generator, permutation and
position; k-means seeded from (seed, iteration); python/numpy/torch global states). On CPU
an interrupted and resumed run gives bit-identical losses to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import RECIPE_FIELDS as RECIPE_FIELDS  # the recipes live with the settings; re-exported here
from ..config import RECIPES as RECIPES
from ..config import AugmentConfig, TrainConfig, from_dict, resolve_recipe, to_dict
from .augment import augment as augment_batch
from .cache import PreparedCohort, StreamedCrops, is_streamed, load_for_training
from .distributed import augment_seed
from .distributed import context as distributed_context
from .events import drive
from .health import Health, HealthMonitor, measure, probe_set, usable_labels
from .imbalance import default_pool, plan_batch
from .lock import folder_lock
from .model import Encoder, SimSiam3D, collapse_metric, simsiam_loss, weighted_mean
from .runs import CHECKPOINT, CONFIG_JSON, HEALTH_CSV, HISTORY_CSV, RunFolder
from .utils import atomic_path, cpu_count, provenance, write_csv, write_json

CHECKPOINT_FORMAT = 2
#: settings that may differ when resuming: they do not change the trajectory on one device
#: (``iterations`` may only grow; ``device`` lets a run move between machines)
RESUMABLE = ("iterations", "checkpoint_every", "embed_batch_size", "device")
COLLAPSE_FRACTION = 0.1
COLLAPSE_STEPS = 50
#: the cohort is kept on a CUDA device when it needs less than this share of free memory
DEVICE_COHORT_SHARE = 0.4


@dataclass
class HistoryRow:
    """One step of history.csv (the single schema of its columns, in this order).

    ``iteration`` 1-based step; ``epoch`` 0-based epoch of the step; ``phase`` vanilla, re or
    se; ``loss`` weighted symmetric negative cosine similarity in [-1, 1]; ``collapse`` the
    train-mode std of the L2-normalised z1 over the batch (healthy about 1/sqrt(256));
    ``lr`` the encoder's learning rate of the step; ``cluster_sizes`` k-means sizes of the
    batch (RE) or pool (SE), empty for vanilla steps; ``weights`` and ``selected_ids`` the
    per-sample weights and case IDs trained on; ``samples_per_s`` batch size over the step's
    wall time; ``elapsed_s`` seconds since this call of :func:`train` started. The list
    fields are JSON text in the CSV.
    """

    iteration: int
    epoch: int
    phase: str
    loss: float
    collapse: float
    lr: float
    cluster_sizes: list[int]
    weights: list[float]
    selected_ids: list[str]
    samples_per_s: float
    elapsed_s: float = 0.0


HISTORY_COLUMNS = [f.name for f in fields(HistoryRow)]


@dataclass
class TrainEvent:
    """One report from :func:`train`.

    ``kind`` is "step" (after each optimisation step), "health" (after a health check: step 0
    comes first, as ``iteration`` 0; a resumed run first yields its earlier checks again, once
    each and in order, for a consumer that starts fresh: one that already holds them, e.g.
    from health.csv, keys them by iteration), "checkpoint" (after a checkpoint was written),
    "warning" (``message`` says what, in plain words), "done" or "stopped". The step fields
    are :class:`HistoryRow`'s (the last step's for the other kinds). ``health`` holds the
    figures of a "health" event (:meth:`health.Health.figures`: ``effective_rank``,
    ``top_pc_share``, ``norm_std``, and with labels ``probe_auc``,
    ``probe_balanced_accuracy``); empty for the other kinds.
    """

    kind: str
    iteration: int
    total: int
    epoch: int = 0
    phase: str = "vanilla"
    loss: float = float("nan")
    collapse: float = float("nan")
    lr: float = 0.0
    cluster_sizes: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    selected_ids: list[str] = field(default_factory=list)
    samples_per_s: float = 0.0
    elapsed_s: float = 0.0
    message: str = ""
    health: dict[str, float] = field(default_factory=dict)

    @property
    def index(self) -> int:
        """Steps done (the event protocol's counter)."""
        return self.iteration


@dataclass
class TrainResult:
    """What :func:`train` returns (the generator's ``StopIteration.value``)."""

    run_dir: Path
    checkpoint: Path
    history: pd.DataFrame
    stopped: bool


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


# --- devices ------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; check that a requested CUDA device exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu or auto")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: fp32, no autocast)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def place_cohort(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """The cohort (N,C,S,S,S) float32 as a tensor on ``device`` when it fits, else pinned on the host."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    if device.type != "cuda":
        return tensor
    free, _total = torch.cuda.mem_get_info(device)
    if tensor.nbytes < DEVICE_COHORT_SHARE * free:
        return tensor.to(device)
    return tensor.pin_memory()


def _set_cpu_threads() -> None:
    # torch defaults to the machine's physical cores, which oversubscribes a container or
    # a job limited to fewer cores; never use more threads than this process may run on.
    wanted = max(1, min(torch.get_num_threads(), cpu_count()))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


# --- sampling -----------------------------------------------------------------------------


class Sampler:
    """Case positions for each step, from one seeded numpy generator (state checkpointed).

    ``batch(m)`` takes the next m positions of a stream of permutations (each case once per
    epoch; a batch that crosses an epoch's end continues in the next permutation).
    ``pool(N)`` draws N distinct positions at random (SE's candidate pool).
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.perm = self.rng.permutation(n)
        self.pos = 0

    def batch(self, m: int) -> np.ndarray:
        out: list[int] = []
        while len(out) < m:
            if self.pos == self.n:
                self.perm = self.rng.permutation(self.n)
                self.pos = 0
            take = min(m - len(out), self.n - self.pos)
            out.extend(int(i) for i in self.perm[self.pos : self.pos + take])
            self.pos += take
        return np.asarray(out, dtype=np.int64)

    def pool(self, size: int) -> np.ndarray:
        return self.rng.choice(self.n, size=min(size, self.n), replace=False).astype(np.int64)

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "perm": self.perm.tolist(), "pos": self.pos}

    def load(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.perm = np.asarray(state["perm"], dtype=np.int64)
        self.pos = int(state["pos"])


def se_pool(cfg: TrainConfig, m: int, n: int, world: int = 1) -> int:
    """SE's candidate pool size for a global batch of ``m`` cases out of ``n``.

    Parameters
    ----------
    cfg
        The run's settings: ``pool`` (0: :func:`imbalance.default_pool` of ``clusters``
        and ``m``), ``mode``, ``batch_size``.
    m
        The global batch (``batch_size`` x processes, at most ``n``).
    n
        Prepared cases in the cohort (the pool is at most all of them).
    world
        Number of training processes (for the message only).

    Returns
    -------
    int
        The pool size, ``min(pool or default, n)``.

    Raises
    ------
    ValueError
        When ``mode`` is "se" and the pool is no larger than ``m``: SE would train on the
        whole pool and select nothing. The message names both numbers and what to change.
    """
    pool = min(cfg.pool or default_pool(cfg.clusters, m), n)
    if cfg.mode != "se" or pool > m:
        return pool
    batch = f"the batch of {m}"
    if world > 1:
        batch = f"the global batch of {m} ({cfg.batch_size} per process x {world} processes)"
    if cfg.pool and cfg.pool <= m:
        raise ValueError(
            f"TrainConfig.pool (--pool) = {cfg.pool} is no larger than {batch}: SE would train on the whole "
            f"pool and select nothing; give a --pool larger than {m}, or 0 for the default "
            f"({default_pool(cfg.clusters, m)} here)"
        )
    largest = (n - 1) // world  # the largest per-process batch that leaves SE a choice
    smaller = f"a --batch-size of {largest} or less, " if largest >= 2 else ""
    raise ValueError(
        f"SE's candidate pool is cut to the cohort's {n} prepared cases, no larger than {batch}: SE would "
        f"train on every case and select nothing; use {smaller}--mode re or none, or prepare more cases"
    )


def step_seed(seed: int, iteration: int) -> int:
    """The k-means seed of a step: a function of (seed, iteration), so nothing to checkpoint."""
    return int(np.random.SeedSequence([abs(int(seed)), int(iteration)]).generate_state(1)[0])


# --- the run ------------------------------------------------------------------------------


def _check_cohort(data: PreparedCohort) -> None:
    if len(data) < 2:
        raise ValueError(f"{data.root}: training needs at least 2 prepared cases (batch norm), found {len(data)}")
    if data.size < Encoder.MIN_SIZE:
        raise ValueError(
            f"{data.root}: crops of {data.size}³ voxels are smaller than the encoder's minimum of "
            f"{Encoder.MIN_SIZE}³; prepare the cohort with --size {Encoder.MIN_SIZE} or more"
        )
    if is_streamed(data):  # uint8 crops are finite; scanning a memory map would read all of it
        return
    bad = ~np.isfinite(data.images.reshape(len(data), -1)).all(axis=1)
    if bad.any():
        names = ", ".join(data.ids[i] for i in np.flatnonzero(bad)[:5])
        raise ValueError(f"{data.root}: case(s) {names} contain NaN or infinite intensities; prepare them again")


def _config_mismatch(saved: dict, given: dict, section: str) -> str | None:
    for key in sorted(set(saved) | set(given)):
        if section == "train" and key in RESUMABLE:
            continue
        if saved.get(key) != given.get(key):
            return f"{section}.{key}: the run used {saved.get(key)!r}, this call gives {given.get(key)!r}"
    return None


def _check_world(out: Path, ckpt: dict[str, Any], world: int) -> None:
    """Refuse to resume a checkpoint on another number of processes (another global batch)."""
    then = int(ckpt.get("world", 1))
    if then != world:
        raise ValueError(
            f"cannot resume {out}: it was trained on {then} process(es) and this call runs "
            f"{world}; resume with the same number (torchrun --nproc-per-node {then}; 1: no torchrun)"
        )


def saved_config(run: str | Path) -> tuple[TrainConfig, AugmentConfig]:
    """The train and augment settings a run folder was started with (from config.json)."""
    data = RunFolder(Path(run)).config()
    return from_dict(TrainConfig, data["config"]["train"]), from_dict(AugmentConfig, data["config"]["augment"])


class _Run:
    """The state of one training run; :func:`train` drives it one step at a time."""

    def __init__(
        self, data: PreparedCohort, out: Path, cfg: TrainConfig, aug: AugmentConfig, stop_gradient: bool = True
    ) -> None:
        self.data, self.out, self.cfg, self.aug = data, out, cfg, aug
        self.dist = distributed_context()
        self.stop_gradient = stop_gradient
        self.device = self.dist.device(resolve_device(cfg.device))
        self.amp_dtype = resolve_precision(cfg.precision, self.device)
        self.n = len(data)
        self.m = min(cfg.batch_size * self.dist.world, self.n)  # the global batch: m per process
        self.k = max(1, cfg.clusters)
        self.pool_size = se_pool(cfg, self.m, self.n, self.dist.world)  # ValueError when SE cannot select
        self.warmup_steps = math.ceil(cfg.warmup_epochs * self.n / self.m)
        self.iteration = 0
        self.history: list[HistoryRow] = []
        self.collapse_run = 0
        self.warned = False
        self.saved_iteration = 0
        # the fixed probe set of the health checks; labels only when every case has one
        labels = data.labels or []
        self.probe = probe_set(labels or [""] * self.n, cfg.health_cases, cfg.seed) if cfg.health_cases else None
        chosen = [labels[i] for i in self.probe] if self.probe is not None and usable_labels(labels) else []
        self.probe_labels = chosen if usable_labels(chosen) else None
        self.monitor = HealthMonitor()

    def build(self, augment_on: str, channels_last: bool | None) -> None:
        cfg, device = self.cfg, self.device
        if device.type == "cpu":
            _set_cpu_threads()
        else:
            torch.backends.cudnn.benchmark = True
        self.channels_last = device.type == "cuda" if channels_last is None else channels_last
        self.augment_on = augment_on
        if is_streamed(self.data):  # beyond the memory budget: batches from the memory map, read ahead
            self.cohort: Any = StreamedCrops(self.data.images, pin=device.type == "cuda")
        else:
            self.cohort = place_cohort(self.data.images, device if augment_on == "device" else torch.device("cpu"))
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        self.model = SimSiam3D(**self.model_args()).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.net = self.dist.wrap(self.model, device)  # DDP under torchrun, else the model itself
        groups = [
            {"params": list(self.model.encoder.parameters()), "fixed_lr": False},
            {"params": list(self.model.predictor.parameters()), "fixed_lr": cfg.fix_pred_lr},
        ]
        fused = device.type == "cuda"
        if cfg.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused or None
            )
        else:
            self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.aug_gen = torch.Generator().manual_seed(augment_seed(cfg.seed, self.dist.rank))
        self.sampler = Sampler(self.n, cfg.seed)

    def model_args(self) -> dict[str, Any]:
        """The SimSiam3D arguments of this run (kept in the checkpoint for :func:`load_model`)."""
        cfg = self.cfg
        return {
            "in_channels": self.data.channels,
            "pred_hidden": cfg.pred_hidden,
            "out_bn": cfg.out_bn,
            "export": cfg.export,
        }

    def lr_factor(self, iteration: int) -> float:
        """The scheduled share of ``lr`` at (1-based) step ``iteration``."""
        cfg = self.cfg
        warmup = min(cfg.lr_warmup, cfg.iterations // 4)  # a short run is not all warm-up
        if iteration <= warmup:
            return iteration / warmup
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, cfg.iterations - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (iteration - warmup) / span)))

    def set_lr(self, iteration: int) -> None:
        factor = self.lr_factor(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr if group["fixed_lr"] else self.cfg.lr * factor

    # -- health --

    def check_health(self) -> Any:
        """Embed the probe set in eval mode and measure it (:func:`health.measure`); None when off."""
        if self.probe is None:
            return None
        feats = []
        for start in range(0, len(self.probe), self.cfg.embed_batch_size):
            feats.append(self.features(self.probe[start : start + self.cfg.embed_batch_size], exported=True))
        return measure(np.concatenate(feats), self.probe_labels, self.iteration, self.cfg.seed)

    # -- checkpoints --

    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def save(self) -> None:
        """Write checkpoint.pt and history.csv whole; refuse to store non-finite weights."""
        if not _finite(self.model):
            raise TrainingDiverged(
                f"training diverged: the weights became NaN or infinite by step {self.iteration}; the last good checkpoint "
                f"(iteration {self.saved_iteration}) was kept. Try a lower --lr (now {self.cfg.lr}) or --precision fp32."
            )
        rank_states = self.dist.gather_object(self.aug_gen.get_state())
        if not self.dist.is_main:  # rank 0 alone writes the run folder; the others wait until it has
            self.dist.barrier()
            self.saved_iteration = self.iteration
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "iteration": self.iteration,
            "world": self.dist.world,
            "model": self.model.state_dict(),
            "model_args": self.model_args(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "augment": self.aug_gen.get_state(),
                "sampler": self.sampler.state(),
                "augment_ranks": rank_states,
            },
            "train": to_dict(self.cfg),
            "augment": to_dict(self.aug),
            "ids": list(self.data.ids),
            "history": [asdict(row) for row in self.history],
            "collapse_run": self.collapse_run,
            "warned": self.warned,
            "health": self.monitor.state(),
        }
        with atomic_path(self.checkpoint_path()) as tmp:
            torch.save(payload, tmp)
        write_csv(self.out / HISTORY_CSV, history_frame(self.history))
        if self.monitor.checks:
            write_csv(self.out / HEALTH_CSV, self.monitor.frame())
        self.saved_iteration = self.iteration
        self.dist.barrier()  # no rank runs ahead of the files (it could find no checkpoint yet)

    def load(self, ckpt: dict[str, Any]) -> None:
        _check_world(self.out, ckpt, self.dist.world)
        for section, saved, given in (
            ("train", ckpt["train"], to_dict(self.cfg)),
            ("augment", ckpt["augment"], to_dict(self.aug)),
        ):
            problem = _config_mismatch(saved, given, section)
            if problem:
                raise ValueError(
                    f"cannot resume {self.out} with other settings ({problem}); resume with the run's settings "
                    f"(only {', '.join(RESUMABLE)} may change) or start a new run in another folder"
                )
        if self.cfg.iterations < ckpt["iteration"]:
            raise ValueError(
                f"cannot resume {self.out}: it already ran {ckpt['iteration']} steps, more than iterations = {self.cfg.iterations}"
            )
        if list(ckpt["ids"]) != list(self.data.ids):
            raise ValueError(
                f"cannot resume {self.out}: the cohort's cases differ from the run's ({len(ckpt['ids'])} cases then, "
                f"{len(self.data)} now); resume with the cache the run was started on"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.aug_gen.set_state(rng.get("augment_ranks", [rng["augment"]])[self.dist.rank])
        self.sampler.load(rng["sampler"])
        self.iteration = self.saved_iteration = int(ckpt["iteration"])
        self.history = [HistoryRow(**row) for row in ckpt["history"]]
        self.collapse_run = int(ckpt["collapse_run"])
        self.warned = bool(ckpt["warned"])
        self.monitor = HealthMonitor.from_state(ckpt.get("health"))

    # -- one step --

    def phase(self, iteration: int) -> str:
        if self.cfg.mode == "none" or iteration <= self.warmup_steps:
            return "vanilla"
        return self.cfg.mode

    def fetch(self, positions: np.ndarray) -> torch.Tensor:
        """Crops at ``positions`` on the training device, (B,C,S,S,S) float32."""
        if isinstance(self.cohort, StreamedCrops):
            x = self.cohort.take(positions)
            return x if self.augment_on == "host" else x.to(self.device, non_blocking=True)
        index = torch.from_numpy(positions)
        if self.cohort.device == self.device:
            return self.cohort[index.to(self.device, non_blocking=True)]
        x = self.cohort[index]
        if self.augment_on == "host":
            return x
        return x.to(self.device, non_blocking=True)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    @torch.no_grad()
    def features(self, positions: np.ndarray, exported: bool = False) -> np.ndarray:
        """Encoder output (N, 256) of the un-augmented crops, eval mode (see module docstring).

        ``exported``: the exported representation (``cfg.export``) instead of dense8.
        """
        self.model.eval()
        try:
            with self._autocast():
                x = self._layout(self.fetch(positions))
                z = self.model.encoder.represent(x) if exported else self.model.encoder(x)
            return z.float().cpu().numpy()
        finally:
            self.model.train()

    def upcoming(self, iteration: int) -> np.ndarray:
        """The positions step ``iteration`` will read first, drawn from a copy of the sampler
        (whose own state stays as it is): what the streamed cohort reads ahead."""
        ahead = copy.deepcopy(self.sampler)
        return ahead.pool(self.pool_size) if self.phase(iteration) == "se" else ahead.batch(self.m)

    def plan(self, phase: str, iteration: int) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
        """Positions, weights (None: equal) and cluster sizes of the batch of this step."""
        if phase == "vanilla":
            return self.sampler.batch(self.m), None, []
        candidates = self.sampler.batch(self.m) if phase == "re" else self.sampler.pool(self.pool_size)
        feats = self.dist.gather_rows(self.features, candidates)  # each process encodes a share
        k = min(self.k, len(candidates))
        plan = plan_batch(phase, feats, k, self.m, step_seed(self.cfg.seed, iteration))
        weights = np.asarray(plan.weights, dtype=np.float32)
        return candidates[np.asarray(plan.indices)], weights, [int(s) for s in plan.cluster_sizes]

    def step(self) -> HistoryRow:
        """One optimisation step; returns its history row (loss may be non-finite)."""
        start = time.perf_counter()
        iteration = self.iteration + 1
        self.set_lr(iteration)
        phase = self.phase(iteration)
        positions, weights, sizes = self.plan(phase, iteration)
        self.dist.check_same("the selected cases", positions.tolist())
        mine = self.dist.share(len(positions))  # this process's share of the global batch
        x = self.fetch(positions[mine])
        if isinstance(self.cohort, StreamedCrops):
            self.cohort.prefetch(self.upcoming(iteration + 1))
        v1 = self._layout(augment_batch(x, self.aug, self.aug_gen))
        v2 = self._layout(augment_batch(x, self.aug, self.aug_gen))
        w = None if weights is None else torch.from_numpy(weights[mine]).to(self.device, non_blocking=True)
        with self._autocast():
            p1, p2, z1, z2 = self.net(v1, v2)
        losses = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float(), self.stop_gradient)
        if self.dist.active:  # DDP averages the gradients: scale so that they are the global batch's
            loss = self.dist.local_loss(losses, w, len(positions) if weights is None else float(weights.sum()))
        else:
            loss = weighted_mean(losses, w)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        loss_value = self.dist.mean(float(loss.detach().item()))  # the one sync per step; global under DDP
        collapse = float(collapse_metric(z1.detach().float()))
        self.iteration = iteration
        elapsed = time.perf_counter() - start
        return HistoryRow(
            iteration=iteration,
            epoch=(iteration - 1) * self.m // self.n,
            phase=phase,
            loss=loss_value,
            collapse=collapse,
            lr=float(self.optimizer.param_groups[0]["lr"]),
            cluster_sizes=sizes,
            weights=[1.0] * len(positions) if weights is None else [float(v) for v in weights],
            selected_ids=[self.data.ids[i] for i in positions],
            samples_per_s=len(positions) / elapsed if elapsed > 0 else float("inf"),
        )


def _finite(model: torch.nn.Module) -> bool:
    tensors = [p.detach() for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all().item())


def history_frame(history: list[HistoryRow]) -> pd.DataFrame:
    """The history as a table; list columns are JSON text (``json.loads`` reads them back)."""
    frame = pd.DataFrame([asdict(row) for row in history], columns=HISTORY_COLUMNS)
    for col in ("cluster_sizes", "weights", "selected_ids"):
        frame[col] = [json.dumps(v) for v in frame[col]]
    return frame


def _event(
    kind: str, row: HistoryRow | None, total: int, message: str = "", iteration: int = 0, **extra: Any
) -> TrainEvent:
    """An event of ``kind`` carrying ``row``'s fields (or only ``iteration`` when there is no row yet)."""
    values = asdict(row) if row is not None else {"iteration": iteration}
    return TrainEvent(kind=kind, total=total, message=message, **values, **extra)


def train(
    cohort: PreparedCohort | str | Path,
    out: str | Path,
    cfg: TrainConfig,
    augment: AugmentConfig,
    resume: bool = False,
    stop: Callable[[], bool] | None = None,
    *,
    augment_on: str = "device",
    channels_last: bool | None = None,
    stop_gradient: bool = True,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train 3DSiam (with RE/SE per ``cfg.mode``) on a prepared cohort, yielding progress.

    Parameters
    ----------
    cohort : a loaded cohort or the folder of a prepared cache
    out : the run folder (created); it must not hold a run unless ``resume``
    cfg, augment : training and augmentation settings
    resume : continue the run in ``out`` from its checkpoint; the settings must be the
        run's (see ``RESUMABLE`` for those that may change)
    stop : polled between steps; when it returns True a checkpoint is written, a "stopped"
        event yielded and the generator returns with ``stopped=True``. Closing the generator
        (``close()``) also writes the checkpoint.
    augment_on : "device" (default) or "host": augment on the CPU and copy the views to the
        device (for benchmarks)
    channels_last : use channels_last_3d (default: on CUDA only)
    stop_gradient : for tests only: False removes SimSiam's stop-gradient, which makes the
        representation collapse (to check that the health monitor notices)

    Yields
    ------
    TrainEvent

    Returns
    -------
    TrainResult (as ``StopIteration.value``)

    Raises
    ------
    TrainingDiverged
        When the loss or the weights become NaN/infinite; checkpoint.pt keeps the last good state.
    ValueError, FileNotFoundError
        For a bad cohort, settings that differ from a resumed run's, or a run folder in the way.
    """
    ctx = distributed_context()  # rank and world from torchrun's environment (1 process without it)
    data = (
        cohort
        if isinstance(cohort, PreparedCohort)
        else ctx.main_first(lambda: load_for_training(cohort, cfg.memory_gb))  # in memory, or memory-mapped
    )
    _check_cohort(data)
    cfg = resolve_recipe(cfg)  # a library call's recipe; a config a face resolved (its explicit choices) is kept
    if augment_on not in ("device", "host"):
        raise ValueError(f"augment_on = {augment_on!r}; choose 'device' or 'host'")
    out = Path(out)
    # One process per run folder (core/lock.py): a second train into it stops at once, and
    # the lock removes the temporary files of a checkpoint write that a kill interrupted.
    with folder_lock(out) if ctx.is_main else contextlib.nullcontext():
        args = (data, out, cfg, augment, resume, stop, augment_on, channels_last, stop_gradient)
        return (yield from _train_locked(*args))


def _train_locked(
    data: PreparedCohort,
    out: Path,
    cfg: TrainConfig,
    augment: AugmentConfig,
    resume: bool,
    stop: Callable[[], bool] | None,
    augment_on: str,
    channels_last: bool | None,
    stop_gradient: bool,
) -> Generator[TrainEvent, None, TrainResult]:
    """The body of :func:`train`, run while it holds the run folder's lock."""
    if cfg.batch_size > len(data):  # refused, not cut: config.json must say what ran
        raise ValueError(
            f"TrainConfig.batch_size (--batch-size) = {cfg.batch_size} is larger than the cohort "
            f"({len(data)} prepared cases); give {len(data)} or less"
        )
    ckpt_path = out / CHECKPOINT
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"{out} holds no checkpoint to resume; start a new run without --resume")
    if not resume and ckpt_path.exists():
        raise ValueError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    ckpt = read_checkpoint(ckpt_path) if resume else None
    if ckpt is not None:  # first: another number of processes also makes another batch and pool
        _check_world(out, ckpt, distributed_context().world)
    run = _Run(data, out, cfg, augment, stop_gradient)
    run.build(augment_on, channels_last)
    if ckpt is not None:
        run.load(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    if run.dist.is_main:  # rank 0 alone writes the run folder (core/distributed.py)
        write_json(
            out / CONFIG_JSON,
            provenance(
                {"train": to_dict(cfg), "augment": to_dict(augment)},
                cohort={
                    "root": str(data.root),
                    "cases": len(data),
                    "channels": data.channels,
                    "size": data.size,
                    "streamed": is_streamed(data),
                },
                processes=run.dist.world,
                global_batch=run.m,
                se_pool=run.pool_size if cfg.mode == "se" else None,  # the resolved pool (cfg.pool 0: default)
                device=str(run.device),
                precision=str(run.amp_dtype or "fp32"),
                resumed_from=run.iteration if resume else None,
                health_probe={
                    "cases": 0 if run.probe is None else len(run.probe),
                    "labels": "Label column of cases.csv, for monitoring only" if run.probe_labels else "none",
                },
            ),
        )
    return (yield from _loop(run, stop))


def _loop(run: _Run, stop: Callable[[], bool] | None) -> Generator[TrainEvent, None, TrainResult]:
    cfg, total = run.cfg, run.cfg.iterations
    deterministic = torch.are_deterministic_algorithms_enabled()
    if run.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    started = time.perf_counter()
    last_finite: tuple[int, float] | None = None

    def result(stopped: bool) -> TrainResult:
        return TrainResult(run.out, run.checkpoint_path(), history_frame(run.history), stopped)

    def last_row() -> HistoryRow | None:
        return run.history[-1] if run.history else None

    try:
        # a resumed run shows its earlier checks again; a new one measures the untrained encoder
        for check in run.monitor.checks:
            yield _health_event(run, check, total)
        if not run.monitor.checks:
            yield from _check(run, total)
        elif run.iteration % cfg.checkpoint_every == 0 and run.monitor.checks[-1]["iteration"] != run.iteration:
            yield from _check(run, total)  # stopped between the step and its check: do it now
        while run.iteration < total:
            if run.dist.any(stop is not None and stop()):  # every process stops at the same step
                run.save()
                yield _event(
                    "stopped",
                    last_row(),
                    total,
                    f"stopped at step {run.iteration} of {total}; checkpoint saved to {run.checkpoint_path()}",
                    iteration=run.iteration,
                )
                return result(True)
            row = run.step()
            row.elapsed_s = time.perf_counter() - started
            if not math.isfinite(row.loss):
                where = f"step {last_finite[0]} ({last_finite[1]:.4f})" if last_finite else "none yet"
                raise TrainingDiverged(
                    f"training diverged at step {row.iteration}: the loss is {row.loss} (last finite loss: {where}). "
                    f"The last good checkpoint {run.checkpoint_path()} (iteration {run.saved_iteration}) was kept. "
                    f"Try a lower --lr (now {cfg.lr}) or --precision fp32."
                )
            last_finite = (row.iteration, row.loss)
            run.history.append(row)
            yield _event("step", row, total, _step_message(run, row))
            run.collapse_run = run.collapse_run + 1 if row.collapse < COLLAPSE_FRACTION / math.sqrt(256) else 0
            if run.collapse_run >= COLLAPSE_STEPS and not run.warned:
                run.warned = True
                yield _event(
                    "warning",
                    row,
                    total,
                    (
                        f"the representation may be collapsing: the std of the normalised output has been below "
                        f"{COLLAPSE_FRACTION / math.sqrt(256):.4f} for {COLLAPSE_STEPS} steps (healthy: about 0.0625); "
                        "try stronger augmentation or a lower --lr"
                    ),
                )
            if run.iteration % cfg.checkpoint_every == 0 or run.iteration == total:
                yield from _check(run, total)
                run.save()
                yield _event("checkpoint", row, total, f"checkpoint saved to {run.checkpoint_path()}")
    except GeneratorExit:
        # close() arrives at a yield, between steps, so the state is consistent: keep it.
        run.save()
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic)
    # decided together: a rank that saved alone would wait for the others for ever
    if run.dist.any(run.saved_iteration != run.iteration or not run.checkpoint_path().exists()):
        run.save()
    yield _event(
        "done",
        last_row(),
        total,
        f"finished {total} steps; checkpoint saved to {run.checkpoint_path()}",
        iteration=run.iteration,
    )
    return result(False)


def _check(run: _Run, total: int) -> Generator[TrainEvent, None, None]:
    """One health check: a "health" event, then any warning the monitor gives."""
    measured = run.check_health()
    if measured is None:
        return
    warnings = run.monitor.update(measured)
    yield _health_event(run, asdict(measured), total)
    for text in warnings:
        yield _event("warning", run.history[-1] if run.history else None, total, text, iteration=run.iteration)


def _health_event(run: _Run, check: dict[str, Any], total: int) -> TrainEvent:
    figures = {k: float(v) for k, v in Health(**check).figures().items()}
    row = next((r for r in reversed(run.history) if r.iteration == check["iteration"]), None)
    text = f"health at step {check['iteration']}: rank {figures['effective_rank']:.1f}"
    if "probe_auc" in figures:
        text += f", probe AUC {figures['probe_auc']:.3f}"
    if check["iteration"] == 0:
        text += " (untrained encoder)"
    return _event("health", row, total, text, iteration=int(check["iteration"]), health=figures)


def _step_message(run: _Run, row: HistoryRow) -> str:
    text = f"loss {row.loss:.3f}"
    if run.monitor.checks:
        text += f", rank {run.monitor.checks[-1]['effective_rank']:.1f}"
    return text


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's content; ValueError naming the file when it is truncated or not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except OSError as exc:
        if exc.errno:  # a real OS error (permissions, I/O) says what it is itself
            raise
        ckpt = exc
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError...
        ckpt = exc
    if isinstance(ckpt, Exception):
        reason = (str(ckpt).strip().splitlines() or [type(ckpt).__name__])[0][:120]
        raise ValueError(
            f"{path} is not a readable checkpoint (truncated or damaged: {reason}); "
            "use a complete checkpoint (ssl-radiomics train --resume continues from the last one) or train again"
        )
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of ssl-radiomics train; give a run folder or its {CHECKPOINT}")
    return ckpt


def load_model(run_or_checkpoint: str | Path, device: str = "cpu") -> SimSiam3D:
    """The trained SimSiam3D of a run folder or checkpoint file, in eval mode on ``device``."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; train a run first (ssl-radiomics train CACHE --out RUN)")
    ckpt = read_checkpoint(path)
    model = SimSiam3D(**ckpt["model_args"])  # format 1 holds in_channels only: the paper's head
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval()


def run_to_end(gen: Generator[TrainEvent, None, TrainResult]) -> TrainResult:
    """Consume a :func:`train` generator and return its result."""
    return drive(gen)
