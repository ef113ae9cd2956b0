"""Every file the package writes goes through here.

`atomic_path` / `atomic_write`: a file is either the old version or the new one, never half of either: write a
temp file in the same directory, flush and fsync it, `os.replace` it over the target, then fsync the directory.
A crash at any instant leaves the previous file intact; a failed write removes its temp file; a write the disk
refuses (full, read-only, no permission) is a one-line `AlexNetError` naming the file. Temp files are named
`.<name>.<random>.tmp<suffix>` (the suffix kept, so writers that go by it, such as matplotlib, still work), and
`sweep_temp_files` removes those a killed process left behind; `append_line` appends to a log.

`output_dir` / `output_file`: the checks a command makes on its output paths before any work starts.
"""

import errno
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alexnet.base.errors import AlexNetError

# errno values that mean "the file system refuses this write": reported as one line naming the path.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.ENOTDIR,
                errno.EISDIR, errno.ENOENT, errno.ENAMETOOLONG}
TEMP_MARK = ".tmp"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # figures: matplotlib picks the format by the suffix


def write_error(path: Path, error: OSError) -> AlexNetError:
    return AlexNetError(f"cannot write {path}: {error.strerror or error}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temp path beside `path` to write to; on a clean exit it replaces `path`."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{path.suffix}")
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in WRITE_ERRNOS:
            raise write_error(path, e) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log (`steps.jsonl`): a refused write is a one-line error, like the others."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise write_error(Path(path), e) from None
        raise


def sweep_temp_files(folder: Path, older_than: float | None = None) -> list[Path]:
    """Remove the temp files of `atomic_path` in `folder` that were last written before `older_than` (a time
    stamp; default now): what a kill during a write leaves. Returns what was removed."""
    limit = time.time() if older_than is None else older_than
    removed = []
    for entry in Path(folder).iterdir():
        name = entry.name
        if name.startswith(".") and TEMP_MARK in name and entry.is_file() and entry.stat().st_mtime < limit:
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def output_dir(path: str | Path) -> Path:
    """A folder a command writes into: created with its parents. One line when a file stands where the folder
    (or one of its parents) should be, or when it cannot be created or written to."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AlexNetError(f"{path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise AlexNetError(f"cannot create folder {path}: a parent is a file") from None
    except OSError as e:
        raise AlexNetError(f"cannot create folder {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise AlexNetError(f"cannot write into {path}: permission denied")
    return path


def output_file(path: str | Path, suffixes: tuple[str, ...] = ()) -> Path:
    """A file a command writes: not a folder, with one of `suffixes` when given (the format goes by it), in a
    folder that exists or can be created."""
    path = Path(path)
    wanted = " or ".join(suffixes)
    if path.is_dir():
        raise AlexNetError(f"{path} is a folder; give a file name" + (f" ending in {wanted}" if wanted else ""))
    if path.exists() and not path.is_file():
        raise AlexNetError(f"{path} is not a regular file (a device, a pipe or a socket); give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise AlexNetError(f"{path}: the file name must end in {wanted}")
    output_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (its entry is on disk only once the directory is synced); best
    effort, as not every OS or filesystem lets a directory be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
