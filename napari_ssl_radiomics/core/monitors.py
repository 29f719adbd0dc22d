"""The training loop's monitors: plug-ins that watch the run and give warnings.

Each monitor keeps its own counters, returns warning texts from ``update`` (empty when all
is well) and is saved in the checkpoint with ``state()`` and restored with ``from_state()``.
:class:`health.HealthMonitor` watches the health checks (dimensional collapse);
:class:`CollapseMonitor` watches every step's collapse metric (complete collapse).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .health import HealthMonitor as HealthMonitor

#: a step "collapses" when the std of the normalised output is below this share of 1/sqrt(256)
COLLAPSE_FRACTION = 0.1
#: consecutive collapsed steps before the one warning
COLLAPSE_STEPS = 50


@dataclass
class CollapseMonitor:
    """Warns once when the step's collapse metric stays below the floor for ``COLLAPSE_STEPS`` steps.

    The metric is the train-mode std over the batch of the L2-normalised z1, mean over
    dimensions (``model.collapse_metric``); about 1/sqrt(256) = 0.0625 when healthy. It sees
    only complete collapse.
    """

    run: int = 0
    warned: bool = False

    @staticmethod
    def floor() -> float:
        return COLLAPSE_FRACTION / math.sqrt(256)

    def update(self, collapse: float) -> list[str]:
        """Record one step's collapse metric; the warning text when it is due."""
        self.run = self.run + 1 if collapse < self.floor() else 0
        if self.run < COLLAPSE_STEPS or self.warned:
            return []
        self.warned = True
        return [
            f"the representation may be collapsing: the std of the normalised output has been below "
            f"{self.floor():.4f} for {COLLAPSE_STEPS} steps (healthy: about 0.0625); "
            "try stronger augmentation or a lower --lr"
        ]

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> CollapseMonitor:
        state = state or {}
        return cls(run=int(state.get("run", 0)), warned=bool(state.get("warned", False)))

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> CollapseMonitor:
        """The monitor of a checkpoint; format 2 kept its counters at the top level."""
        if "collapse" in ckpt:
            return cls.from_state(ckpt["collapse"])
        return cls.from_state({"run": ckpt.get("collapse_run", 0), "warned": ckpt.get("warned", False)})
