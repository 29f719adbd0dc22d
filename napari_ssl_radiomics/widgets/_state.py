"""The state the dock widgets of one viewer share (cohort, cache, run, case, features).

napari creates each dock widget on its own, with the viewer as only argument; the widgets
meet through :func:`get_state`, one :class:`State` per viewer. It is a pull object: a widget
reads the fields when it needs them, and writes them through the ``set_*`` methods, which
keep the fields consistent (a new cohort clears its cases and case). Two changes are pushed,
because a widget follows them at once: ``case_changed`` (the Cohort dock shows the case) and
``run_changed`` (the Training dock's Resume button).
"""

from __future__ import annotations

import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from psygnal import Signal

from ..config import AugmentConfig, PrepareConfig

#: Names of the layers the widgets own (re-used, not duplicated, on each update).
IMAGE_LAYER = "case image"
MASK_LAYER = "case mask"
COHORT_MASKS = "cohort masks"
VIEW_LAYERS = ("view 1", "view 2")
VIEW_OUTLINES = ("view 1 outline", "view 2 outline")  #: the mask's outline over each view


@dataclass
class State:
    """What the widgets of one viewer share.

    Attributes
    ----------
    workdir : folder for the prepared cache, runs and results (a temporary folder until chosen)
    cohort : the loaded :class:`~napari_ssl_radiomics.core.cohort.Cohort` (or None)
    cases : the cache's ``cases.csv`` table after ``prepare`` (ID, Label, Group, status, reason, file)
    prepare : the preparation settings used for the cache
    augment : the augmentation settings, shared by the preview and the training widget
    run_dir : the current training run folder (its files: :mod:`..core.runs`)
    case_id : the selected case
    features : the last combined feature table (ID, Label, Group, features...)
    """

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ssl-radiomics-")))
    cohort: Any = None
    cases: pd.DataFrame | None = None
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run_dir: Path | None = None
    case_id: str | None = None
    features: pd.DataFrame | None = None
    _prepared: Any = None

    case_changed = Signal(str)
    run_changed = Signal()
    augment_changed = Signal()

    @property
    def cache_dir(self) -> Path:
        """The prepared cache of the current cohort."""
        return self.workdir / "prepared"

    def set_cohort(self, cohort: Any) -> None:
        self.cohort = cohort
        self.cases = None
        self._prepared = None
        self.case_id = None

    def set_cases(self, cases: pd.DataFrame, prepare: PrepareConfig) -> None:
        self.cases = cases
        self.prepare = prepare
        self._prepared = None

    def prepared(self) -> Any:
        """The :class:`~napari_ssl_radiomics.core.cache.PreparedCohort` of the cache (loaded once).

        Raises
        ------
        FileNotFoundError
            When no cohort has been prepared yet.
        """
        if self._prepared is None:
            from ..core.cache import load_prepared

            if self.cases is None:
                raise FileNotFoundError(
                    "no prepared cohort: load a cohort and press Prepare in the Cohort widget first"
                )
            self._prepared = load_prepared(self.cache_dir)
        return self._prepared

    def ok_ids(self) -> list[str]:
        if self.cases is None:
            return []
        return list(self.cases.loc[self.cases["status"] != "skipped", "ID"])

    def set_case(self, case_id: str) -> None:
        if case_id != self.case_id:
            self.case_id = case_id
            self.case_changed.emit(case_id)

    def set_augment(self, cfg: AugmentConfig) -> None:
        if cfg != self.augment:
            self.augment = cfg
            self.augment_changed.emit()

    def set_run(self, run_dir: Path | None) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_changed.emit()

    def set_features(self, table: pd.DataFrame) -> None:
        self.features = table


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_state(viewer: Any) -> State:
    """The one :class:`State` of ``viewer`` (created on first use)."""
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = State()
    return state
