"""Fetching the planned geocells: parallel, verified, recorded one by one.

Geocells are fed in as the catalogue answers, so downloads start while other tiles are
still being searched. Each download worker only downloads (verified as bytes arrive); the
DEM layer is extracted into place and recorded in the JSON beside it, so a worker's
connection is never idle while a file is unpacked. At any moment, a crash or Ctrl-C leaves
only whole files under final names, each recorded. Past the time budget no new geocell
starts; those left are reported for the next run.

Other runs may fill the same folder with the same account at once (``cdse_dem.fsutil``): a
geocell is fetched under its lock file in the output folder, and is looked up in the JSON
again once that lock is ours, so a geocell another run fetched meanwhile is taken as present;
each request on the download host holds one of the account's connection slots on this machine.

With the Nodes API (``--transfer auto``/``nodes``, :mod:`cdse_dem.transfer`), a geocell is first
located (its product's root listed, in a pool of its own) while the files before it move: a
small look-ahead, at most one product per download worker, so that a worker finishing a file
finds the next one located. Each listing takes one of the connection slots for its own request
only (the quota counts it as a connection). The worker then streams the DEM file alone under
the geocell's lock, checks it, renames it into place and records it. A product whose Nodes
transfer fails goes the zip way (``auto``, :mod:`cdse_dem.transfer`).
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from cdse_dem import fsutil
from cdse_dem.dem_folder import MAX_PRODUCT_BYTES, dem_problem, extract_dem
from cdse_dem.errors import AccessDenied, BudgetExhausted, DemError, ServiceError
from cdse_dem.fsutil import DiskFull, raise_if_disk_full, remove_quietly
from cdse_dem.gapfill import fill_cell
from cdse_dem.grid import Geocell, geocell_of_name
from cdse_dem.http import origin_text
from cdse_dem.planning import CellState, Status
from cdse_dem.search import Stop
from cdse_dem.transfer import (
    ConnectionSlot,
    NodeClient,
    NodeSample,
    NodesFailed,
    TransferChoice,
    acquire_unless_stopped,
    download_product,
)

log = logging.getLogger(__name__)


EXTRACT_THREADS = 2
# A download host that has answered nothing (not a status line, not a byte) for this long while
# the run kept asking it is not going to: the run ends, rather than let each request wait its
# read timeout and each geocell its tries (the first red team's "silent host": over 5 minutes).
# Two minutes is four read timeouts in a row: far beyond any congestion a healthy CDSE shows.
SILENT_HOST_SECONDS = 120.0
GUARD_INTERVAL = 0.2  # seconds; how late the guard notices a stop, the end of the budget, a silent host
# Products being located on Nodes at once (a listing each; four for a walk). Every listing takes
# one of the account's connections (``--workers`` slots, shared with the downloads: CDSE's quota
# counts them alike) for its own request only, so more would only wait for slots.
LISTING_THREADS = 4


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
                 workers: int, progress=None, slots: fsutil.SlotPool | None = None, transfer: str = "auto",
                 stop: threading.Event | Stop | None = None, on_landed: Callable[[Geocell], None] | None = None):
        """``stop``: the run's stop; the fetcher's own flag (a fatal error sets it) follows it.
        ``on_landed(geocell)``: told, from the thread that put it there, when a geocell's file is in
        the folder (downloaded, or fetched by another run meanwhile)."""

        self._open_session = open_session
        self.transfer = TransferChoice(transfer)
        self._nodes = None  # a NodeClient, once logged in
        self._listings: ThreadPoolExecutor | None = None
        self._http, self._endpoints, self._out_dir, self._cache = http, endpoints, out_dir, cache
        self._workers = workers
        self.progress = progress
        self._on_landed = on_landed
        self.session = None
        self.stop = Stop(stop)
        # one per request on the download host: this run's ``workers``, and the account's connections
        # on this machine (``slots``), shared with its other runs
        self._slots = ConnectionSlot(workers, slots, stop=self.stop)
        # products located on Nodes (or being located) whose download has not begun: one per worker,
        # so that each finds its next file located, and a run that leaves Nodes has listed little in vain
        self._ahead = threading.BoundedSemaphore(workers)
        self.outcome = FetchOutcome()
        self._lock = threading.Lock()
        self._futures: list[Future] = []  # downloads and extractions not yet seen done
        self._download_futures: list[Future] = []
        self._started = 0  # downloads begun, for the guide's "Processing file n N"
        self._submitted: set[int] = set()
        self._downloads: ThreadPoolExecutor | None = None
        self._extracts: ThreadPoolExecutor | None = None
        self._guard_done = threading.Event()
        # zips being fetched, waiting for extraction or extracted at once: each holds its files open
        # (and its disk space) until extracted, so a slow extraction holds the next download back
        self._room = threading.BoundedSemaphore(workers + EXTRACT_THREADS)

    def add(self, cells: list[CellState]) -> None:
        """Start fetching ``cells`` (those not added before)."""
        new = [c for c in cells if id(c) not in self._submitted and c.product is not None]
        if not new or self.stop.is_set():
            return
        if self.session is None:
            self.session = self._open_session()
            self._downloads = ThreadPoolExecutor(self._workers, thread_name_prefix="download")
            self._extracts = ThreadPoolExecutor(EXTRACT_THREADS, thread_name_prefix="extract")
            self._listings = ThreadPoolExecutor(LISTING_THREADS, thread_name_prefix="nodes")
            self._nodes = NodeClient(self.session, self._http, self._endpoints, stop=self.stop, slot=self._slots,
                                     wanted=self.transfer.use_nodes)
            threading.Thread(target=self._guard, name="download-guard", daemon=True).start()
        if self.progress is not None:
            self.progress.total = (self.progress.total or 0) + sum(c.product.content_length or 0 for c in new)
            self.progress.refresh()
        for state in new:
            self._submitted.add(id(state))
            self.outcome.submitted += 1
            if self.transfer.use_nodes() and state.fill_from is None:  # a fill reads its source from the zip
                future = self._listings.submit(self._locate, state)
            else:
                future = self._downloads.submit(self._download, state)
            self._download_futures.append(future)
            self._track(future)

    def finish(self) -> FetchOutcome:
        """Wait for every download and extraction; once stopped, for those already running only
        (they notice the stop within a fraction of a second, remove their temporaries, and
        verified downloads are still extracted and recorded)."""
        try:
            while True:
                if self.stop.is_set():
                    self._cancel_queued()
                with self._lock:
                    pending = [f for f in self._futures if not f.done()]
                    done = [f for f in self._futures if f.done()]
                    self._futures = pending
                for future in done:
                    if not future.cancelled():
                        future.result()  # a bug in a worker surfaces here, not silently
                if not pending:
                    break
                wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
        except BaseException:
            self.abort()
            raise
        self._shutdown()
        self.transfer.report()
        return self.outcome

    def abort(self) -> None:
        """Stop now: downloads not started are dropped, running ones notice within a second and
        remove their temporaries; downloads already verified are still extracted and recorded."""
        self.stop.set()
        self._cancel_queued()
        self._shutdown()

    def _cancel_queued(self) -> None:
        with self._lock:
            queued = list(self._download_futures)
        for future in queued:
            future.cancel()

    def _shutdown(self) -> None:
        for pool in (self._listings, self._downloads, self._extracts):  # each feeds the next
            if pool is not None:
                pool.shutdown(wait=True)
        self._guard_done.set()
        if self.session is not None:
            self.session.logout()
            self.session.close()

    def _guard(self) -> None:
        """While the downloads run: what must end them now ends them now, not after a timeout.

        A stop (the caller's, or a fatal error), or the end of ``--max-minutes``, cuts every
        connection to the download hosts, which wakes a request blocked on a silent server at
        once; the requests see why and end. A download host silent for ``SILENT_HOST_SECONDS``
        while asked ends the run, with one line.
        """
        hosts = self._endpoints.token_hosts
        while not self._guard_done.wait(GUARD_INTERVAL):
            if self.stop.is_set() or self.session.out_of_time():
                self._http.cut(hosts)
            elif self._slots.silence.seconds() >= SILENT_HOST_SECONDS:
                with self._lock:
                    self.outcome.fatal = self.outcome.fatal or ServiceError(
                        f"The download host {origin_text(self._endpoints.download_url)} answered nothing for "
                        f"{SILENT_HOST_SECONDS:g} s while asked: the run ends here (the geocells finished are "
                        "recorded; a re-run resumes)")
                self.stop.set()
                self._http.cut(hosts)

    def _track(self, future: Future) -> None:
        with self._lock:
            self._futures.append(future)

    def _stop_all(self, state: CellState, exc: DemError) -> None:
        """Errors no other geocell can escape (no CCM access, a full disk) end the whole run."""
        with self._lock:
            self.outcome.fatal = self.outcome.fatal or exc
        self.stop.set()
        state.status, state.error = Status.FAILED, str(exc)

    def _left(self, state: CellState) -> None:
        with self._lock:
            self.outcome.left.append(state.file_name)

    def _locate(self, state: CellState) -> None:
        """The look-ahead of one geocell: where its DEM file is on Nodes, then its download queued
        (that file, or the zip when Nodes failed it or the run has left Nodes)."""

        if self.stop.is_set():
            return
        if not self.transfer.use_nodes():  # the run left Nodes while this geocell waited
            self._queue_download(state)
            return
        if not acquire_unless_stopped(self._ahead, self.stop):
            return
        handed = False
        try:
            located = None
            if self.transfer.use_nodes():
                try:
                    located = self._nodes.locate_dem(state.product, state.file_name)
                except NodesFailed as exc:
                    if not self._nodes_failed(state, exc):
                        return
                except DemError as exc:
                    self._give_up(state, exc)
                    return
            self._queue_download(state, located, ahead=True)
            handed = True
        finally:
            if not handed:
                self._ahead.release()

    def _queue_download(self, state: CellState, located=None, *, ahead: bool = False) -> None:
        future = self._downloads.submit(self._download, state, located, ahead)
        with self._lock:
            self._download_futures.append(future)
        self._track(future)

    def _give_up(self, state: CellState, exc: DemError) -> None:
        """A geocell that cannot be fetched now: left for the next run, the end of the run, or failed."""
        if isinstance(exc, BudgetExhausted):
            self._left(state)
        elif isinstance(exc, (AccessDenied, DiskFull)):
            self._stop_all(state, exc)
        elif not self.stop.is_set():
            self._fail(state, str(exc))

    @staticmethod
    def _fail(state: CellState, error: str) -> None:
        """This geocell failed, the run goes on: said once, in its record and in the log."""
        state.status, state.error = Status.FAILED, error
        log.error("%s: %s", state.file_name, error)

    def _nodes_failed(self, state: CellState, exc: DemError) -> bool:
        """A Nodes failure: True when the product goes on as a zip, False when the geocell failed."""
        if self.transfer.falls_back:
            self.transfer.node_failed(state.file_name, str(exc))
            return True
        self._give_up(state, exc)
        return False

    def _retotal(self, delta: int) -> None:
        """The progress total counts the bytes that will really come: a node file, not its zip."""
        if self.progress is not None and delta:
            with self._lock:
                self.progress.total = max((self.progress.total or 0) + delta, 0)
            self.progress.refresh()

    def _fetch_node(self, state: CellState, located, resolution: int) -> bool:
        """The DEM file alone, checked and renamed into place, then recorded; False: go the zip way.
        ``resolution``: the file's."""

        zip_length = state.product.content_length or 0
        counted: list[int] = []  # the file's length once its answer says it: the progress total counts it

        def on_length(length: int) -> None:
            if not counted:
                counted.append(length)
                self._retotal(length - zip_length)

        try:
            got = self._nodes.fetch_dem(state.product, located, self._out_dir, state.file_name, cell=state.geocell,
                                        resolution=resolution, on_length=on_length,
                                        on_bytes=self.progress.update if self.progress else None)
        except NodesFailed as exc:
            if self._nodes_failed(state, exc):
                if counted:
                    self._retotal(zip_length - counted[0])
                return False
            return True
        if not self._record(state, got.path):
            return True
        state.status, state.file, state.bytes = Status.DOWNLOADED, str(got.path), got.bytes
        with self._lock:
            self.outcome.bytes += got.bytes
        log.info("DEM %s downloaded (Nodes) and stored", got.path.name)
        self._landed(state)
        self.transfer.node_fetched(NodeSample(zip_length, got.bytes, got.listing_seconds, got.first_byte_seconds,
                                              got.seconds))
        return True

    def _record(self, state: CellState, path) -> bool:
        """Record a DEM just put in place; one that cannot be recorded is taken away again (a file
        under its final name is always recorded) and its geocell fails. False then."""
        try:
            self._cache.record(state.file_name, state.product.id)
            return True
        except DiskFull as exc:
            self._stop_all(state, exc)
        except DemError as exc:
            self._fail(state, f"cannot be recorded: {exc}")
        except OSError as exc:
            self._fail(state, f"cannot be recorded ({exc.strerror or exc})")
        remove_quietly(path)
        return False

    def _download(self, state: CellState, located=None, ahead: bool = False) -> None:
        """Fetch one geocell, in room for its extraction (which gives the room back). ``ahead``: it
        was located ahead, and its place in the look-ahead is given back now."""
        if ahead:
            self._ahead.release()
        if self.stop.is_set():
            return
        if not acquire_unless_stopped(self._room, self.stop):
            return
        if not self._download_in_room(state, located):
            self._room.release()

    def _download_in_room(self, state: CellState, located=None) -> bool:
        """Fetch one geocell under its lock; True when the lock passed to the extraction, which releases it."""
        cell_lock = fsutil.LockFile(fsutil.lock_path_for(self._out_dir, state.file_name))
        try:
            if not cell_lock.acquire(stop=self.stop, on_wait=lambda: log.info(
                    "%s is being fetched by another run: waiting for it", state.file_name)):
                return False
        except OSError as exc:
            try:
                raise_if_disk_full(exc, self._out_dir)
            except DiskFull as full:
                self._stop_all(state, full)
                return False
            self._fail(state, f"cannot lock it in {self._out_dir} ({exc.strerror or exc})")
            return False
        except fsutil.NotRegular as exc:  # its lock name holds a link, a folder, ...: left alone
            self._fail(state, str(exc))
            return False
        if cell_lock.took_over:
            log.info("Took over the lock of %s left by %s: that run is gone", state.file_name, cell_lock.took_over)
        handed_over = False
        try:
            handed_over = self._download_locked(state, cell_lock, located)
        finally:
            if not handed_over:
                cell_lock.release()
        return handed_over

    def _fetched_meanwhile(self, state: CellState) -> bool:
        """Whether another run completed this geocell, with this run's product, since the plan was
        made (read under its lock)."""

        self._cache.refresh()
        name = state.file_name
        if self._cache.product_id(name) != state.product.id or not self._cache.is_complete(name):
            return False  # not this run's product (an earlier run's, to replace), or not there
        if dem_problem(self._out_dir / name) is not None:
            return False  # the damaged file the plan already decided to fetch again
        state.status = Status.FILLED if state.fill_from is not None else Status.PRESENT
        state.product_id = state.product.id
        log.info("%s was fetched by another run meanwhile: present", state.file_name)
        self._landed(state)
        self._retotal(-(state.product.content_length or 0))
        return True

    def _download_locked(self, state: CellState, cell_lock: fsutil.LockFile, located=None) -> bool:
        """True when the extraction was queued (it then owns ``cell_lock``); a node file is
        renamed into place and recorded here, under the lock."""
        if self._fetched_meanwhile(state):
            return False
        if not self.session.may_start():
            self._left(state)
            return False
        result = self._fetch(state, located)
        if result is None:
            return False
        # the extraction pool closes after the download pool, so this submit always lands
        self._track(self._extracts.submit(self._extract, state, result, cell_lock))
        return True

    def _fetch(self, state: CellState, located=None):
        """The node file, in place and recorded (None), or the verified zip to extract; None too
        when the geocell failed or was left.

        The zip is capped by its product's own resolution, not the file's: a gap's fill comes from
        another dataset, maybe a GLO-30 product (~9 times a GLO-90 zip) for a GLO-90 file."""

        with self._lock:
            self._started += 1
            number = self._started
        log.info("Processing file n %d: %s", number, state.file_name)
        _, resolution = geocell_of_name(state.file_name)
        try:
            if located is not None and self._fetch_node(state, located, resolution):
                return None
            max_bytes = MAX_PRODUCT_BYTES[state.product.resolution or resolution]
            result = download_product(state.product, self._out_dir, self.session, self._http, self._endpoints,
                                      on_bytes=self.progress.update if self.progress else None, stop=self.stop,
                                      slot=self._slots, max_bytes=max_bytes)
        except DemError as exc:
            self._give_up(state, exc)
            return None
        log.info("File %s downloaded", state.product.id)
        return result

    def _extract(self, state: CellState, result, cell_lock: fsutil.LockFile) -> None:
        try:
            self._extract_locked(state, result)
        finally:
            cell_lock.release()
            self._room.release()

    def _extract_locked(self, state: CellState, result) -> None:

        try:
            if state.fill_from is not None:
                path = fill_cell(result.zip_path, self._out_dir, state.file_name, state.geocell,
                                 geocell_of_name(state.file_name)[1])
            else:
                path = extract_dem(result.zip_path, self._out_dir, expected_name=state.file_name)
        except DiskFull as exc:
            self._stop_all(state, exc)
            return
        except DemError as exc:
            self._fail(state, str(exc))
            return
        finally:
            remove_quietly(result.zip_path)
        if not self._record(state, path):
            return
        filled = state.fill_from is not None
        state.status, state.file, state.bytes = Status.FILLED if filled else Status.DOWNLOADED, str(path), result.bytes
        with self._lock:
            self.outcome.bytes += result.bytes
        if filled:
            log.info("DEM %s filled from %s (product %s) and stored", path.name, state.fill_from, state.product.id)
        else:
            log.info("DEM %s extracted and stored", path.name)
        self._landed(state)

    def _landed(self, state: CellState) -> None:
        if self._on_landed is not None:
            self._on_landed(state.geocell)
