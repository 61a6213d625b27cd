"""The connections a run may have open on the download host at once: its own, and its account's.

Every request there (a zip, a node file, a Nodes listing: CDSE's quota counts them alike) is
made holding one :class:`ConnectionSlot`, for that request only, never during the waits between
tries. Holding one is two things, taken in this order: one of the run's ``--workers`` (an
in-process semaphore, so that this run's listings and downloads together stay within it),
then, when a :class:`~cdse_dem.locks.SlotPool` is given, one of the account's slots on this
machine, so that all runs of one account together stay within its connections. A stop while
waiting for either ends the wait within one poll (``locks.POLL_SECONDS``).
"""

import logging
import threading

from cdse_dem.downloading import DownloadCancelled
from cdse_dem.locks import POLL_SECONDS, SlotPool

log = logging.getLogger(__name__)
_STOPPED = "stopped while waiting for a download connection"


class ConnectionSlot:
    """``with slot:`` holds one connection for the block; shared by every thread of a run.

    Not re-entrant within one thread (a thread makes one request at a time).
    """

    def __init__(self, workers: int, pool: SlotPool | None = None, *, stop: threading.Event | None = None):
        self._own = threading.BoundedSemaphore(workers)
        self._pool = pool
        self._stop = stop
        self._held = threading.local()  # the account slot (a LockFile) this thread holds

    def __enter__(self) -> "ConnectionSlot":
        while not self._own.acquire(timeout=POLL_SECONDS):
            self._raise_if_stopped()
        if self._pool is None:
            return self
        try:
            account = self._pool.acquire(stop=self._stop, on_wait=lambda: log.debug(
                "Every download connection of the account is in use (other runs): waiting for one"))
        except BaseException:
            self._own.release()
            raise
        if account is None:  # stopped while waiting
            self._own.release()
            raise DownloadCancelled(_STOPPED)
        self._held.account = account
        return self

    def __exit__(self, *exc_info) -> None:
        account, self._held.account = getattr(self._held, "account", None), None
        try:
            if account is not None:
                account.release()
        finally:
            self._own.release()

    def _raise_if_stopped(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise DownloadCancelled(_STOPPED)
