"""The one protocol every long-running core function's progress events follow.

Each of the core's long jobs (prepare, radiomics, train, supervised, evaluate, the pipeline)
is a generator that yields events and returns its result. Whatever else an event carries,
it has ``index`` (units done, counting from 1), ``total`` (units in all, 0 when unknown),
``message`` (one human line, may be empty) and ``level`` (:data:`Level`: "info", or
"warning" when ``message`` warns the user), so that a progress bar, a widget or a log can
show any of them, warnings included, without knowing which job it is.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

R = TypeVar("R")

#: how much an event matters to the user: "warning" events are shown as warnings, the rest as progress
Level = Literal["info", "warning"]


@runtime_checkable
class Progress(Protocol):
    """What every progress event offers (attributes or properties)."""

    @property
    def index(self) -> int: ...

    @property
    def total(self) -> int: ...

    @property
    def message(self) -> str: ...

    @property
    def level(self) -> Level: ...


@dataclass
class CaseEvent:
    """One finished case of a per-case job (``index`` counts from 1).

    ``status`` names what happened to the case (each job lists its own: "ok", "cached",
    "skipped", "failed"); ``reason`` says why, and what to do, when it was not "ok".
    """

    index: int
    total: int
    case_id: str
    status: str
    reason: str = ""

    @property
    def message(self) -> str:
        return f"{self.case_id}: {self.status}" + (f" ({self.reason})" if self.reason else "")

    @property
    def level(self) -> Level:
        return "info"


def drive(gen: Generator[Any, Any, R], on_event: Callable[[Any], None] | None = None) -> R:
    """Run a core generator to its end, handing each event to ``on_event``; return its value.

    An exception raised by ``on_event`` closes the generator (so a training run saves its
    checkpoint) and propagates.
    """
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if on_event is not None:
                on_event(event)
    finally:
        gen.close()
