"""Writing files safely (docs/guides/run-files.md): names that stay inside their folder, temporary
files created exclusively (never through a link someone planted), publishing by link or rename,
OS errors as one line naming the path, and the lock a run file's writer holds.

The writer's lock is an open-file-description lock (Linux `F_OFD_SETLK`) on the run file, not
HDF5's own file lock: HDF5 takes the same `flock` for readers, so a reader holding a file open
(a notebook, `h5ls`, a `landscape info` loop) made the trainer's open fail. OFD locks and `flock`
do not interact, and a reader tests ours with `F_OFD_GETLK` without taking anything, so readers
never block or break a writer. Everything here opens HDF5 files with `locking=False`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import struct
from pathlib import Path
from typing import IO, Iterator

from landscape.errors import BadInput, LandscapeError, WorkFailed

# Room for the suffixes added to a name (".h5", ".<token>.partial") within the usual 255-byte
# limit of a file name.
MAX_NAME_BYTES = 200


def check_name(name: str, what: str = "--name") -> str:
    """`name` if it is one plain file name (it then stays inside the folder it is put in)."""
    if name is None or name.strip() in ("", ".", ".."):
        raise BadInput(f"{what} must be a file name, got {name!r}")
    if any(sep in name for sep in ("/", "\\", "\0")) or (os.altsep and os.altsep in name):
        raise BadInput(f"{what} must be a file name, not a path: {name!r} (use --out for the "
                       "folder)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise BadInput(f"{what} is too long ({len(name.encode())} bytes; at most {MAX_NAME_BYTES})")
    return name


def os_error(err: OSError, path: Path | str) -> LandscapeError:
    """An OS error while writing `path` as one line: a read-only or forbidden place is bad input
    (exit 2), a full disk or another fault a failure of the work (exit 1)."""
    code = err.errno
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if code in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR):  # the place asked for
        return BadInput(f"cannot write {path}: {os.strerror(code)}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return WorkFailed(f"cannot write {path}: no space left on the device ({os.strerror(code)})")
    return WorkFailed(f"cannot write {path}: {text}")


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInput(f"{folder} exists and is not a folder") from None
    except OSError as err:
        raise os_error(err, folder) from None


@contextlib.contextmanager
def temporary(path: Path) -> Iterator[Path]:
    """A fresh name beside `path` that nothing has: the block creates the file there exclusively
    (h5py mode "w-" or `create_exclusive`: O_EXCL, which fails on any existing name, a link
    included). Removed if the block fails; the block's OS errors come out as `os_error`."""
    make_folder(path.parent)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.partial")
    try:
        yield tmp
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise os_error(err, path) from None
        raise


# What HDF5's metadata may need beyond the arrays: object headers, chunk indexes, attributes.
SPACE_MARGIN = 2**18


def check_space(path: Path, nbytes: int) -> None:
    """A failure of the work, before anything is written, if `path`'s file system lacks room for
    `nbytes`: HDF5 that runs out of space while making a file fails in its cleanup too (streams
    of errors, then a crash)."""
    free = shutil.disk_usage(path.parent).free
    if nbytes + SPACE_MARGIN > free:
        raise WorkFailed(f"cannot write {path}: it needs about {(nbytes + SPACE_MARGIN) / 2**20:.1f} "
                         f"MiB and the device has {free / 2**20:.1f} MiB free")


def reserve(path: Path) -> None:
    """Allocate the blocks of a file's holes now (its datasets' space is allocated but unwritten,
    i.e. sparse), so that a disk filling up later cannot fail the epochs written into them."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def create_exclusive(path: Path) -> int:
    """A new file's descriptor, for writing; never opens an existing file or follows a link."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)


def publish(tmp: Path, path: Path, *, replace: bool) -> None:
    """Give the complete file `tmp` its name `path`, atomically (inside `temporary`, which
    removes `tmp` if this fails). Unless `replace`, `path` must not exist (a hard link fails if
    it does), so that two processes never both take the name."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise BadInput(f"{path} was made by another process meanwhile (a run in progress); "
                       "wait for it to finish, or give this one another --out") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A file system without hard links: rename after a last check (not race-free).
        if path.exists():
            raise BadInput(f"{path} was made by another process meanwhile") from None
        os.replace(tmp, path)
    else:
        tmp.unlink()


@contextlib.contextmanager
def replaced(path: Path, mode: str = "w", **options) -> Iterator[IO]:
    """The open file (`mode`, open()'s `options`) that replaces `path` atomically when the block
    ends: written under a temporary name beside it, never half under its own."""
    with temporary(path) as tmp:
        with os.fdopen(create_exclusive(tmp), mode, **options) as f:
            yield f
        publish(tmp, path, replace=True)


def write_text(path: Path, text: str) -> None:
    """A small text file replaced atomically (the sweep index)."""
    with replaced(path) as f:
        f.write(text)


# struct flock on 64-bit Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (int).
_FLOCK = "hhqqi4x"
_OFD = hasattr(fcntl, "F_OFD_SETLK")


def _ofd(fd: int, command: int, kind: int) -> int:
    """fcntl with an OFD lock record over the whole file; returns the record's l_type."""
    record = fcntl.fcntl(fd, command, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
    return struct.unpack(_FLOCK, record)[0]


class WriteLock:
    """Held by the one process writing a run file, for as long as it writes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            if _OFD:
                _ofd(self.fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
            else:  # no OFD locks (macOS): flock, which HDF5's readers take too
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(self.fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise BadInput(f"{self.path} is being written by another process (a run in "
                               "progress); wait for it to finish, or give this one another "
                               "--out") from None
            raise

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the description releases its lock
            self.fd = -1


def being_written(path: Path) -> bool:
    """Whether a process holds `path`'s WriteLock, tested without taking a lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if _OFD:
            return _ofd(fd, fcntl.F_OFD_GETLK, fcntl.F_RDLCK) != fcntl.F_UNLCK
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        return False
    finally:
        os.close(fd)


def digest(path: Path) -> str:
    """sha256 of a file's bytes: identifies the weights a result was computed from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
