"""One process at a time in a run folder or a cache: a lock file naming its holder.

:func:`folder_lock` takes ``<folder>/.ssl-radiomics.lock`` for as long as its ``with``
block runs. The lock itself is filelock's (:class:`filelock.FileLock`): an exclusive
``flock`` on that file, which the kernel drops when the holding process dies in any way
(kill -9 included), so a lock left by a dead process is taken over without a timeout. What
this module adds is the holder: the file's content (PID, host, command, start time) serves
the message that a second process gets::

    LockedError: results/runs/se is in use by PID 4242 on host gpu01 (ssl-radiomics train
    ..., since 2026-11-25T13:02:11+00:00); wait for it to finish or stop it, or choose another --out

Where ``flock`` is not available (Windows, some network file systems), filelock falls back
on a marker file whose holder, on this host, is taken over once its process is gone. A
holder on another host cannot be checked from here and is refused: after a crash there,
check that no process uses the folder and delete the lock file (the message names it). On
NFS, Linux maps ``flock`` onto the server's byte-range locks, which the server releases
when the crashed client's lease expires (about 90 s with NFSv4).

Taking a lock also removes the temporary files that an interrupted whole-or-nothing write
(:func:`.utils.atomic_path`) left in the folder: with the lock held, no one else can be
writing them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_NAME = ".ssl-radiomics.lock"
log = logging.getLogger(__name__)


class LockedError(RuntimeError):
    """The folder is in use by another process; ``str()`` names the folder and the holder."""

    def __init__(self, folder: Path, holder: dict, lock_file: Path, checkable: bool = True):
        self.folder, self.holder, self.lock_file = folder, holder, lock_file
        who = describe_holder(holder)
        if checkable:
            advice = "wait for it to finish or stop it, or choose another --out"
        else:
            advice = (
                f"its process cannot be checked from this host: if it is no longer running there, "
                f"delete {lock_file} and start again"
            )
        super().__init__(f"{folder} is in use by {who}; {advice}")


class LockPathError(ValueError):
    """Something that is not a lock file (a folder) is where the lock file should be."""


def describe_holder(holder: dict) -> str:
    """'PID 4242 on host gpu01 (command, since date)' from a lock file's content."""
    text = f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    extra = [str(holder[k]) for k in ("command",) if holder.get(k)]
    if holder.get("started"):
        extra.append(f"since {holder['started']}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def _me() -> dict:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv and sys.argv[0] else "python"
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _read_holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def remove_stale_temp(folder: Path) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files left by interrupted :func:`.utils.atomic_path` writes.

    Call only while holding the folder's lock. Returns the files removed.
    """
    removed = []
    for path in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | Path, clean: tuple[str, ...] = ("",)) -> Iterator[dict | None]:
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block.

    Parameters
    ----------
    folder : the run folder or cache to lock
    clean : subfolders (relative; "" is the folder itself) whose stale temporary files are
        removed once the lock is held

    Yields
    ------
    The content of a stale lock that was taken over (a dead holder of this host), or None.

    Raises
    ------
    LockedError
        When another live process holds the folder, or a process of another host (which
        cannot be checked from here) left its lock file.
    LockPathError
        When a folder is where the lock file should be.
    OSError
        When the folder cannot be created or written (read-only, full disk, a file in the way).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if path.is_dir():
        _drop_if_empty(folder, created)
        raise LockPathError(
            f"{path} is a folder, where {folder}'s lock file should be; remove that folder "
            f"(it is not ssl-radiomics'; move out what it holds first) and start again"
        )
    left = _read_holder(path)  # a released lock deletes its file: content here is a holder's, live or dead
    if left and str(left.get("host", "")) not in ("", socket.gethostname()):
        # a holder on another host of a shared file system: whether it still runs cannot be
        # checked from here (the README says so), so it is refused, never taken over
        raise LockedError(folder, left, path, checkable=False)
    lock = FileLock(path, timeout=0, thread_local=False, on_acquired=_write_holder)
    try:
        lock.acquire()
    except Timeout:
        _drop_if_empty(folder, created)
        holder = _read_holder(path) or left
        raise LockedError(
            folder, holder, path, checkable=holder.get("host", socket.gethostname()) == socket.gethostname()
        ) from None
    except BaseException:
        _drop_if_empty(folder, created)
        raise
    stale = left or None
    if stale:
        log.warning("%s: took over the lock left by %s, which is no longer running", folder, describe_holder(stale))
    try:
        for sub in clean:
            if (folder / sub).is_dir():
                remove_stale_temp(folder / sub)
        yield stale
    finally:
        # Delete while still holding the lock, so that no one takes over a file we are removing.
        with contextlib.suppress(OSError):
            path.unlink()
        lock.release()
        _drop_if_empty(folder, created)


def _drop_if_empty(folder: Path, created: bool) -> None:
    """Remove a folder this lock created when nothing was written to it (a refused start)."""
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _write_holder(fd: int) -> None:
    """Write this process into the lock file (filelock's callback, with the locked descriptor)."""
    data = (json.dumps(_me()) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
