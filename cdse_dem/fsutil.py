"""Writing files so that a final name only ever holds a whole file.

Everything the tool leaves on disk (DEM layers, the name→id JSON, credentials) is first
written under a temporary name in the SAME folder, flushed and fsynced, then renamed over
the final name with ``os.replace``: a rename within one filesystem is atomic, so a crash,
a Ctrl-C or a full disk leaves either the old file or the new one, never half of one.

Temporary names are hidden (leading dot), end in ``.cdse-tmp`` (so no ``*_DEM.tif`` glob,
Sen2Cor's included, can pick one up). Each one is held under an OS lock (``cdse_dem.locks``)
by its writer from its creation until it is renamed into place or removed, which lets a later
run remove the leftovers of a killed run without touching those of a run still going on,
even one in another PID namespace or on another host sharing the folder: a temporary is
judged by its lock, never by the process id in its name, nor by its age.
"""

import errno
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from cdse_dem import locks
from cdse_dem.errors import DemError, DiskFull

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".cdse-tmp"
_MAX_STEM = 150  # keeps "<dot><stem>.<pid>-<hex><suffix>" well under the 255-byte name limit
_TEMP_RE = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)-(?P<rand>[0-9a-f]{8})" + re.escape(TEMP_SUFFIX) + "$")
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_held: dict[str, int] = {}  # temporary path -> the open descriptor holding its lock
_held_lock = threading.Lock()


def raise_if_disk_full(exc: OSError, folder: Path) -> None:
    """Turn ENOSPC / EFBIG / EDQUOT into one line naming the folder; other errors are left to the caller."""
    if exc.errno in _DISK_FULL:
        raise DiskFull(f"no space left to write in {folder} ({exc.strerror or exc})") from exc


def temp_path_in(folder: Path, final_name: str) -> Path:
    """A fresh temporary name in ``folder`` for a file that will become ``final_name``.

    Same folder, hence same filesystem, so the final ``os.replace`` is atomic.
    """
    stem = Path(final_name).name[:_MAX_STEM] or "file"
    return Path(folder) / f".{stem}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def create_temp_in(folder: Path, final_name: str, mode: int | None = None) -> tuple[Path, BinaryIO]:
    """Create (exclusively) and open for binary writing a new temporary for ``final_name``.

    With ``mode`` the file is created with exactly those permissions, so a secret never
    exists, even briefly, readable by others.
    """
    folder = Path(folder)
    for _ in range(10):
        path = temp_path_in(folder, final_name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o600 if mode is not None else 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise_if_disk_full(exc, folder)
            raise
        try:
            if not _hold(path):
                os.close(fd)  # a sweeping run took it for a leftover in the instant before the lock
                continue
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fd, mode)  # exact, whatever the umask
            return path, os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            remove_quietly(path)
            raise
    raise FileExistsError(f"could not create a temporary file in {folder}")


def _hold(path: Path) -> bool:
    """Lock a new temporary for as long as we own it; False if it was removed before we could."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        locks.lock_fd(fd)  # held by a sweeper at most for the instant it takes to check it
        if not locks.same_file(fd, path):
            os.close(fd)
            return False
    except BaseException:
        os.close(fd)
        raise
    with _held_lock:
        _held[str(path)] = fd
    return True


def _let_go(path: Path) -> None:
    """Release the lock of a temporary that is renamed into place or removed."""
    with _held_lock:
        fd = _held.pop(str(path), None)
    if fd is not None:
        try:
            locks.unlock_fd(fd)
        finally:
            os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; best effort (not possible on every OS/filesystem)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_into_place(temp: Path, final: Path) -> None:
    """Rename a finished, fsynced temporary over ``final`` (atomic) and make the rename durable.

    The temporary's lock is let go after the rename (before it on Windows, which cannot rename
    an open file), so no sweeping run ever sees it unlocked under its temporary name.
    """
    if os.name == "nt":  # pragma: no cover
        _let_go(temp)
    try:
        os.replace(temp, final)
    finally:
        _let_go(temp)
    fsync_dir(Path(final).parent)


def remove_quietly(path: Path | None) -> None:
    """Delete a file if it is there; cleaning up must never hide the error being reported."""
    if path is None:
        return
    if os.name == "nt":  # pragma: no cover - an open file cannot be removed there
        _let_go(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("could not remove %s: %s", path, exc)
    finally:
        _let_go(path)


@contextmanager
def atomic_writer(path: Path, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary handle whose bytes replace ``path`` all at once when the block ends without error.

    The one way the tool writes a file: a temporary in the same folder (``mode``: its exact
    permissions from the first byte, e.g. 0o600), fsynced, renamed over ``path``. An exception
    in the block (a failed check of what was written, Ctrl-C) or while writing leaves the old
    file untouched and no temporary behind; a full disk is :class:`DiskFull`, any other OSError
    passes through.
    """
    path = Path(path)
    temp, handle = create_temp_in(path.parent, path.name, mode)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        replace_into_place(temp, path)
    except OSError as exc:
        remove_quietly(temp)
        raise_if_disk_full(exc, path.parent)
        raise
    except BaseException:
        remove_quietly(temp)
        raise


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` all at once (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode) as handle:
        handle.write(data)


def atomic_write_json(path: Path, obj: Any, mode: int | None = None, *, indent: int | None = 2,
                      sort_keys: bool = True) -> None:
    """Write ``obj`` as UTF-8 JSON atomically; sorted keys keep files stable across runs (diffable)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def set_aside(path: Path, label: str) -> Path:
    """Move a file the tool cannot use out of its way, kept as it was for the user to look at.

    Its new name says what it is and when it was moved: ``<name>.<label>-<YYYYmmddTHHMMSS>``
    (``dict_filename_dem_id.json.corrupt-20250101T120000``). Nothing already there is ever
    replaced (an earlier copy set aside, a link someone put there): a counter is added instead.
    Returns the new path; OSError when the file cannot be moved (the caller says what that means).
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 1
    while os.path.lexists(aside):
        aside = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
        n += 1
    os.replace(path, aside)
    fsync_dir(path.parent)
    return aside


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporaries and lock files in ``folder`` left by runs that died; returns what was removed.

    A temporary is a leftover when nobody holds its lock: its writer ended without renaming
    or removing it (killed, powered off). A live writer always holds it, whatever its process
    id namespace or host. Files not named by us are never touched.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        ours = _TEMP_RE.match(entry.name) or (entry.name.startswith(".") and entry.name.endswith(locks.LOCK_SUFFIX))
        if not ours or not entry.is_file(follow_symlinks=False):
            continue
        if _remove_if_unlocked(Path(entry.path)):
            removed.append(Path(entry.path))
    if removed:
        log.info("Removed %d leftover temporary file(s) from %s", len(removed), folder)
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        if not locks.try_lock_fd(fd) or not locks.locks_work():
            return False  # its writer is alive (or, without locks, nobody can tell)
        try:
            if not locks.same_file(fd, path):
                return False
            if path.name.endswith(locks.LOCK_SUFFIX):
                log.info("Took over the lock %s left by %s: that run is gone", path.name,
                         locks.holder_of(fd) or "a run")
            os.unlink(path)
            return True
        except OSError as exc:
            log.warning("Could not remove the leftover temporary file %s: %s", path, exc)
            return False
        finally:
            locks.unlock_fd(fd)
    finally:
        os.close(fd)


def read_input(path: Path, what: str, error: type[DemError]) -> bytes:
    """The bytes of a file the user named, or ``error`` saying in one line why not."""
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what}")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None


# --- what is at a path, before the tool writes or reads it ------------------------------------

_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """``st_mode`` in words, for one-line messages: 'a FIFO (named pipe)', 'a symbolic link', ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class NotRegular(DemError):
    """A file the tool reads or rewrites is a FIFO, device, socket or symbolic link: refused, not used."""


def read_regular(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file, read without following a symbolic link.

    Opened non-blocking and checked on the open descriptor, so a FIFO under the name never makes
    the run hang and no swap between the check and the read is possible. FileNotFoundError and
    IsADirectoryError pass through; any other kind is :class:`NotRegular` naming what it is.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP):  # a symlink; a socket
            raise NotRegular(f"{path}: {kind_of(os.lstat(path).st_mode)}, not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise NotRegular(f"{path}: {kind_of(mode)}, not a regular file")
        return handle.read()


# A report (--summary-json, --kml-report) goes where the user points it. A regular file (or a
# new name) is replaced atomically, as every file the tool writes. Our own stdout/stderr
# (/dev/stdout, /proc/self/fd/1, whatever it leads to), a character device or a FIFO is
# written INTO, never replaced by a regular file. A symbolic link to anything else is refused:
# replacing it would drop the user's link, writing through it would follow it.
REPLACE, STREAM = "replace", "stream"


def report_target(path: Path) -> tuple[str, int | None]:
    """How a report reaches ``path``: (REPLACE, None), or (STREAM, our fd 1/2 it is, else None).

    ValueError (the reason, in a few words) when it cannot be written there at all.
    """
    try:
        link = os.lstat(path)
    except FileNotFoundError:
        if not Path(path).parent.is_dir():
            raise ValueError(os.strerror(errno.ENOENT)) from None
        return REPLACE, None
    if stat.S_ISREG(link.st_mode):
        return REPLACE, None
    if stat.S_ISDIR(link.st_mode):
        raise ValueError(os.strerror(errno.EISDIR))
    try:
        target = os.stat(path)
    except OSError:
        raise ValueError(f"{kind_of(link.st_mode)} leading nowhere") from None
    for fd in (1, 2):
        try:
            ours = os.fstat(fd)
        except OSError:
            continue
        if (ours.st_dev, ours.st_ino) == (target.st_dev, target.st_ino):
            return STREAM, fd
    if stat.S_ISCHR(target.st_mode) or stat.S_ISFIFO(target.st_mode):
        return STREAM, None
    if stat.S_ISLNK(link.st_mode):
        raise ValueError(f"a symbolic link to {kind_of(target.st_mode)}: name the file itself")
    raise ValueError(f"{kind_of(target.st_mode)}, not a file")


def write_report(path: Path, data: bytes) -> None:
    """Write a report to ``path`` as :func:`report_target` decides; OSError (or ValueError) if it cannot."""
    how, fd = report_target(path)
    if how == REPLACE:
        atomic_write_bytes(path, data)
        return
    if fd is not None:
        import sys

        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()  # the report comes after what was printed, not over it
        _write_all(fd, data)
        return
    # a FIFO with no reader answers ENXIO at once instead of blocking the run forever
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise ValueError("a FIFO that no process reads") from None
        raise
    try:
        os.set_blocking(fd, True)
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
