"""Small shared helpers: whole-or-nothing file writes, checksums, provenance."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash or an exception leaves any earlier ``path`` untouched and no partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:  # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask)
        os.fchmod(fd, 0o666 & ~current_umask())
    except (AttributeError, OSError):  # pragma: no cover - Windows has no fchmod
        pass
    os.close(fd)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kw: Any) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when closed without error."""
    if "b" not in mode:
        kw.setdefault("encoding", "utf-8")
        kw.setdefault("newline", "")
    with atomic_path(path) as tmp, open(tmp, mode, **kw) as fh:
        yield fh


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, whole or not at all."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: str | Path, frame: Any) -> None:
    """Write a pandas DataFrame as CSV (no index), whole or not at all."""
    with atomic_open(path, "w") as fh:
        frame.to_csv(fh, index=False)


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, or of every file below a folder (a DICOM series)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def config_hash(data: Any) -> str:
    """A short stable hash of a JSON-able settings object."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    """Versions of Python, the platform and every library the pipeline uses."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (
        "napari-ssl-radiomics",
        "numpy",
        "pandas",
        "scipy",
        "torch",
        "SimpleITK",
        "pyradiomics-bhklab",
        "pyradiomics",
        "scikit-learn",
        "umap-learn",
        "matplotlib",
        "napari",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def provenance(config: Any = None, **extra: Any) -> dict[str, Any]:
    """A record of when, with what and with which settings a result was made."""
    from ..config import to_dict

    record: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    if config is not None:
        record["config"] = to_dict(config) if hasattr(config, "__dataclass_fields__") else config
    record.update(extra)
    return record


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --- text IDs -----------------------------------------------------------------------------

#: Columns that hold names, never numbers or missing values: an ID "NA" or "nan" is a case.
TEXT_COLUMNS = ("ID", "Label", "Group")
# pandas' default missing-value markers, still applied to every other (numeric) column.
_NA_MARKERS = [
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]


def read_table_csv(path: str | Path, text: tuple[str, ...] = TEXT_COLUMNS, **kw: Any) -> Any:
    """Read a CSV with the ``text`` columns as written (strings, '' when empty).

    pandas reads an ID ``NA``, ``nan`` or ``None`` as a missing value by default; here
    such cells stay strings, while the other columns keep pandas' usual missing values.
    """
    import pandas as pd

    header = pd.read_csv(path, nrows=0, **kw).columns
    present = [c for c in header if c in text]
    return pd.read_csv(
        path,
        dtype={c: str for c in present},
        keep_default_na=False,
        na_values={c: _NA_MARKERS for c in header if c not in present},
        **kw,
    )


# --- where results go ---------------------------------------------------------------------

_OS_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space or choose another output folder",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose another output folder",
    errno.EROFS: "the file system is read-only; choose a writable output folder",
    errno.EACCES: "permission denied; choose a folder you may write to",
    errno.EPERM: "operation not permitted; choose a folder you may write to",
    errno.ENOTDIR: "a file is in the way of a folder; remove it or choose another output folder",
    errno.EISDIR: "a folder is in the way of a file; give a file name",
    errno.EEXIST: "a file is in the way; remove it or choose another output folder",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error: the file, what went wrong and what to do."""
    where = exc.filename or ""
    what = exc.strerror or str(exc)
    advice = _OS_ADVICE.get(exc.errno or 0, "")
    text = f"cannot write {where}: {what}" if where else what
    return text + (f" ({advice})" if advice else "")


class OutputError(OSError):
    """An output location that cannot be used; ``str()`` is one line naming it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """Check, without writing anything, that ``path`` is or can become a writable folder.

    The nearest existing folder at or above ``path`` must be writable, on a file system
    that is not read-only and not full. Nothing is created: a command that fails later for
    another reason leaves no empty folder behind.

    Raises
    ------
    OutputError
        A file is in the way, or the folder cannot be written (read-only file system,
        permissions, full disk); the message names the path and what to do.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder; give a folder (it is created if needed)")
    base = path.absolute()
    while not base.exists():
        base = base.parent
    problem = None
    if not base.is_dir():
        problem = errno.ENOTDIR
    elif _read_only(base):
        problem = errno.EROFS
    elif not os.access(base, os.W_OK | os.X_OK):
        problem = errno.EACCES
    elif _full(base):
        problem = errno.ENOSPC
    if problem:
        exc = OSError(problem, os.strerror(problem), str(base))
        raise OutputError(f"{what} {path}: {describe_os_error(exc)}")
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # pragma: no cover - no statvfs (Windows)
        return False


def _full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except (AttributeError, OSError):  # pragma: no cover
        return False
    return st.f_bavail * st.f_frsize == 0


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Make sure a file can be written at ``path`` (not a folder; its folder writable)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give the file to write (e.g. {path / 'features.csv'})")
    check_output_folder(path.parent if str(path.parent) else Path("."), what=f"the folder of {what}")
    return path
