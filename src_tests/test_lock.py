"""The folder lock: a second process refuses at once, naming the holder; a dead holder's lock
is taken over; stale temporary files go; atomic writes respect the umask."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from napari_ssl_radiomics.core.lock import LOCK_NAME, LockedError, folder_lock
from napari_ssl_radiomics.core.utils import atomic_path, write_text

HOLD = """
import sys, time
from napari_ssl_radiomics.core.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_refused_with_holder_then_stale_lock_taken_over(tmp_path, caplog):
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        with pytest.raises(LockedError) as err, folder_lock(folder):
            pass
        text = str(err.value)
        assert str(folder) in text and f"PID {proc.pid}" in text and socket.gethostname() in text
        assert (folder / LOCK_NAME).exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a crash: the lock file stays behind
        proc.wait()
    assert (folder / LOCK_NAME).exists()
    with folder_lock(folder) as stale:
        assert stale is not None and stale["pid"] == proc.pid
    assert "no longer running" in caplog.text
    assert not (folder / LOCK_NAME).exists()  # released: the file goes with it


def test_same_process_twice_is_refused_and_lock_released_after_error(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(LockedError), folder_lock(tmp_path):
            pass
    with pytest.raises(RuntimeError), folder_lock(tmp_path):
        raise RuntimeError("boom")
    with folder_lock(tmp_path) as stale:  # free again, and nothing stale
        assert stale is None


def test_refused_lock_leaves_no_new_folder(tmp_path):
    """A folder created only to be locked is removed again when nothing was written."""
    with folder_lock(tmp_path / "new"):
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()


def test_stale_temporary_files_removed_on_next_start(tmp_path):
    (tmp_path / "crops").mkdir()
    leftovers = [tmp_path / ".checkpoint.pt.abc123.tmp", tmp_path / "crops" / ".a.npz.xyz.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    keep = tmp_path / "checkpoint.pt"
    keep.write_bytes(b"whole")
    with folder_lock(tmp_path, clean=("", "crops")):
        pass
    assert not any(p.exists() for p in leftovers) and keep.read_bytes() == b"whole"


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"y")
        os.umask(0o077)
        write_text(tmp_path / "c.txt", "z")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.txt").stat().st_mode & 0o777 == 0o600


def test_two_prepares_into_one_cache(tmp_path):
    """The second `prepare` refuses at once while the first holds the cache."""
    from napari_ssl_radiomics.config import PrepareConfig, SampleConfig
    from napari_ssl_radiomics.core.preprocess import prepare
    from napari_ssl_radiomics.core.sample import write_sample_cohort

    manifest = write_sample_cohort(tmp_path / "s", SampleConfig(cases=4, size=16))
    first = prepare(manifest, PrepareConfig(size=16), tmp_path / "cache")
    next(first)  # the first case is done; the run holds the cache
    second = prepare(manifest, PrepareConfig(size=20), tmp_path / "cache")
    with pytest.raises(LockedError) as err:
        next(second)  # refused before its first case
    assert f"PID {os.getpid()}" in str(err.value)
    first.close()  # the lock goes with the closed run
    for _ in prepare(manifest, PrepareConfig(size=16), tmp_path / "cache"):
        pass
    assert (tmp_path / "cache" / "cases.csv").exists()


def test_a_holder_on_another_host_is_refused_with_the_file_to_delete(tmp_path):
    """A holder this host cannot check (another host of a shared file system): the message says
    to delete the lock file once nothing runs there. (Where flock is missing, filelock's own
    fallback takes over a dead holder's marker on this host.)"""
    import json

    proc = _holder(tmp_path)
    try:
        path = tmp_path / LOCK_NAME
        path.write_text(json.dumps({"pid": 1, "host": "elsewhere"}), encoding="utf-8")
        with pytest.raises(LockedError) as err, folder_lock(tmp_path):
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "host elsewhere" in str(err.value) and str(path) in str(err.value) and "delete" in str(err.value)


def test_a_dead_holder_on_another_host_is_refused_not_taken_over(tmp_path):
    """Nothing holds the flock, but the lock file names a process of another host: whether it
    still runs cannot be checked from here, so it is refused (the file to delete is named)."""
    import json

    path = tmp_path / LOCK_NAME
    left = json.dumps({"pid": 1, "host": "elsewhere", "command": "ssl-radiomics train"})
    path.write_text(left, encoding="utf-8")
    with pytest.raises(LockedError) as err, folder_lock(tmp_path):
        pass
    text = str(err.value)
    assert "host elsewhere" in text and f"delete {path}" in text and "cannot be checked" in text
    assert path.read_text(encoding="utf-8") == left  # left as it was, for the user to judge


def test_a_folder_where_the_lock_file_should_be_gets_its_own_message(tmp_path):
    from napari_ssl_radiomics.core.lock import LockPathError

    (tmp_path / "run" / LOCK_NAME).mkdir(parents=True)
    with pytest.raises(LockPathError) as err, folder_lock(tmp_path / "run"):
        pass
    text = str(err.value)
    assert str(tmp_path / "run" / LOCK_NAME) in text and "is a folder" in text and "remove that folder" in text
