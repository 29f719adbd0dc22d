"""Every core progress event follows one protocol, and drive() runs any core generator."""

import pytest

from napari_ssl_radiomics.core.events import Progress, drive
from napari_ssl_radiomics.core.pipeline import StageEvent
from napari_ssl_radiomics.core.preprocess import PrepareEvent
from napari_ssl_radiomics.core.radiomics import RadiomicsEvent
from napari_ssl_radiomics.core.supervised import SupervisedEvent
from napari_ssl_radiomics.core.train import TrainEvent


@pytest.mark.parametrize(
    "event",
    [
        PrepareEvent(2, 5, "case_1", "skipped", "empty mask"),
        RadiomicsEvent(3, 5, "case_2", "failed", "GLCM failed"),
        SupervisedEvent(2, 4, 0, 1, 0.5, 3, 10, 0.7, 1.0),
        TrainEvent("step", 7, 20),
        StageEvent("prepare", "progress", 4, 9, "case_3: ok"),
    ],
)
def test_every_event_offers_index_total_message(event):
    assert isinstance(event, Progress)
    assert 0 < event.index <= event.total
    assert isinstance(event.message, str)
    assert event.level == "info"  # progress; warnings say so in the protocol, see below


@pytest.mark.parametrize(
    "event",
    [
        SupervisedEvent(2, 4, 0, 1, 0.5, 3, 10, 0.7, 1.0, kind="warning", note="did not converge"),
        TrainEvent("warning", 7, 20, message="collapsing"),
        StageEvent("train", "warning", 7, 20, "collapsing"),
    ],
)
def test_warnings_are_part_of_the_protocol(event):
    assert isinstance(event, Progress) and event.level == "warning" and event.message


def test_supervised_index_counts_steps_over_all_splits():
    event = SupervisedEvent(2, 4, 0, 1, 0.5, 3, 10, 0.7, 1.0)
    assert (event.index, event.total) == (13, 40)
    assert "split 2/4" in event.message


def test_drive_hands_each_event_over_and_returns_the_value():
    def job():
        for i in range(3):
            yield StageEvent("s", "progress", i + 1, 3)
        return "result"

    seen = []
    assert drive(job(), seen.append) == "result"
    assert [e.index for e in seen] == [1, 2, 3]


def test_drive_closes_the_generator_when_the_consumer_fails():
    closed = []

    def job():
        try:
            while True:
                yield StageEvent("s", "progress", 1, 1)
        finally:
            closed.append(True)

    def fail(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(job(), fail)
    assert closed == [True]
