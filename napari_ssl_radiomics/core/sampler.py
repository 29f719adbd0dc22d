"""Which cases each training step reads: the seeded sampler, SE's pool size, k-means seeds.

Every draw comes from state the checkpoint holds (the sampler's numpy generator, its
permutation and position) or from (seed, iteration) alone (:func:`step_seed`), so a resumed
run draws what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import TrainConfig
from .imbalance import default_pool


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
