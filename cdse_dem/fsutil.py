"""File-system primitives: atomic writes, temporaries, regular files only, OS locks and slots.

Writing files so that a final name only ever holds a whole file.

Everything the tool leaves on disk (DEM layers, the name→id JSON, credentials) is first
written under a temporary name in the SAME folder, flushed and fsynced, then renamed over
the final name with ``os.replace``: a rename within one filesystem is atomic, so a crash,
a Ctrl-C or a full disk leaves either the old file or the new one, never half of one.

Temporary names are hidden (leading dot), end in ``.cdse-tmp`` (so no ``*_DEM.tif`` glob,
Sen2Cor's included, can pick one up). Each one is held under an OS lock (below)
by its writer from its creation until it is renamed into place or removed, which lets a later
run remove the leftovers of a killed run without touching those of a run still going on,
even one in another PID namespace or on another host sharing the folder: a temporary is
judged by its lock, never by the process id in its name, nor by its age.

Operating-system file locks: what lets many runs share one DEM folder and one account.

Every lock here is an OS lock on an open file (``fcntl.flock`` on POSIX, ``msvcrt.locking``
on Windows), never a marker file judged by a process id or an age: the kernel drops it the
moment its process ends, however it ends (exit, Ctrl-C, SIGKILL, a container stopped), so a
lock left by a dead run is free at once, and a live run in another PID namespace sharing the
volume still holds its own.

Three kinds are built on it:

- ``LockFile``: a named lock (one geocell being fetched, the name→id JSON being rewritten).
  Its file is removed when the lock is released cleanly, so a folder holds no lock file
  between runs; one left by a killed run is taken over at once by the next run that wants it.
  The holder writes who it is into the file, which is how a takeover is told from a
  contended lock and reported.
- ``lock_fd`` / ``try_lock_fd``: a lock on a file a run is writing (its temporaries), which
  tells a sweeping run whether the writer is still alive.
- ``SlotPool``: N lock files shared by every run of one account on the machine; holding one
  is the right to one download connection.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from cdse_dem.errors import DemError, DiskFull, UsageError

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
        lock_fd(fd)  # held by a sweeper at most for the instant it takes to check it
        if not same_file(fd, path):
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
            unlock_fd(fd)
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
def atomic_writer(path: Path, mode: int | None = None, *,
                  check: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """A binary handle whose bytes replace ``path`` all at once when the block ends without error.

    The one way the tool writes a file: a temporary in the same folder (``mode``: its exact
    permissions from the first byte, e.g. 0o600), fsynced, renamed over ``path``. ``check``, when
    given, is called with the written, fsynced and closed temporary before the rename, for a file
    that must be whole before it has its name (it raises to refuse it). An exception in the block
    or the check (a failed check of what was written, Ctrl-C) or while writing leaves the old
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
        if check is not None:
            check(temp)
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
        ours = _TEMP_RE.match(entry.name) or (entry.name.startswith(".") and entry.name.endswith(LOCK_SUFFIX))
        if not ours or not entry.is_file(follow_symlinks=False):
            continue
        if _remove_if_unlocked(Path(entry.path)):
            removed.append(Path(entry.path))
    if removed:
        log.info("Removed %d leftover temporary file(s) from %s", len(removed), folder)
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:  # never through a link, never blocking: a name swapped since the scan is left alone
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        if not try_lock_fd(fd) or not locks_work():
            return False  # its writer is alive (or, without locks, nobody can tell)
        try:
            if not same_file(fd, path):
                return False
            if path.name.endswith(LOCK_SUFFIX):
                log.info("Took over the lock %s left by %s: that run is gone", path.name,
                         holder_of(fd) or "a run")
            os.unlink(path)
            return True
        except OSError as exc:
            log.warning("Could not remove the leftover temporary file %s: %s", path, exc)
            return False
        finally:
            unlock_fd(fd)
    finally:
        os.close(fd)


# The most the tool reads of a file the user names, unless its reader says what such a file can be
# (each several times the largest real one): a wrong file named by mistake never fills memory.
DEFAULT_INPUT_BYTES = 16 * 1024 * 1024


@contextmanager
def open_input(path: Path, what: str, error: type[DemError], *,
               limit: int = DEFAULT_INPUT_BYTES) -> Iterator[BinaryIO]:
    """A file the user named (a tile list, a configuration, a GIPP, a KML, an area, a list), open for
    reading, or ``error`` saying in one line why it cannot be one.

    Every file a user names goes through here: it must be a regular file (a symbolic link to one
    is followed: the user named it), checked on the open descriptor, opened without blocking, so
    that a FIFO nobody writes, a device (``/dev/zero``) or a socket is refused at once rather than
    hanging the run or filling memory; and it may not be larger than ``limit``, what such a file
    can be. :func:`read_input` reads it whole.
    """
    path = Path(path)
    try:
        fd = _open_regular(path, follow=True)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}") from None
    except NotRegular as exc:
        raise error(f"{path}: {exc}, not a {what} (a regular file)") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None
    try:
        if os.fstat(fd).st_size > limit:
            raise error(_too_large(path, what, limit))
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_input(path: Path, what: str, error: type[DemError], limit: int = DEFAULT_INPUT_BYTES) -> bytes:
    """The bytes of a file the user named, checked as :func:`open_input` says; ``error`` in one line otherwise."""
    with open_input(path, what, error, limit=limit) as handle:
        try:
            data = handle.read(limit + 1)  # a file that grew since it was looked at is still bounded
        except OSError as exc:
            raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(data) > limit:
        raise error(_too_large(path, what, limit))
    return data


def _too_large(path: Path, what: str, limit: int) -> str:
    return f"{path}: too large for a {what} (over {limit:,} bytes)"


def text_of(raw: bytes, path: Path, error: type[DemError]) -> str:
    """The bytes of a text file the user named as str (UTF-8, a BOM dropped), or ``error`` naming the
    line where it stops being text: ``path:2: not a text file (binary content)`` or ``(not UTF-8)``."""
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise error(f"{path}:{line}: not a text file (binary content)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not a text file (not UTF-8)") from None


def parse_json(data: bytes | str):
    """JSON from a file or an answer; whatever cannot be parsed, nesting too deep for the parser
    included (``RecursionError``, which is no ValueError), is a ValueError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to be read") from None


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

    FileNotFoundError and IsADirectoryError pass through; any other kind is :class:`NotRegular`
    naming what it is.
    """
    try:
        fd = _open_regular(path, follow=False)
    except NotRegular as exc:
        raise NotRegular(f"{path}: {exc}, not a regular file") from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _open_regular(path: Path, *, follow: bool) -> int:
    """A descriptor of ``path`` if it is a regular file, or :class:`NotRegular` holding what it is
    (in words); a folder is IsADirectoryError, and other errors of ``open`` pass through.

    Opened non-blocking and checked on the open descriptor, so a FIFO under the name never makes
    the run hang and no swap between the check and the read is possible. ``follow``: a symbolic
    link the user named leads to its target; the tool's own files are never read through one.
    """
    flags = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
             | (0 if follow else getattr(os, "O_NOFOLLOW", 0)))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP) or (exc.errno == errno.ELOOP and not follow):
            try:  # a socket; a symbolic link
                kind = kind_of((os.stat if follow else os.lstat)(path).st_mode)
            except OSError:
                kind = "not a regular file"
            raise NotRegular(kind) from None
        raise
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return fd
    os.close(fd)
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    raise NotRegular(kind_of(mode))


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


LOCK_SUFFIX = ".cdse-lock"
POLL_SECONDS = 0.05  # how often a waiting run tries a held lock again: prompt, and cheap for a few runs
SLOTS_DIR_ENV = "CDSE_DEM_SLOTS_DIR"  # where the per-account slot folders live (default: the system temp dir)

_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
_warned = threading.Event()


def _warn_unsupported(exc: OSError) -> None:
    if not _warned.is_set():
        _warned.set()
        log.warning("This file system does not support file locks (%s): runs sharing a folder or an "
                    "account at the same time are not protected from each other", exc.strerror or exc)


def locks_work() -> bool:
    """False once a file system refused a lock: nothing can then be judged dead by its lock."""
    return not _warned.is_set()


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    # Windows locks are mandatory: the locked byte lies past any data, so that a file being
    # written through another handle (a temporary) stays writable.
    _LOCK_OFFSET = 0x7FFFFFF0

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            _warn_unsupported(exc)
            return True  # no locks on this file system: a run alone in its folder still works
        return True

    def _unlock(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise


def try_lock_fd(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` if nobody holds one; never waits."""
    return _try_lock(fd)


def lock_fd(fd: int, *, stop: threading.Event | None = None) -> bool:
    """Take an exclusive lock on ``fd``, waiting for it; False if ``stop`` was set meanwhile."""
    while not _try_lock(fd):
        if stop is not None and stop.is_set():
            return False
        time.sleep(POLL_SECONDS)
    return True


def unlock_fd(fd: int) -> None:
    _unlock(fd)


def same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a released lock file is removed)."""
    try:
        on_disk = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


class LockFile:
    """An exclusive lock named by a file path; one process holds it at a time.

    Not re-entrant and not for threads of one process to share: each user makes its own.
    After ``acquire``, ``took_over`` is the description of the dead holder whose lock was
    taken over (a run killed while holding it), else None; ``waited`` says whether a live
    holder had to be waited for.
    """

    def __init__(self, path: Path, *, remove: bool = True):
        """``remove``: the file is removed on release and holds who holds it; False: a long-lived
        lock file (an account slot) that the tool never writes into, truncates or removes."""
        self.path = Path(path)
        self._remove = remove
        self._fd: int | None = None
        self.took_over: str | None = None
        self.waited = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits."""
        return self._acquire(wait=False, stop=None, on_wait=None)

    def acquire(self, *, stop: threading.Event | None = None,
                on_wait: Callable[[], None] | None = None) -> bool:
        """Take the lock, waiting while a live run holds it; False only if ``stop`` was set.

        ``on_wait`` is called once, when the lock turns out to be held (to say so in the log).
        """
        return self._acquire(wait=True, stop=stop, on_wait=on_wait)

    def _acquire(self, *, wait: bool, stop, on_wait) -> bool:
        assert self._fd is None, "LockFile is not re-entrant"
        self.took_over, self.waited = None, False
        while True:
            fd = _open_lock_file(self.path)
            try:
                if not _try_lock(fd):
                    if not wait:
                        os.close(fd)
                        return False
                    if not self.waited:
                        self.waited = True
                        if on_wait is not None:
                            on_wait()
                    if not lock_fd(fd, stop=stop):
                        os.close(fd)
                        return False
                if not same_file(fd, self.path):
                    os.close(fd)  # released and removed by its holder meanwhile: take the new one
                    continue
                if self._remove:
                    left = holder_of(fd)
                    if left and not self.waited:
                        self.took_over = left  # written by a holder that never released it: a dead run
                    _write_holder(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return True

    def release(self) -> None:
        """Give the lock up; its file is removed first, so a waiting run never takes a stale name."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._remove and same_file(fd, self.path):
                try:
                    os.unlink(self.path)
                except OSError:
                    pass  # Windows: still open elsewhere; the next holder reuses it
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> LockFile:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    """Open (creating it) a lock file, never through a symbolic link and never blocking; another OS
    user's is opened read-only: a lock needs no more.

    NotRegular when the name holds anything but a lock file of its own (a link, a folder, a FIFO,
    a file with another name too): it is left alone, never written into or removed.
    """
    flags = os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        try:
            fd = os.open(path, os.O_RDWR | flags, 0o666)
        except PermissionError:
            fd = os.open(path, os.O_RDONLY | flags)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        raise NotRegular(_not_a_lock(path, not_a_lock_file(path) or "not a regular file")) from None
    kind = _unlike_a_lock(os.fstat(fd))
    if kind is not None:
        os.close(fd)
        raise NotRegular(_not_a_lock(path, kind))
    return fd


def not_a_lock_file(path: Path) -> str | None:
    """What is at ``path`` in words when it cannot be one of our lock files (a link, a folder, a
    FIFO, a file with a second name); None when it is free or a plain file."""
    try:
        return _unlike_a_lock(os.lstat(path))
    except FileNotFoundError:
        return None


def _unlike_a_lock(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return kind_of(info.st_mode)
    return "a file with another name too (a hard link)" if info.st_nlink > 1 else None


def _not_a_lock(path: Path, kind: str) -> str:
    return f"{path}: {kind}, not a lock file of this tool: left alone; move it away and run again"


def holder_of(fd: int) -> str | None:
    """Who holds, or last held without releasing, this lock file, in words; None if nobody wrote it."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
    except OSError:
        return None
    if not raw.strip():
        return None
    try:
        who = parse_json(raw)
        return f"process {who['pid']} on {who['host']} since {who['since']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


def _write_holder(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(_holder()).encode())
    except OSError:
        pass  # only a diagnostic


def lock_path_for(folder: Path, name: str) -> Path:
    """The hidden lock file of ``name`` in ``folder`` (no ``*_DEM.tif`` glob can pick it up)."""
    return Path(folder) / f".{name}{LOCK_SUFFIX}"


SLOT_WAIT_REPORT = 60.0  # seconds between the reports of a run that waits for one of the account's slots


class SlotPool:
    """``count`` download connections shared by every run of one account on this machine.

    A slot is a lock file ``slot-<n>`` in a folder named by a hash of the identity service
    and the user name (the name never appears in clear); a run holds one slot per download
    in flight, so runs together never open more than ``count`` connections. Slots are OS
    locks: a run that ends or dies gives its slots back at once.

    The folder's name can be foreseen by anyone on the machine, so it must be this user's own
    (:func:`private_folder`), and its slot files are opened without following a link and never
    written into: another local user who made it first, or put links in it, gets nothing.
    """

    def __init__(self, folder: Path, count: int):
        if count < 1:
            raise ValueError("count must be >= 1")
        self.folder = Path(folder)
        self.count = count
        self._reported = -float("inf")  # when a wait for a slot was last reported, by any thread
        self._reported_lock = threading.Lock()
        private_folder(self.folder)
        for n in range(count):
            slot = self.folder / f"slot-{n}"
            kind = not_a_lock_file(slot)
            if kind is not None:
                raise UsageError(f"{slot}: {kind}, not a download slot of this tool: left alone; remove "
                                 f"{self.folder} (it holds only slot locks) and run again")

    @classmethod
    def for_account(cls, token_url: str, username: str, count: int, base: Path | None = None) -> SlotPool:
        base = Path(base) if base is not None else slots_base()
        private_folder(base)
        return cls(account_slots_dir(token_url, username, base), count)

    def acquire(self, *, stop: threading.Event | None = None,
                on_wait: Callable[[float], None] | None = None) -> LockFile | None:
        """A held slot (release it when the download ends); None if ``stop`` was set while waiting.

        ``on_wait(seconds)`` is told when every slot turns out to be held (0), then, once the wait
        has lasted ``SLOT_WAIT_REPORT``, every ``SLOT_WAIT_REPORT`` seconds: a wait for other runs can
        be long, and says so, once for all the threads that share this pool.
        """
        began = None
        while True:
            for n in range(self.count):
                slot = LockFile(self.folder / f"slot-{n}", remove=False)
                if slot.try_acquire():
                    return slot
            if stop is not None and stop.is_set():
                return None
            now = time.monotonic()
            if began is None:
                began = now
                if on_wait is not None:
                    on_wait(0.0)
            elif on_wait is not None and now - began >= SLOT_WAIT_REPORT and self._report_due(now):
                on_wait(now - began)
            if stop is not None:
                stop.wait(POLL_SECONDS)
            else:
                time.sleep(POLL_SECONDS)


    def _report_due(self, now: float) -> bool:
        with self._reported_lock:
            if now - self._reported < SLOT_WAIT_REPORT:
                return False
            self._reported = now
            return True


def slots_base() -> Path:
    """Where the account slot folders of this OS user live: ``CDSE_DEM_SLOTS_DIR``, else the system
    temp folder's ``cdse-dem-slots-<uid>``."""
    return Path(os.environ.get(SLOTS_DIR_ENV) or Path(tempfile.gettempdir()) / f"cdse-dem-slots-{_os_user()}")


def account_slots_dir(token_url: str, username: str, base: Path) -> Path:
    """The machine-wide slot folder of one account: per OS user, named by a hash only."""
    digest = hashlib.sha256(f"{token_url}\0{username.strip().lower()}".encode()).hexdigest()[:24]
    return Path(base) / digest


def private_folder(path: Path) -> None:
    """Create ``path`` (mode 0700) unless it is there, then make sure it is this user's alone.

    For a folder at a name others can foresee (the account's slots under the system temp
    folder): one another local user made first, made a link, or may write into, would let
    them put links where the tool opens files, or hold its locks. Refused (UsageError, one
    line, nothing written there) unless it is a real folder, owned by this user, that neither
    group nor others may write.
    """
    path = Path(path)
    fix = f"remove it, or set {SLOTS_DIR_ENV} to a folder of your own"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        pass  # not a folder: said below
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the folder of the account's download slots ({exc.strerror}); "
                         f"set {SLOTS_DIR_ENV} to a folder of your own") from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = f"{kind_of(info.st_mode)}, not a folder"
    elif hasattr(os, "getuid") and info.st_uid != os.getuid():
        problem = f"a folder of another user (uid {info.st_uid})"
    elif os.name != "nt" and info.st_mode & 0o022:
        problem = f"a folder others may write into (mode {stat.S_IMODE(info.st_mode):04o})"
    else:
        return
    raise UsageError(f"{path}: {problem}, so it cannot hold this account's download slots; {fix}")


def _os_user() -> str:
    if hasattr(os, "getuid"):
        return str(os.getuid())
    return hashlib.sha256(os.environ.get("USERNAME", "user").encode()).hexdigest()[:12]
