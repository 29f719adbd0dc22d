"""One process at a time in a run folder or a cache: a lock file naming its holder.

:func:`folder_lock` takes ``<folder>/.ssl-radiomics.lock`` for as long as its ``with``
block runs. The lock itself is an exclusive ``flock`` on that file, which the kernel drops
when the holding process dies in any way (kill -9 included), so a lock left by a dead
process is detected and taken over without a timeout. The file's content (PID, host,
command, start time) only serves the message that a second process gets::

    LockedError: results/runs/se is in use by PID 4242 on host gpu01 (ssl-radiomics train
    ..., since 2026-11-25T13:02:11+00:00); wait for it to finish or stop it, or choose another --out

Where ``flock`` is not available (Windows, some network file systems), the file's own
presence is the lock: a holder that is no longer alive on this host is stale and taken
over; a holder on another host cannot be checked from here and is refused. After a crash
on another host, check that no process uses the folder and delete the lock file (the
message names it). On NFS, Linux maps ``flock`` onto the server's byte-range locks, which
the server releases when the crashed client's lease expires (about 90 s with NFSv4).

Taking a lock also removes the temporary files that an interrupted whole-or-nothing write
(:func:`.utils.atomic_path`) left in the folder: with the lock held, no one else can be
writing them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".ssl-radiomics.lock"
log = logging.getLogger(__name__)

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# flock is not supported here: fall back on the file's presence and the holder's PID.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


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


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:  # pragma: no cover - e.g. Windows without that PID
        return False
    return True


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
    The content of a stale lock that was taken over (a dead holder), or None.

    Raises
    ------
    LockedError
        When another live process holds the folder.
    OSError
        When the folder cannot be created or written (read-only, full disk, a file in the way).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        fd, stale = _acquire(folder, path)
    except BaseException:
        _drop_if_empty(folder, created)
        raise
    if stale:
        log.warning("%s: took over the lock left by %s, which is no longer running", folder, describe_holder(stale))
    try:
        for sub in clean:
            if (folder / sub).is_dir():
                remove_stale_temp(folder / sub)
        yield stale
    finally:
        _release(path, fd)
        _drop_if_empty(folder, created)


def _drop_if_empty(folder: Path, created: bool) -> None:
    """Remove a folder this lock created when nothing was written to it (a refused start)."""
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _acquire(folder: Path, path: Path) -> tuple[int, dict | None]:
    if fcntl is None:
        return _acquire_by_pid(folder, path)
    for _ in range(20):  # retried only when the file was replaced under us
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(folder, _read_holder(path), path) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_FLOCK:
                return _acquire_by_pid(folder, path)
            raise
        # The holder before us may have deleted the file between our open and our flock:
        # then we hold a lock on a file no one else can see; try again on the new one.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        previous = _read_holder(path)
        _write_holder(fd)
        return fd, (previous or None)
    raise OSError(errno.EAGAIN, f"could not take the lock {path}; try again")  # pragma: no cover


def _write_holder(fd: int) -> None:
    data = (json.dumps(_me()) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _acquire_by_pid(folder: Path, path: Path) -> tuple[int, dict | None]:
    """The fallback: the file's existence is the lock; a dead holder on this host is stale."""
    stale = None
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            here = holder.get("host") == socket.gethostname()
            if not here:
                raise LockedError(folder, holder, path, checkable=False) from None
            if pid_alive(int(holder.get("pid", 0) or 0)):
                raise LockedError(folder, holder, path) from None
            stale = holder
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        _write_holder(fd)
        return fd, stale
    raise LockedError(folder, _read_holder(path), path)


def _release(path: Path, fd: int) -> None:
    # Delete while still holding the lock, so that no one takes over a file we are removing.
    with contextlib.suppress(OSError):
        path.unlink()
    with contextlib.suppress(OSError):
        os.close(fd)
