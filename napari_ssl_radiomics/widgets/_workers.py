"""Background work for the widgets: napari ``thread_worker`` generators around the core's.

The core's long steps (``prepare``, ``train``, ``extract``) are generators that yield
events; :func:`start` runs such a generator in a worker thread and hands each event to the
GUI thread, so the viewer never freezes. Errors reach the user as a napari notification
with the core's own message.

Why :class:`CoreError`: superqt's generator worker treats a ``RuntimeError`` raised by the
work as "the worker was deleted" and swallows it (no ``errored``, no ``finished``), and
``TrainingDiverged`` is a ``RuntimeError``. Re-raising every failure as ``CoreError``
(a plain ``Exception``) makes sure it is reported and the widget leaves its busy state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error

log = logging.getLogger(__name__)


class CoreError(Exception):
    """A failure in the core, carried across the worker thread with its message."""


def _relay(make: Callable[[], Any]) -> Generator[Any, None, Any]:
    try:
        work = make()
        if isinstance(work, Generator):
            return (yield from work)
        return work
    except CoreError:
        raise
    except Exception as exc:  # the message is the core's, meant for the user
        raise CoreError(str(exc) or type(exc).__name__) from exc


def start(
    make: Callable[[], Any],
    *,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    owner: Any = None,
) -> Any:
    """Run ``make()`` in a worker thread and return the started worker.

    Parameters
    ----------
    make : called in the worker; returns a generator (whose events go to ``on_yield`` and
        whose return value goes to ``on_return``) or a plain value (to ``on_return``)
    on_error : called after the error was shown as a napari notification
    on_finish : called last, after success or failure
    owner : a widget whose ``_worker`` attribute holds the worker while it runs (None after)
    """
    holder: dict[str, Any] = {}

    def _errored(exc: Exception) -> None:
        log.debug("worker failed", exc_info=exc)
        show_error(str(exc))
        if on_error is not None:
            on_error(exc)

    def _finished() -> None:
        if owner is not None and getattr(owner, "_worker", None) is holder.get("worker"):
            owner._worker = None
        if on_finish is not None:
            on_finish()

    connect: dict[str, Any] = {"errored": _errored, "finished": _finished}
    if on_yield is not None:
        connect["yielded"] = on_yield
    if on_return is not None:
        connect["returned"] = on_return
    # an "errored" handler given here replaces the default one that re-raises in the GUI thread
    worker = thread_worker(_relay, start_thread=False, connect=connect)(make)
    holder["worker"] = worker
    if owner is not None:
        owner._worker = worker
    worker.start()
    return worker
