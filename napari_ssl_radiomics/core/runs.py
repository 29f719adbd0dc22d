"""The run folder: what one training run (:func:`.train.train`) leaves on disk, and its readers.

A run folder holds::

    checkpoint.pt   model, optimiser, grad scaler, every RNG state, configs, history
    config.json     train + augment config (recipe resolved), cohort, device, processes, versions
    history.csv     one row per step (:class:`.train.HistoryRow`)
    health.csv      one row per health check (:mod:`.health`)

This module alone spells those names. :func:`.train.train` writes the files; the CLI, the
widgets, the pipeline and the report read them through :class:`RunFolder`. The pipeline keeps
its runs in ``OUT/runs/MODE`` and the Training widget in ``WORK/runs/MODE[-n]``
(:meth:`RunFolder.next_free`). It needs neither torch nor Qt, and imports pandas only to read a
table, so that the CLI's help can name the files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

CHECKPOINT = "checkpoint.pt"
CONFIG_JSON = "config.json"
HISTORY_CSV = "history.csv"
HEALTH_CSV = "health.csv"
#: the folder of a pipeline's (or the Training widget's) runs, one per mode
RUNS_DIR = "runs"
#: training mode -> the paper's name of the method (the rows of Table 2)
MODE_NAMES = {"none": "3DSiam", "se": "3DSiam+SE", "re": "3DSiam+RE", "rubik": "Rubik's cube"}
#: the phases whose batches the imbalance module chose (history.csv's ``phase``)
MODULE_PHASES = ("re", "se")


def parse_ids(value: Any) -> list[str]:
    """Case IDs from a history cell (a JSON list, or IDs separated by ';')."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return []
    text = str(value)
    if text.startswith("["):
        return [str(v) for v in json.loads(text)]
    return [v for v in text.replace(",", ";").split(";") if v]


def empty_batches() -> pd.DataFrame:
    """The table of :meth:`RunFolder.selected_batches` with no row (no run, or no history)."""
    import pandas as pd

    return pd.DataFrame({"iteration": pd.Series(dtype=int), "phase": pd.Series(dtype=str), "ids": []})


@dataclass(frozen=True)
class RunFolder:
    """One training run's folder.

    Parameters
    ----------
    path : the folder (it need not exist yet)
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, run: str | Path) -> RunFolder:
        """The run folder of ``run``: a run folder, or a file in one (its checkpoint)."""
        path = Path(run)
        return cls(path if path.is_dir() else path.parent)

    @classmethod
    def next_free(cls, base: Path, mode: str) -> RunFolder:
        """``base/MODE``, else the first ``base/MODE-n`` (n = 2, 3, …) that holds no checkpoint yet."""
        folder, n = cls(Path(base) / mode), 1
        while folder.has_checkpoint:
            n += 1
            folder = cls(Path(base) / f"{mode}-{n}")
        return folder

    # -- the files --

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.pt``: everything a resume needs."""
        return self.path / CHECKPOINT

    @property
    def config_json(self) -> Path:
        """``config.json``: the resolved settings and the provenance of the run."""
        return self.path / CONFIG_JSON

    @property
    def history_csv(self) -> Path:
        """``history.csv``: one row per step."""
        return self.path / HISTORY_CSV

    @property
    def health_csv(self) -> Path:
        """``health.csv``: one row per health check."""
        return self.path / HEALTH_CSV

    @property
    def has_checkpoint(self) -> bool:
        """Whether the folder holds a run to resume (or to embed with)."""
        return self.checkpoint.exists()

    @property
    def has_history(self) -> bool:
        """Whether the run has written its history (with its first checkpoint)."""
        return self.history_csv.exists()

    # -- the readers --

    def config(self) -> dict[str, Any]:
        """The record of ``config.json`` (the settings are under ``"config"``).

        Raises
        ------
        FileNotFoundError
            When the folder holds no ``config.json``.
        """
        if not self.config_json.exists():
            raise FileNotFoundError(f"{self.path} holds no training run ({CONFIG_JSON} is missing)")
        return json.loads(self.config_json.read_text(encoding="utf-8"))

    def preparation(self) -> dict[str, Any] | None:
        """The prepare settings of the cache the run was trained on (``config.json``'s
        ``cohort.prepare``; a run of an older version recorded only ``size`` and ``channels``).
        None when the folder holds no ``config.json``."""
        if not self.config_json.exists():
            return None
        cohort = self.config().get("cohort") or {}
        if isinstance(cohort.get("prepare"), dict):
            return dict(cohort["prepare"])
        return {key: cohort[key] for key in ("size", "channels") if key in cohort} or None

    def history(self) -> pd.DataFrame:
        """``history.csv``: one row per step."""
        import pandas as pd

        return pd.read_csv(self.history_csv)

    def steps_done(self) -> int:
        """The steps in ``history.csv`` (0 when there is none)."""
        return len(self.history()) if self.has_history else 0

    def health(self) -> pd.DataFrame | None:
        """``health.csv``, or None when the run has none."""
        import pandas as pd

        return pd.read_csv(self.health_csv) if self.health_csv.exists() else None

    @property
    def mode(self) -> str | None:
        """The training mode (``none``, ``re``, ``se``) from ``config.json``; None when unreadable."""
        try:
            record = self.config()
            return record.get("config", record)["train"]["mode"]  # provenance() nests it under "config"
        except (OSError, KeyError, ValueError, TypeError, AttributeError):
            return None

    @property
    def display_name(self) -> str:
        """The paper's name of the run's method (3DSiam, 3DSiam+RE, 3DSiam+SE, Rubik's cube, Rubik's
        cube+RE...); ``SSL`` when unknown."""
        mode = self.mode
        if mode is None:
            return "SSL"
        if self.method == "rubik":
            return MODE_NAMES["rubik"] + ("" if mode == "none" else f"+{mode.upper()}")
        return MODE_NAMES.get(mode, mode)

    @property
    def method(self) -> str:
        """The pretext task, ``siam`` or ``rubik``, from ``config.json`` (``siam`` when it says none)."""
        try:
            record = self.config()
            return str(record.get("config", record)["train"].get("method", "siam"))
        except (OSError, KeyError, ValueError, TypeError, AttributeError):
            return "siam"

    def selected_batches(self) -> pd.DataFrame:
        """The batches the RE/SE module trained on: ``iteration, phase, ids`` (one row per step).

        Only RE- and SE-phase steps of ``history.csv`` count: the vanilla warm-up's batches are
        random draws, not the module's choice. Empty when there is no history.
        """
        import pandas as pd

        if not self.has_history:
            return empty_batches()
        history = self.history()
        if not {"selected_ids", "phase", "iteration"} <= set(history.columns):
            return empty_batches()
        steps = history[history["phase"].astype(str).isin(MODULE_PHASES)]
        return pd.DataFrame(
            {
                "iteration": steps["iteration"].astype(int).to_numpy(),
                "phase": steps["phase"].astype(str).to_numpy(),
                "ids": [parse_ids(cell) for cell in steps["selected_ids"]],
            }
        )


def runs_in(folder: Path) -> dict[str, Path]:
    """The run folders in ``folder`` that hold a history, by name (sorted)."""
    return {p.name: p for p in sorted(Path(folder).glob("*")) if RunFolder(p).has_history}
