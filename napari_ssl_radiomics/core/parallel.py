"""One per-case executor for ``prepare`` and ``radiomics``: this machine's cores, or a Dask cluster.

:func:`run_cases` runs ``fn(*args)`` once per case and yields an :class:`Outcome` as each
case finishes (completion order, so a progress bar moves with the work):

* **In this process** (``jobs <= 1`` or a single case): plain calls, no pool.
* **A local process pool** (no scheduler address): today's ``ProcessPoolExecutor``. Each
  worker watches its parent and ends when the parent dies (``kill -9`` of the CLI, a
  crashed napari), instead of running on as an orphan: on Linux the kernel sends it
  SIGKILL (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread wakes when the parent's
  sentinel pipe closes (``multiprocessing.parent_process()``).
* **A Dask cluster** (``scheduler='tcp://host:8786'``): each case is one task, submitted
  to ``distributed.Client(scheduler)``; outcomes come from ``as_completed``. A worker that
  dies mid-task has its tasks rescheduled on the others by the scheduler (up to Dask's
  ``distributed.scheduler.allowed-failures``, 3 by default; after that the case's outcome
  holds ``KilledWorker``). Dask is imported only here, and only when an address is given.
  Dask waits for ever for a worker when all are gone, so the outcomes are polled: once the
  cluster has had no worker for ``timeout_s`` seconds, or has lost its scheduler, a
  :class:`ClusterError` ends the run with one line (the cases already written stay
  cached). The address is checked (:func:`..config.scheduler_problem`) before any client
  exists.

The cluster shares this machine's filesystem (image paths, the cache folder): the workers
read the sources and write the per-case results where this process reads them. Before any
task is sent, every worker is asked whether it can read the first case's files, so that a
cluster without the shared filesystem fails at once with a message naming the worker and
the path, instead of skipping every case.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ClusterError(ValueError):
    """The Dask cluster cannot do the work (unreachable, no workers, no shared files).

    A ValueError, because the user fixes it in the settings (``--scheduler``) or the
    cluster, and the command line reports it as such, without a traceback.
    """


@dataclass
class Outcome:
    """The result of one case: ``index`` into the submitted list, and ``value`` or ``error``.

    ``error`` is set when the call raised, or its worker died (a local pool's
    ``BrokenProcessPool``, Dask's ``KilledWorker``).
    """

    index: int
    value: Any = None
    error: BaseException | None = None


# --- local process pool: workers that end with their parent ------------------------------


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this process when the thread that created it ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - an unusual libc
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable; relying on the watchdog", exc_info=True)


def _watch_parent(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the parent's sentinel closes: it has died
    os._exit(1)


def _start_worker(init: Callable[[], None] | None, pdeathsig: bool) -> None:
    """Initializer of every local pool worker: tie its life to the parent's, then ``init``."""
    if pdeathsig:
        _set_parent_death_signal()
    # The sentinel, not getppid(): a parent that died while this worker was still starting
    # is seen too, and a forkserver's workers watch the process that asked for them.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True).start()
    if init is not None:
        init()


def _local(
    fn: Callable[..., Any],
    items: Sequence[tuple],
    jobs: int,
    init: Callable[[], None] | None,
    mp_context: multiprocessing.context.BaseContext | None,
) -> Generator[Outcome, None, None]:
    ctx = mp_context or multiprocessing.get_context("spawn")
    # PR_SET_PDEATHSIG fires when the creating *thread* ends. The main thread ends with the
    # process, and a forkserver creates workers from its own main thread; a pool started
    # from another thread (napari's worker) relies on the watchdog alone.
    pdeathsig = ctx.get_start_method() == "forkserver" or threading.current_thread() is threading.main_thread()
    pool = ProcessPoolExecutor(
        min(jobs, len(items)), mp_context=ctx, initializer=_start_worker, initargs=(init, pdeathsig)
    )
    try:
        pending: dict[Future, int] = {pool.submit(fn, *args): i for i, args in enumerate(items)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                try:
                    yield Outcome(index, future.result())
                except Exception as exc:  # noqa: BLE001 - the worker died (memory, signal) or fn raised
                    yield Outcome(index, error=exc)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- Dask ---------------------------------------------------------------------------------

_INITIALISED: set[str] = set()


def _dask_task(init: Callable[[], None] | None, fn: Callable[..., Any], args: tuple) -> Any:
    """What a Dask worker runs for one case: ``init`` once per worker process, then ``fn``."""
    if init is not None:
        name = f"{init.__module__}.{init.__qualname__}"
        if name not in _INITIALISED:
            init()
            _INITIALISED.add(name)
    return fn(*args)


def _unreadable(paths: list[str]) -> list[str]:
    """The paths of ``paths`` this worker cannot see (runs on every worker)."""
    return [p for p in paths if not os.path.exists(p)]


def connect(scheduler: str, timeout_s: float = 30.0) -> Any:
    """A ``distributed.Client`` of the scheduler at ``scheduler``, with at least one worker.

    Raises
    ------
    ClusterError
        When the address is not one Dask accepts (checked before any client exists), Dask
        is not installed, the scheduler cannot be reached, or no worker joins within
        ``timeout_s`` seconds.
    """
    from ..config import scheduler_problem

    problem = scheduler_problem(scheduler)
    if problem:
        raise ClusterError(f"Dask scheduler {scheduler!r}: {problem}")
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError(
            f"a Dask scheduler ({scheduler}) was given but dask.distributed is not installed; "
            "pip install 'napari-ssl-radiomics[cluster]', or leave the scheduler empty for the local process pool"
        ) from None
    try:
        client = Client(scheduler, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with `dask scheduler` and workers "
            f"with `dask worker {scheduler}` (see docs/scaling.md), or leave the scheduler empty to run locally"
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (OSError, TimeoutError):
        client.close()
        raise ClusterError(
            f"the Dask scheduler at {scheduler} has no worker after {timeout_s:g} s; start some with "
            f"`dask worker {scheduler}`"
        ) from None
    return client


def check_shared(client: Any, paths: list[str], scheduler: str) -> None:
    """Raise ClusterError when a worker cannot see a path this process sees."""
    if not paths:
        return
    for worker, missing in client.run(_unreadable, paths).items():
        if missing:
            raise ClusterError(
                f"Dask worker {worker} cannot read {missing[0]} (this machine can): the workers of {scheduler} must "
                "see the same filesystem at the same paths (image files and the output folder); mount it there, "
                "or use absolute paths that are valid on every worker"
            )


def _dask(
    fn: Callable[..., Any],
    items: Sequence[tuple],
    scheduler: str,
    init: Callable[[], None] | None,
    shared_paths: list[str],
    label: str,
    timeout_s: float,
) -> Generator[Outcome, None, None]:
    client = connect(scheduler, timeout_s)
    futures: dict[Any, int] = {}
    try:
        check_shared(client, shared_paths, scheduler)
        run = uuid.uuid4().hex[:8]
        # pure=False and a unique key per run: a re-run is new work, not a lookup of old results
        futures = {
            client.submit(_dask_task, init, fn, args, key=f"{label}-{run}-{i}", pure=False): i
            for i, args in enumerate(items)
        }
        watch = _Watch(client, scheduler, timeout_s, len(items))
        for future in _as_completed(futures, watch):
            index = futures.pop(future)
            yield _outcome(index, future, watch)
            watch.done += 1
    finally:
        _close(client, list(futures))


def _close(client: Any, pending: list[Any]) -> None:
    """Cancel the cases not read (the caller stopped early: do not leave the cluster busy with
    them) and close the client. Dask logs a traceback when a client whose scheduler is gone
    stops reconnecting: noise after the one line the user gets, so it is kept quiet here."""
    quiet = [logging.getLogger(name) for name in ("distributed.client", "distributed.utils", "distributed.core")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        if pending:
            client.cancel(pending)
        client.close()
    except (OSError, TimeoutError):  # the scheduler is gone: nothing left to cancel there
        pass
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


#: seconds between two looks at the cluster while cases run
POLL_S = 0.5


class _Watch:
    """Whether a Dask cluster still has workers; ``check()`` raises ClusterError once it has
    had none for ``timeout_s`` seconds (Dask itself waits for ever for one to come back)."""

    def __init__(self, client: Any, scheduler: str, timeout_s: float, total: int) -> None:
        self.client, self.scheduler, self.timeout_s, self.total = client, scheduler, timeout_s, total
        self.done = 0
        self.alone_since: float | None = None

    def progressed(self) -> None:
        self.alone_since = None

    def check(self) -> None:
        if _has_workers(self.client):
            self.alone_since = None
        elif self.alone_since is None:
            self.alone_since = time.monotonic()
        elif time.monotonic() - self.alone_since >= self.timeout_s:
            raise self.lost(f"has had no worker for {self.timeout_s:g} s (--timeout)", "start workers with")

    def lost(self, what: str, fix: str) -> ClusterError:
        """The one line that ends a run whose cluster went away: what is kept, how to go on."""
        return ClusterError(
            f"the Dask cluster at {self.scheduler} {what}; {self.done} of {self.total} cases came back and every "
            f"case the workers finished is kept: {fix} `dask worker {self.scheduler}` and run the same command "
            "again to finish the rest"
        )


def _as_completed(futures: dict[Any, int], watch: _Watch) -> Generator[Any, None, None]:
    """Dask futures as they finish, polled, so that a cluster without workers ends the wait."""
    from distributed import as_completed

    pending = as_completed(list(futures), loop=watch.client.loop)
    while not pending.is_empty():
        finished = pending.next_batch(block=False)
        if finished:
            watch.progressed()
            yield from finished
        else:
            watch.check()
            time.sleep(POLL_S)


def _outcome(index: int, future: Any, watch: _Watch) -> Outcome:
    """A finished future's outcome. Its result lives on the worker that ran it: when that
    worker has died, Dask runs the case again ("Couldn't gather keys, rescheduling"), which
    needs a worker, so the wait is watched too."""
    while True:
        try:
            return Outcome(index, future.result(timeout=POLL_S))
        except TimeoutError:
            watch.check()
        except CancelledError:  # we cancel only what we no longer read: the scheduler is gone
            raise watch.lost("lost its scheduler", "restart `dask scheduler` and") from None
        except Exception as exc:  # noqa: BLE001 - KilledWorker after repeated worker deaths, or fn raised
            return Outcome(index, error=exc)


def _has_workers(client: Any) -> bool:
    try:
        return bool(client.nthreads())
    except (OSError, TimeoutError):  # the scheduler itself is gone: no worker either
        return False


# --- the one entry point ------------------------------------------------------------------


def run_cases(
    fn: Callable[..., Any],
    items: Sequence[tuple],
    *,
    jobs: int = 1,
    scheduler: str = "",
    init: Callable[[], None] | None = None,
    mp_context: multiprocessing.context.BaseContext | None = None,
    shared_paths: list[str | Path] | None = None,
    label: str = "case",
    timeout_s: float = 30.0,
) -> Generator[Outcome, None, None]:
    """Run ``fn(*args)`` for each ``args`` of ``items``; yield outcomes as cases finish.

    Parameters
    ----------
    fn : a module-level function (it is pickled to the workers)
    items : one tuple of arguments per case (picklable)
    jobs : local worker processes; <= 1 runs in this process (ignored with a scheduler)
    scheduler : a Dask scheduler address (``tcp://host:8786``); empty: this machine
    init : run once in each worker process before its first case (e.g. thread limits)
    mp_context : start method of the local pool (default: spawn)
    shared_paths : files and folders every Dask worker must see (checked before any task)
    label : the Dask task-name prefix (shown in Dask's dashboard)
    timeout_s : seconds to wait for the scheduler and its first worker, and for a worker while none is left

    Yields
    ------
    Outcome
        One per item, in completion order. Closing the generator cancels the cases not
        yet started.
    """
    if not items:
        return
    if scheduler:
        shared = [str(Path(p).resolve()) for p in (shared_paths or [])]
        yield from _dask(fn, items, scheduler, init, shared, label, timeout_s)
    elif jobs <= 1 or len(items) == 1:
        for index, args in enumerate(items):
            try:
                yield Outcome(index, fn(*args))
            except Exception as exc:  # noqa: BLE001 - reported like a worker's failure
                yield Outcome(index, error=exc)
    else:
        yield from _local(fn, items, jobs, init, mp_context)
