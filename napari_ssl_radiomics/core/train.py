"""3DSiam training with the RE/SE imbalance module, as one generator of progress events.

``TrainConfig.method`` "rubik" trains the same encoder on the Rubik's-cube pretext task
instead (:mod:`.rubik`, the baseline of the paper's Table 2); everything else (recipe,
sampler, RE/SE, checkpoints, resume, health) is shared.

:func:`train` yields a :class:`TrainEvent` after every step (and on checkpoints, warnings,
the end and a stop); the CLI's progress bar, the napari widget and the tests all consume
the same generator. What a run folder holds, and who reads it, is :mod:`.runs`'s to say.

Recipes. ``TrainConfig.recipe`` names a preset of the optimisation settings: ``RECIPES`` and
:func:`resolve_recipe` live with the settings in ``config.py`` (why "default" is the default:
benchmarks/README.md, "Representation quality"). :func:`train` resolves a library call's
recipe; a config a face resolved keeps its explicit choices. The run's recorded config and the checkpoint
record the resolved settings.

Health. At step 0 (the untrained encoder), at every checkpoint and at the end, a fixed,
seeded probe set of up to ``health_cases`` cases is embedded in eval mode and measured
(:mod:`health`); each check is a "health" event (``TrainEvent.health``) and a row of
the health table, and :class:`health.HealthMonitor` gives the warnings. The cache's labels serve
only this monitoring: never the loss, the sampler or RE/SE.

Method choices the paper leaves open:

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
  consecutive steps a single "warning" event is yielded (:class:`monitors.CollapseMonitor`).
- Learning rate: a linear warm-up, then cosine decay or constant (:mod:`optim`).
- ``vc_weight`` > 0 adds VICReg's variance-covariance term (:func:`model.variance_covariance`)
  of both views' z to the loss, a candidate against dimensional collapse at small batch. It
  is a batch term: RE's weights act on the per-case Siamese losses only, and under torchrun
  each process adds the term of its own share of the batch (the gradients are averaged).

Speed: placement, precision and layout are in :mod:`devices`; augmentation runs on the device
with its parameters drawn on a seeded CPU generator; the loss and collapse metric are the
only values read back per step.

Reproducibility: every random draw comes from state the checkpoint holds (model init from
``seed``; the augmentation generator; the sampler's numpy generator, permutation and
position (:mod:`sampler`); k-means seeded from (seed, iteration); python/numpy/torch global
states; the monitors' counters, :mod:`monitors`). On CPU
an interrupted and resumed run gives bit-identical losses to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import math
import random
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from ..config import ADDED_SETTINGS, AugmentConfig, TrainConfig, from_dict, resolve_recipe, to_dict
from ..config import RECIPE_FIELDS as RECIPE_FIELDS  # the recipes live with the settings; re-exported here
from ..config import RECIPES as RECIPES
from .augment import augment as augment_batch
from .cache import PreparedCohort, check_preparation, is_streamed, load_for_training, preparation
from .checkpoint import CHECKPOINT_FORMAT, build_model, finite_weights, read_checkpoint, save_checkpoint
from .devices import TrainingCrops, resolve_precision, set_cpu_threads
from .devices import resolve_device as resolve_device  # re-exported: embed, benchmarks
from .distributed import augment_seed
from .distributed import context as distributed_context
from .events import Level, drive
from .health import Health, HealthMonitor, measure, probe_set, usable_labels
from .imbalance import plan_batch
from .lock import folder_lock
from .model import Encoder, collapse_metric, simsiam_loss, variance_covariance, weighted_mean
from .monitors import CollapseMonitor
from .optim import make_optimizer, set_lr
from .rubik import cube_geometry, make_puzzle, permutation_set, rubik_loss
from .runs import CHECKPOINT, CONFIG_JSON, HEALTH_CSV, HISTORY_CSV, RunFolder
from .sampler import Sampler, se_pool, step_seed
from .utils import OutputError, atomic_path, provenance, write_csv, write_json

#: 3: the monitors' state under "health" and "collapse" (2 kept the collapse counters at the top level)
#: settings that may differ when resuming: they do not change the trajectory on one device
#: (``iterations`` may only grow; ``device`` lets a run move between machines)
RESUMABLE = ("iterations", "checkpoint_every", "embed_batch_size", "device")


@dataclass
class HistoryRow:
    """One step of the history table (the single schema of its columns, in this order).

    ``iteration`` 1-based step; ``epoch`` 0-based epoch of the step; ``phase`` vanilla, re or
    se; ``loss`` weighted symmetric negative cosine similarity in [-1, 1] (method rubik: the
    weighted puzzle loss, :func:`rubik.rubik_loss`); ``collapse`` the train-mode std of the
    L2-normalised z1 (rubik: the sub-cubes' z) over the batch (healthy about 1/sqrt(256));
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


#: what a :class:`TrainEvent` reports
TrainKind = Literal["step", "health", "checkpoint", "warning", "done", "stopped", "progress"]


@dataclass
class TrainEvent:
    """One report from :func:`train`.

    ``kind`` is "step" (after each optimisation step), "health" (after a health check: step 0
    comes first, as ``iteration`` 0; a resumed run first yields its earlier checks again, once
    each and in order, for a consumer that starts fresh: one that already holds them, e.g.
    from the health table, keys them by iteration), "checkpoint" (after a checkpoint was written),
    "warning" (``message`` says what, in plain words; ``level`` is "warning"), "done",
    "stopped" or "progress" (during a health check: ``message`` says "k of n" cases embedded). ``row`` is the step's :class:`HistoryRow` (the last step's for the other kinds;
    None before the first step). ``health`` holds the figures of a "health" event
    (:meth:`health.Health.figures`: ``effective_rank``, ``top_pc_share``, ``norm_std``, and
    with labels ``probe_auc``, ``probe_balanced_accuracy``); empty for the other kinds.
    """

    kind: TrainKind
    iteration: int
    total: int
    row: HistoryRow | None = None
    message: str = ""
    health: dict[str, float] = field(default_factory=dict)

    @property
    def index(self) -> int:
        """Steps done (the event protocol's counter)."""
        return self.iteration

    @property
    def level(self) -> Level:
        return "warning" if self.kind == "warning" else "info"


@dataclass
class TrainResult:
    """What :func:`train` returns (the generator's ``StopIteration.value``)."""

    run_dir: Path
    checkpoint: Path
    history: pd.DataFrame
    stopped: bool


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


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
    saved = {**ADDED_SETTINGS[section], **saved}
    # the recipe first: another recipe changes its presets too, and the recipe is what was given
    for key in sorted(set(saved) | set(given), key=lambda k: (k != "recipe", k)):
        if section == "train" and key in RESUMABLE:
            continue
        if saved.get(key) != given.get(key):
            return f"{section}.{key}: the run used {saved.get(key)!r}, this call gives {given.get(key)!r}"
    return None


def _settings_problem(out: Path, problem: str) -> ValueError:
    return ValueError(
        f"cannot resume {out} with other settings ({problem}); resume with the run's settings "
        f"(only {', '.join(RESUMABLE)} may change) or start a new run in another folder"
    )


def _check_resume(out: Path, data: PreparedCohort, cfg: TrainConfig, augment: AugmentConfig) -> None:
    """Before any work: the cache and the settings of a resume against the run's ``config.json``.

    One run, one preparation (the cases' IDs alone would let two crop sizes mix); the checkpoint's
    own settings are checked again when it is loaded (a run without ``config.json``).
    """
    folder = RunFolder(out)
    check_preparation(
        folder.preparation(),
        preparation(data),
        out,
        data.root,
        "resume with the cache the run was started on, or start a new run in another folder",
    )
    if not folder.config_json.exists():
        return
    saved = folder.config().get("config") or {}
    for section, given in (("train", to_dict(cfg)), ("augment", to_dict(augment))):
        if isinstance(saved.get(section), dict):
            problem = _config_mismatch(saved[section], given, section)
            if problem:
                raise _settings_problem(out, problem)


def _check_world(out: Path, ckpt: dict[str, Any], world: int) -> None:
    """Refuse to resume a checkpoint on another number of processes (another global batch)."""
    then = int(ckpt.get("world", 1))
    if then != world:
        raise ValueError(
            f"cannot resume {out}: it was trained on {then} process(es) and this call runs "
            f"{world}; resume with the same number (torchrun --nproc-per-node {then}; 1: no torchrun)"
        )


def saved_config(run: str | Path) -> tuple[TrainConfig, AugmentConfig]:
    """The train and augment settings a run folder was started with (from the run's recorded config)."""
    data = RunFolder(Path(run)).config()
    return from_dict(TrainConfig, data["config"]["train"]), from_dict(AugmentConfig, data["config"]["augment"])


class _Run:
    """The state of one training run; :func:`train` drives it one step at a time.

    Built in one step: the model, optimiser, sampler, generators and monitors are ready on
    return, and restored from ``checkpoint`` (a :func:`.checkpoint.read_checkpoint` content) when given.
    The monitors (``health``, ``collapse``) are the loop's plug-ins: the run feeds them and
    checkpoints their ``state()``.
    """

    def __init__(
        self,
        data: PreparedCohort,
        out: Path,
        cfg: TrainConfig,
        aug: AugmentConfig,
        checkpoint: dict[str, Any] | None = None,
        *,
        augment_on: str = "device",
        channels_last: bool | None = None,
        stop_gradient: bool = True,
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
        self.saved_iteration = 0
        # the fixed probe set of the health checks; labels only when every case has one
        labels = data.labels or []
        self.probe = probe_set(labels or [""] * self.n, cfg.health_cases, cfg.seed) if cfg.health_cases else None
        chosen = [labels[i] for i in self.probe] if self.probe is not None and usable_labels(labels) else []
        self.probe_labels = chosen if usable_labels(chosen) else None
        self.health = HealthMonitor()
        self.collapse = CollapseMonitor()
        device = self.device
        if device.type == "cpu":
            set_cpu_threads()
        else:
            torch.backends.cudnn.benchmark = True
        self.crops = TrainingCrops(data, device, self.amp_dtype, augment_on, channels_last)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        self.model = build_model(self.model_args()).to(device)
        if cfg.method == "rubik":  # the fixed permutation classes of the puzzle (core/rubik.py)
            self.perm_set = torch.from_numpy(permutation_set(cfg.rubik_permutations)).long()
        if self.crops.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.net = self.dist.wrap(self.model, device)  # DDP under torchrun, else the model itself
        self.optimizer = make_optimizer(self.model, cfg, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.aug_gen = torch.Generator().manual_seed(augment_seed(cfg.seed, self.dist.rank))
        self.sampler = Sampler(self.n, cfg.seed)
        if checkpoint is not None:
            self._restore(checkpoint)

    def model_args(self) -> dict[str, Any]:
        """The model's arguments of this run (kept in the checkpoint for :func:`.checkpoint.load_model`).

        A Rubik run's arguments carry ``method``; a 3DSiam run's have none, as before the setting existed.
        """
        cfg = self.cfg
        if cfg.method == "rubik":
            return {
                "method": "rubik",
                "in_channels": self.data.channels,
                "out_bn": cfg.out_bn,
                "export": cfg.export,
                "permutations": cfg.rubik_permutations,
            }
        return {
            "in_channels": self.data.channels,
            "pred_hidden": cfg.pred_hidden,
            "out_bn": cfg.out_bn,
            "export": cfg.export,
        }

    def set_lr(self, iteration: int) -> None:
        set_lr(self.optimizer, self.cfg, iteration)

    # -- health --

    def check_health(self, stop: Callable[[], bool] | None = None) -> Generator[tuple[int, int], None, Health | None]:
        """Embed the probe set in eval mode and measure it (:func:`health.measure`).

        Yields (cases embedded, probe cases) after each batch of ``embed_batch_size``, so a
        consumer can show ``k of n``; returns None when off, or when ``stop`` returned True
        between two batches (on a CPU a whole check takes minutes at 96³: a Stop must not
        wait for it).
        """
        if self.probe is None:
            return None
        feats, n, size = [], len(self.probe), self.cfg.embed_batch_size
        for start in range(0, n, size):
            if stop is not None and stop():
                return None
            feats.append(self.features(self.probe[start : start + size], exported=True))
            yield min(start + size, n), n
        return measure(np.concatenate(feats), self.probe_labels, self.iteration, self.cfg.seed)

    # -- checkpoints --

    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def save(self) -> None:
        """Write the checkpoint and the history table whole; refuse to store non-finite weights."""
        if not finite_weights(self.model):
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
            "health": self.health.state(),
            "collapse": self.collapse.state(),
        }
        try:
            with atomic_path(self.checkpoint_path()) as tmp:
                save_checkpoint(payload, tmp)
        except OSError as exc:
            raise self._write_failed(exc, "the checkpoint") from None
        try:
            write_csv(self.out / HISTORY_CSV, history_frame(self.history))
            if self.health.checks:
                write_csv(self.out / HEALTH_CSV, self.health.frame())
        except OSError as exc:
            self.saved_iteration = self.iteration
            raise self._write_failed(exc, f"{HISTORY_CSV} or {HEALTH_CSV}") from None
        self.saved_iteration = self.iteration
        self.dist.barrier()  # no rank runs ahead of the files (it could find no checkpoint yet)

    def _write_failed(self, exc: OSError, what: str) -> OSError:
        """One line for a full disk (or quota) while saving, naming the folder and what is kept;
        other OS errors stay as they are."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return exc
        kept = (
            f"the checkpoint of step {self.saved_iteration} is kept"
            if self.saved_iteration
            else "no checkpoint had been saved yet"
        )
        return OutputError(
            f"the disk holding {self.out} is full ({exc.strerror}) while saving {what} of step {self.iteration}; "
            f"{kept}. Free some space, then continue with --resume"
        )

    def _restore(self, ckpt: dict[str, Any]) -> None:
        _check_world(self.out, ckpt, self.dist.world)
        for section, saved, given in (
            ("train", ckpt["train"], to_dict(self.cfg)),
            ("augment", ckpt["augment"], to_dict(self.aug)),
        ):
            problem = _config_mismatch(saved, given, section)
            if problem:
                raise _settings_problem(self.out, problem)
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
        self.health = HealthMonitor.from_state(ckpt.get("health"))
        self.collapse = CollapseMonitor.from_checkpoint(ckpt)

    # -- one step --

    def phase(self, iteration: int) -> str:
        if self.cfg.mode == "none" or iteration <= self.warmup_steps:
            return "vanilla"
        return self.cfg.mode

    @torch.no_grad()
    def features(self, positions: np.ndarray, exported: bool = False) -> np.ndarray:
        """Encoder output (N, 256) of the un-augmented crops, eval mode (see module docstring).

        ``exported``: the exported representation (``cfg.export``) instead of dense8.
        """
        self.model.eval()
        try:
            with self.crops.autocast():
                x = self.crops.layout(self.crops.fetch(positions))
                z = self.model.encoder.represent(x) if exported else self.model.encoder(x)
            return z.float().cpu().numpy()
        finally:
            self.model.train()

    def upcoming(self, iteration: int) -> np.ndarray:
        """The positions step ``iteration`` will read first, drawn from a copy of the sampler
        (whose own state stays as it is): what the streamed cohort reads ahead."""
        ahead = copy.deepcopy(self.sampler)
        return ahead.pool(self.pool_size) if self.phase(iteration) == "se" else ahead.batch(self.m)

    def encode_candidates(self, candidates: np.ndarray, stop: Callable[[], bool] | None) -> np.ndarray | None:
        """The candidates' features, in batches of ``embed_batch_size`` with ``stop`` asked
        before each; None when it returned True (an SE pool takes seconds on a CPU: a Stop
        must not wait for it)."""
        if self.dist.active:
            # under torchrun every rank encodes a share inside one collective: a rank cannot
            # leave it alone, so the stop is decided between steps there (_loop, dist.any)
            return self.dist.gather_rows(self.features, candidates)
        size, feats = self.cfg.embed_batch_size, []
        for start in range(0, len(candidates), size):
            if stop is not None and stop():
                return None
            feats.append(self.features(candidates[start : start + size]))
        return np.concatenate(feats)

    def plan(
        self, phase: str, iteration: int, stop: Callable[[], bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, list[int]] | None:
        """Positions, weights (None: equal) and cluster sizes of the batch of this step; None
        when ``stop`` returned True while the candidates were encoded (the sampler is then
        put back as it was, so that a resumed run draws this step's cases again)."""
        if phase == "vanilla":
            return self.sampler.batch(self.m), None, []
        before = self.sampler.state()
        candidates = self.sampler.batch(self.m) if phase == "re" else self.sampler.pool(self.pool_size)
        feats = self.encode_candidates(candidates, stop)
        if feats is None:
            self.sampler.load(before)
            return None
        k = min(self.k, len(candidates))
        plan = plan_batch(phase, feats, k, self.m, step_seed(self.cfg.seed, iteration))
        weights = np.asarray(plan.weights, dtype=np.float32)
        return candidates[np.asarray(plan.indices)], weights, [int(s) for s in plan.cluster_sizes]

    def siam_losses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """3DSiam's per-case losses (B,) on two augmented views of ``x``, the batch's
        variance-covariance term (a scalar; None when ``vc_weight`` is 0), and the first view's z."""
        v1 = self.crops.layout(augment_batch(x, self.aug, self.aug_gen))
        v2 = self.crops.layout(augment_batch(x, self.aug, self.aug_gen))
        with self.crops.autocast():
            p1, p2, z1, z2 = self.net(v1, v2)
        losses = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float(), self.stop_gradient)
        vc = None
        if self.cfg.vc_weight > 0:  # a batch term: RE's weights act on the per-case losses only
            vc = self.cfg.vc_weight * 0.5 * (variance_covariance(z1) + variance_covariance(z2))
        return losses, vc, z1

    def rubik_losses(self, x: torch.Tensor) -> tuple[torch.Tensor, None, torch.Tensor]:
        """The Rubik's-cube per-case losses (B,) on one augmented view of ``x``, no batch term, and the cubes' z."""
        view = augment_batch(x, self.aug, self.aug_gen)
        cubes, labels, rotations = make_puzzle(view, self.perm_set, self.cfg.rubik_gap, self.aug_gen)
        flat = self.crops.layout(cubes.flatten(0, 1))  # 8 cubes per case, one batched pass (siamese)
        with self.crops.autocast():
            perm_logits, rot_logits, z = self.net(flat)
        return rubik_loss(perm_logits, rot_logits, labels, rotations), None, z

    def step(self, stop: Callable[[], bool] | None = None) -> HistoryRow | None:
        """One optimisation step; returns its history row (loss may be non-finite), or None when
        ``stop`` returned True before the update (nothing changed: the step is not counted)."""
        start = time.perf_counter()
        iteration = self.iteration + 1
        phase = self.phase(iteration)
        planned = self.plan(phase, iteration, stop)
        if planned is None:
            return None
        positions, weights, sizes = planned
        self.set_lr(iteration)
        self.dist.check_same("the selected cases", positions.tolist())
        mine = self.dist.share(len(positions))  # this process's share of the global batch
        x = self.crops.fetch(positions[mine])
        self.crops.prefetch(lambda: self.upcoming(iteration + 1))
        w = None if weights is None else torch.from_numpy(weights[mine]).to(self.device, non_blocking=True)
        losses, batch_term, z1 = self.rubik_losses(x) if self.cfg.method == "rubik" else self.siam_losses(x)
        if self.dist.active:  # DDP averages the gradients: scale so that they are the global batch's
            loss = self.dist.local_loss(losses, w, len(positions) if weights is None else float(weights.sum()))
        else:
            loss = weighted_mean(losses, w)
        if batch_term is not None:  # each process's own share under DDP, averaged with the gradients
            loss = loss + batch_term
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


def history_frame(history: list[HistoryRow]) -> pd.DataFrame:
    """The history as a table; list columns are JSON text (``json.loads`` reads them back)."""
    frame = pd.DataFrame([asdict(row) for row in history], columns=HISTORY_COLUMNS)
    for col in ("cluster_sizes", "weights", "selected_ids"):
        frame[col] = [json.dumps(v) for v in frame[col]]
    return frame


def _event(
    kind: TrainKind, row: HistoryRow | None, total: int, message: str = "", iteration: int = 0, **extra: Any
) -> TrainEvent:
    """An event of ``kind`` carrying ``row`` (its iteration; ``iteration`` when there is no row yet)."""
    return TrainEvent(kind, row.iteration if row is not None else iteration, total, row, message, **extra)


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
    stop : polled between steps, between the embedding batches of a health check and of an
        RE/SE step's candidates (that step is then abandoned before its update, not counted;
        under torchrun between steps only); when it returns True a checkpoint of the last
        whole step is written, a "stopped"
        event yielded and the generator returns with ``stopped=True``. Closing the generator
        (``close()``) also writes the checkpoint.
    augment_on : "device" (default) or "host": augment on the CPU and copy the views to the
        device (for benchmarks)
    channels_last : use channels_last_3d (default: on)
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
        When the loss or the weights become NaN/infinite; the checkpoint keeps the last good state.
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
    if cfg.method == "rubik":
        cube_geometry(data.size, cfg.rubik_gap)  # ValueError when the crops are too small for the puzzle
        if cfg.vc_weight > 0:
            raise ValueError("vc_weight adds a term to 3DSiam's loss; give method=siam, or vc_weight 0 with rubik")
    if augment_on not in ("device", "host"):
        raise ValueError(f"augment_on = {augment_on!r}; choose 'device' or 'host'")
    out = Path(out)
    if resume:  # refused before the lock is taken: a refused resume leaves the run folder as it was
        _check_resume(out, data, cfg, augment)
    # One process per run folder (core/lock.py): a second train into it stops at once, and
    # the lock removes the temporary files of a checkpoint write that a kill interrupted.
    with folder_lock(out) if ctx.is_main else contextlib.nullcontext():
        args = (data, out, cfg, augment, resume, stop, augment_on, channels_last, stop_gradient)
        return (yield from _train_locked(*args))


def _check_batch(batch_size: int, world: int, cases: int) -> None:
    """Refuse a global batch (``batch_size`` per process x ``world`` processes) larger than the
    cohort: refused, not cut, because the run's recorded config must say what ran."""
    if batch_size * world <= cases:
        return
    if world == 1:
        raise ValueError(
            f"TrainConfig.batch_size (--batch-size) = {batch_size} is larger than the cohort "
            f"({cases} prepared cases); give {cases} or less"
        )
    fits = cases // world
    fix = f"give --batch-size {fits} or less" if fits >= 2 else "use fewer processes (torchrun --nproc-per-node)"
    raise ValueError(
        f"the global batch, TrainConfig.batch_size (--batch-size) = {batch_size} per process x {world} processes "
        f"= {batch_size * world}, is larger than the cohort ({cases} prepared cases); {fix}"
    )


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
    _check_batch(cfg.batch_size, distributed_context().world, len(data))
    ckpt_path = out / CHECKPOINT
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"{out} holds no checkpoint to resume; start a new run without --resume")
    if not resume and ckpt_path.exists():
        raise ValueError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    ckpt = read_checkpoint(ckpt_path) if resume else None
    if ckpt is not None:  # first: another number of processes also makes another batch and pool
        _check_world(out, ckpt, distributed_context().world)
    run = _Run(
        data, out, cfg, augment, ckpt, augment_on=augment_on, channels_last=channels_last, stop_gradient=stop_gradient
    )
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
                    "prepare": preparation(data),
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
        for check in run.health.checks:
            yield _health_event(run, check, total)
        if not run.health.checks:
            yield from _check(run, total, stop)
        elif run.iteration % cfg.checkpoint_every == 0 and run.health.checks[-1]["iteration"] != run.iteration:
            yield from _check(run, total, stop)  # stopped between the step and its check: do it now
        while run.iteration < total:
            # every process stops at the same step; alone, a step also stops inside its encoding
            row = None if run.dist.any(stop is not None and stop()) else run.step(stop)
            if row is None:
                run.save()  # the previous step's state: an abandoned step changed nothing
                yield _event(
                    "stopped",
                    last_row(),
                    total,
                    f"stopped at step {run.iteration} of {total}; checkpoint saved to {run.checkpoint_path()}",
                    iteration=run.iteration,
                )
                return result(True)
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
            for text in run.collapse.update(row.collapse):
                yield _event("warning", row, total, text)
            if run.iteration % cfg.checkpoint_every == 0 or run.iteration == total:
                yield from _check(run, total, stop)
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


def _check(run: _Run, total: int, stop: Callable[[], bool] | None = None) -> Generator[TrainEvent, None, None]:
    """One health check: "progress" events (k of n cases embedded), a "health" event, then any
    warning the monitor gives. A stop between two batches abandons the check (nothing recorded)."""
    row = run.history[-1] if run.history else None
    checking = run.check_health(stop)
    while True:
        try:
            done, n = next(checking)
        except StopIteration as end:
            measured = end.value
            break
        what = "untrained encoder" if run.iteration == 0 else f"step {run.iteration}"
        yield _event("progress", row, total, f"health check ({what}): {done} of {n} cases", iteration=run.iteration)
    if measured is None:
        return
    warnings = run.health.update(measured)
    yield _health_event(run, asdict(measured), total)
    for text in warnings:
        yield _event("warning", row, total, text, iteration=run.iteration)


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
    if run.health.checks:
        text += f", rank {run.health.checks[-1]['effective_rank']:.1f}"
    return text


def run_to_end(gen: Generator[TrainEvent, None, TrainResult]) -> TrainResult:
    """Consume a :func:`train` generator and return its result."""
    return drive(gen)
