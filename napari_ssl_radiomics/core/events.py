"""The one protocol every long-running core function's progress events follow.

Each of the core's long jobs (prepare, radiomics, train, supervised, evaluate, the pipeline)
is a generator that yields events and returns its result. Whatever else an event carries,
it has ``index`` (units done, counting from 1), ``total`` (units in all, 0 when unknown) and
``message`` (one human line, may be empty), so that a progress bar, a widget or a log can
show any of them without knowing which job it is.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Protocol, TypeVar, runtime_checkable

R = TypeVar("R")


@runtime_checkable
class Progress(Protocol):
    """What every progress event offers (attributes or properties)."""

    @property
    def index(self) -> int: ...

    @property
    def total(self) -> int: ...

    @property
    def message(self) -> str: ...


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
