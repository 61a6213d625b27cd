"""Fetching the planned geocells: parallel, verified, recorded one by one.

Geocells are fed in as the catalogue answers, so downloads start while other tiles are
still being searched. Each download worker only downloads (verified as bytes arrive); the
DEM layer is extracted into place and recorded in the JSON beside it, so a worker's
connection is never idle while a file is unpacked. At any moment, a crash or Ctrl-C leaves
only whole files under final names, each recorded. Past the time budget no new geocell
starts; those left are reported for the next run.

Other runs may fill the same folder with the same account at once (``cdse_dem.locks``): a
geocell is fetched under its lock file in the output folder, and is looked up in the JSON
again once that lock is ours, so a geocell another run fetched meanwhile is taken as present;
each download holds one of the account's connection slots on this machine.
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from cdse_dem import locks
from cdse_dem.errors import AccessDenied, BudgetExhausted, DemError
from cdse_dem.fsutil import DiskFull, raise_if_disk_full, remove_quietly
from cdse_dem.plan import DOWNLOADED, FAILED, PRESENT, CellState

log = logging.getLogger(__name__)
EXTRACT_THREADS = 2


@dataclass
class FetchOutcome:
    left: list[str] = field(default_factory=list)  # not started: the budget ran out
    fatal: DemError | None = None  # stopped everything (e.g. no CCM access, a full disk)
    bytes: int = 0
    submitted: int = 0


class Fetcher:
    """Downloads geocells as they are added; ``finish()`` waits for all and says what happened.

    ``open_session`` logs in; it is called once, when the first geocell is added, so a run
    with nothing to download never logs in.
    """

    def __init__(self, *, open_session: Callable[[], object], http, endpoints, out_dir: Path, cache,
                 workers: int, progress=None, slots: locks.SlotPool | None = None):
        self._open_session = open_session
        self._http, self._endpoints, self._out_dir, self._cache = http, endpoints, out_dir, cache
        self._workers = workers
        self.progress = progress
        self._slots = slots  # the account's connections on this machine, shared with other runs
        self.session = None
        self.stop = threading.Event()
        self.outcome = FetchOutcome()
        self._lock = threading.Lock()
        self._futures: list[Future] = []  # downloads and extractions not yet seen done
        self._download_futures: list[Future] = []
        self._started = 0  # downloads begun, for the guide's "Processing file n N"
        self._submitted: set[int] = set()
        self._downloads: ThreadPoolExecutor | None = None
        self._extracts: ThreadPoolExecutor | None = None

    def add(self, cells: list[CellState]) -> None:
        """Start fetching ``cells`` (those not added before)."""
        new = [c for c in cells if id(c) not in self._submitted and c.product is not None]
        if not new or self.stop.is_set():
            return
        if self.session is None:
            self.session = self._open_session()
            self._downloads = ThreadPoolExecutor(self._workers, thread_name_prefix="download")
            self._extracts = ThreadPoolExecutor(EXTRACT_THREADS, thread_name_prefix="extract")
        if self.progress is not None:
            self.progress.total = (self.progress.total or 0) + sum(c.product.content_length or 0 for c in new)
            self.progress.refresh()
        for state in new:
            self._submitted.add(id(state))
            self.outcome.submitted += 1
            future = self._downloads.submit(self._download, state)
            self._download_futures.append(future)
            self._track(future)

    def finish(self) -> FetchOutcome:
        """Wait for every download and extraction; on Ctrl-C, stop them all first."""
        try:
            while True:
                with self._lock:
                    pending = [f for f in self._futures if not f.done()]
                    done = [f for f in self._futures if f.done()]
                    self._futures = pending
                for future in done:
                    future.result()  # a bug in a worker surfaces here, not silently
                if not pending:
                    break
                wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
        except BaseException:
            self.abort()
            raise
        self._shutdown()
        return self.outcome

    def abort(self) -> None:
        """Stop now: downloads not started are dropped, running ones notice within a second and
        remove their temporaries; downloads already verified are still extracted and recorded."""
        self.stop.set()
        for future in self._download_futures:
            future.cancel()
        self._shutdown()

    def _shutdown(self) -> None:
        for pool in (self._downloads, self._extracts):
            if pool is not None:
                pool.shutdown(wait=True)
        if self.session is not None:
            self.session.logout()
            self.session.close()

    def _track(self, future: Future) -> None:
        with self._lock:
            self._futures.append(future)

    def _stop_all(self, state: CellState, exc: DemError) -> None:
        """Errors no other geocell can escape (no CCM access, a full disk) end the whole run."""
        with self._lock:
            self.outcome.fatal = self.outcome.fatal or exc
        self.stop.set()
        state.status, state.error = FAILED, str(exc)

    def _left(self, state: CellState) -> None:
        with self._lock:
            self.outcome.left.append(state.file_name)

    def _download(self, state: CellState) -> None:
        """Fetch one geocell under its lock; the lock passes to the extraction, which releases it."""
        if self.stop.is_set():
            return
        cell_lock = locks.LockFile(locks.lock_path_for(self._out_dir, state.file_name))
        try:
            if not cell_lock.acquire(stop=self.stop, on_wait=lambda: log.info(
                    "%s is being fetched by another run: waiting for it", state.file_name)):
                return
        except OSError as exc:
            try:
                raise_if_disk_full(exc, self._out_dir)
            except DiskFull as full:
                self._stop_all(state, full)
                return
            state.status, state.error = FAILED, f"cannot lock it in {self._out_dir} ({exc.strerror or exc})"
            log.error("%s: %s", state.file_name, state.error)
            return
        if cell_lock.took_over:
            log.info("Took over the lock of %s left by %s: that run is gone", state.file_name, cell_lock.took_over)
        handed_over = False
        try:
            handed_over = self._download_locked(state, cell_lock)
        finally:
            if not handed_over:
                cell_lock.release()

    def _fetched_meanwhile(self, state: CellState) -> bool:
        """Whether another run completed this geocell, with this run's product, since the plan was
        made (read under its lock)."""
        from cdse_dem.integrity import dem_problem

        self._cache.refresh()
        name = state.file_name
        if self._cache.product_id(name) != state.product.id or not self._cache.is_complete(name):
            return False  # not this run's product (an earlier run's, to replace), or not there
        if dem_problem(self._out_dir / name) is not None:
            return False  # the damaged file the plan already decided to fetch again
        state.status, state.product_id = PRESENT, self._cache.product_id(state.file_name)
        log.info("%s was fetched by another run meanwhile: present", state.file_name)
        if self.progress is not None and state.product.content_length:
            self.progress.total = max(0, (self.progress.total or 0) - state.product.content_length)
            self.progress.refresh()
        return True

    def _download_locked(self, state: CellState, cell_lock: locks.LockFile) -> bool:
        """True when the extraction was queued (it then owns ``cell_lock``)."""
        from cdse_dem.download import download_product

        if self._fetched_meanwhile(state):
            return False
        if not self.session.may_start():
            self._left(state)
            return False
        slot = None
        if self._slots is not None:
            slot = self._slots.acquire(stop=self.stop, on_wait=lambda: log.debug(
                "Every download connection of the account is in use: %s waits", state.file_name))
            if slot is None:
                return False
        try:
            result = self._fetch(state, download_product)
        finally:
            if slot is not None:
                slot.release()
        if result is None:
            return False
        # the extraction pool closes after the download pool, so this submit always lands
        self._track(self._extracts.submit(self._extract, state, result, cell_lock))
        return True

    def _fetch(self, state: CellState, download_product):
        with self._lock:
            self._started += 1
            number = self._started
        log.info("Processing file n %d: %s", number, state.file_name)
        try:
            result = download_product(state.product, self._out_dir, self.session, self._http, self._endpoints,
                                      on_bytes=self.progress.update if self.progress else None, stop=self.stop)
        except BudgetExhausted:
            self._left(state)
            return None
        except (AccessDenied, DiskFull) as exc:
            self._stop_all(state, exc)
            return None
        except DemError as exc:
            if not self.stop.is_set():
                state.status, state.error = FAILED, str(exc)
                log.error("%s: %s", state.file_name, exc)
            return None
        log.info("File %s downloaded", state.product.id)
        return result

    def _extract(self, state: CellState, result, cell_lock: locks.LockFile) -> None:
        try:
            self._extract_locked(state, result)
        finally:
            cell_lock.release()

    def _extract_locked(self, state: CellState, result) -> None:
        from cdse_dem.extract import extract_dem

        try:
            path = extract_dem(result.zip_path, self._out_dir, expected_name=state.file_name)
            self._cache.record(state.file_name, state.product.id)
        except DiskFull as exc:
            self._stop_all(state, exc)
            return
        except DemError as exc:
            state.status, state.error = FAILED, str(exc)
            log.error("%s: %s", state.file_name, exc)
            return
        finally:
            remove_quietly(result.zip_path)
        state.status, state.file, state.bytes = DOWNLOADED, str(path), result.bytes
        with self._lock:
            self.outcome.bytes += result.bytes
        log.info("DEM %s extracted and stored", path.name)
