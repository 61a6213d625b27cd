"""Operating-system file locks: what lets many runs share one DEM folder and one account.

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
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

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
            if self._remove:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass  # Windows: still open elsewhere; the next holder reuses it
            else:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass  # opened read-only (another OS user's file): the holder line stays
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> LockFile:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    """Open (creating it) a lock file; another OS user's is opened read-only: a lock needs no more."""
    binary = getattr(os, "O_BINARY", 0)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | binary, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY | binary)


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
        who = json.loads(raw)
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


class SlotPool:
    """``count`` download connections shared by every run of one account on this machine.

    A slot is a lock file ``slot-<n>`` in a folder named by a hash of the identity service
    and the user name (the name never appears in clear); a run holds one slot per download
    in flight, so runs together never open more than ``count`` connections. Slots are OS
    locks: a run that ends or dies gives its slots back at once.
    """

    def __init__(self, folder: Path, count: int):
        if count < 1:
            raise ValueError("count must be >= 1")
        self.folder = Path(folder)
        self.count = count
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def for_account(cls, token_url: str, username: str, count: int, base: Path | None = None) -> SlotPool:
        return cls(account_slots_dir(token_url, username, base), count)

    def acquire(self, *, stop: threading.Event | None = None,
                on_wait: Callable[[], None] | None = None) -> LockFile | None:
        """A held slot (release it when the download ends); None if ``stop`` was set while waiting."""
        waited = False
        while True:
            for n in range(self.count):
                slot = LockFile(self.folder / f"slot-{n}", remove=False)
                if slot.try_acquire():
                    return slot
            if stop is not None and stop.is_set():
                return None
            if not waited:
                waited = True
                if on_wait is not None:
                    on_wait()
            time.sleep(POLL_SECONDS)


def account_slots_dir(token_url: str, username: str, base: Path | None = None) -> Path:
    """The machine-wide slot folder of one account: per OS user, named by a hash only."""
    if base is None:
        base = Path(os.environ.get(SLOTS_DIR_ENV) or Path(tempfile.gettempdir()) / f"cdse-dem-slots-{_os_user()}")
    digest = hashlib.sha256(f"{token_url}\0{username.strip().lower()}".encode()).hexdigest()[:24]
    return Path(base) / digest


def _os_user() -> str:
    if hasattr(os, "getuid"):
        return str(os.getuid())
    return hashlib.sha256(os.environ.get("USERNAME", "user").encode()).hexdigest()[:12]
