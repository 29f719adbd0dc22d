"""The evaluation reports its progress (fit k of n, with the feature set), and runs its
fits in parallel processes with the same results as in one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_ssl_radiomics.config import EvaluateConfig
from napari_ssl_radiomics.core.evaluate import EvaluateEvent, evaluate_iter
from napari_ssl_radiomics.core.events import Progress, drive


def _sets(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.3, "B", "A")
    base = pd.DataFrame({"ID": [f"c{i:02d}" for i in range(n)], "Label": y})
    return {
        "one": base.assign(f0=rng.normal(size=n) + (y == "B"), f1=rng.normal(size=n)),
        "two": base.assign(g0=rng.normal(size=n)),
    }


def test_events_count_every_fit_and_name_the_feature_set_and_fold():
    cfg = EvaluateConfig(label_fractions=(1.0, 0.5), repeats=2, folds=3, jobs=1)
    events: list[EvaluateEvent] = []
    result = drive(evaluate_iter(_sets(), cfg), events.append)
    total = 2 * 2 * 2 * 3  # feature sets x fractions x repeats x folds
    assert all(isinstance(e, Progress) for e in events)
    assert [e.index for e in events] == list(range(1, total + 1)) and {e.total for e in events} == {total}
    assert {e.feature_set for e in events} == {"one", "two"}
    first = events[0].message
    assert first.startswith("one: fold 1 of 3, repeat 1 of 2, 100% labels"), first
    assert len(result.chosen_C) == total


def test_parallel_fits_give_the_same_results_as_one_process():
    cfg = EvaluateConfig(label_fractions=(1.0,), repeats=2, folds=3)
    serial = drive(evaluate_iter(_sets(), EvaluateConfig(**{**cfg.__dict__, "jobs": 1})))
    events: list[EvaluateEvent] = []
    parallel = drive(evaluate_iter(_sets(), EvaluateConfig(**{**cfg.__dict__, "jobs": 2})), events.append)
    assert sorted(e.index for e in events) == list(range(1, 13))
    pd.testing.assert_frame_equal(serial.predictions, parallel.predictions)
    pd.testing.assert_frame_equal(serial.results, parallel.results)
