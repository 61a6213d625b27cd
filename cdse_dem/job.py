"""One run of the tool as a library call: tiles in, a :class:`~cdse_dem.report.Result` out.

:func:`download`, :func:`plan` and :func:`check` are the package's API (``cdse_dem.download``,
...); the command line calls :func:`prepare` and :func:`run` itself, so that it can check its
own options and ask for credentials between the two.

The order matters to users: everything that can be wrong with the request (options, GIPP,
tile list, output folder, credentials) is found before any network call; the catalogue is
searched before logging in (search needs no token, and a run with nothing to download needs
no login); geocells are fetched last.

A call never prompts, prints, installs a signal or log handler (a ``NullHandler`` on the
``cdse_dem`` logger only: the caller's logging set-up receives our records), and keeps no
state between calls: two calls may run at once, in two threads, into one folder too (see
the OS locks in fsutil). ``stop``, a ``threading.Event`` set from any thread, ends a call within a second or
two: no catalogue search is sent after it, a login under way is abandoned (and logged out
when it completes), downloads under way stop and remove their temporary files, every geocell
finished is recorded, and the result says so (``interrupted``, exit status 130).
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cdse_dem import areas, logs, planning, processors, settings
from cdse_dem import tiles as tiles_mod
from cdse_dem.catalogue import Catalogue, Dataset
from cdse_dem.credentials import Credentials, obtain_credentials
from cdse_dem.dem_folder import FileSources, NameIdCache, SeaRecord, dem_problem
from cdse_dem.errors import (
    EXIT_BUDGET,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    DemError,
    InputError,
    Interrupted,
    UsageError,
)
from cdse_dem.fetch import EXTRACT_THREADS, Fetcher, FetchOutcome
from cdse_dem.fsutil import SlotPool, lock_path_for, not_a_lock_file, remove_stale_temporaries
from cdse_dem.grid import FootprintFinder, FootprintSource, computed_footprints, geocells_of_each
from cdse_dem.http import Endpoints, new_http_session
from cdse_dem.report import Result, folder_problems, read_missing_list, result_of, tile_readiness
from cdse_dem.search import Stop, call_unless_stopped, interruptible_sleep, search_all
from cdse_dem.sen2cor import cells_with_reasons, check_gipp_option, end_of_work
from cdse_dem.session import CdseSession
from cdse_dem.settings import (
    COLLECTIONS,
    COVERAGES,
    DEFAULT_COLLECTION,
    DEFAULT_COVERAGE,
    DEFAULT_DELIVERY,
    DEFAULT_MODEL,
    DEFAULT_RESOLUTION,
    DELIVERIES,
    MAX_WORKERS,
    MODELS,
    RESOLUTIONS,
    Transfer,
)
from cdse_dem.tiles import Entry

log = logging.getLogger(__name__)



SEARCH_THREADS = 8


class Mode(StrEnum):
    """What a run does: :func:`download`, :func:`plan` (``--dry-run``) or :func:`check` (``--check``)."""

    DOWNLOAD = "download"
    PLAN = "plan"
    CHECK = "check"


Tiles = str | os.PathLike | Iterable[str] | None
Areas = areas.AreaLike | list[areas.AreaLike] | None  # one area or a list of them; None: none
Points = areas.PointLike | list[areas.PointLike] | None  # (lat, lon) pairs or 'LAT,LON'; None: none
ProgressCallback = Callable[[int, int], None]


# --- the API ------------------------------------------------------------------------------------

def download(tiles: Tiles = (), output_dir: str | os.PathLike | None = None, *, aoi: Areas = None,
             points: Points = None, resolution: int = DEFAULT_RESOLUTION,
             model: str = DEFAULT_MODEL, collection: str = DEFAULT_COLLECTION, delivery: str = DEFAULT_DELIVERY,
             coverage: str = DEFAULT_COVERAGE, workers: int = 4, transfer: str = "auto",
             keep_existing: bool = False, max_minutes: float = 60.0, kml: str | os.PathLike | None = None,
             gipp: str | os.PathLike | None = None, sen2like: str | os.PathLike | None = None,
             force: str | os.PathLike | None = None, quicklook: str | os.PathLike | None = None,
             credentials: Credentials | tuple[str, str] | None = None, stop: threading.Event | None = None,
             progress: ProgressCallback | None = None, fill_gaps: bool = False) -> Result:
    """Download the DEM geocells of ``tiles`` into ``output_dir``; what the command line does.

    ``tiles``: tile ids and SAFE names (an iterable of str, or one str), or a ``pathlib.Path``
    to a tile list file (one a line, ``#`` comments) or to a folder of products (the names of its
    ``*.SAFE``, ``*.SAFE.zip`` and ``*.zip`` entries). ``aoi``: an area, or a list of them (a shapely
    geometry, a GeoJSON-like mapping, WKT, a ``(W, S, E, N)`` box, a GeoJSON or WKT file; see
    :func:`cdse_dem.tiles_for_area`), whose tiles are added; ``points``: ``(lat, lon)`` pairs, the
    tiles covering each added. Duplicates are fetched once. ``resolution`` 90 or 30, ``model`` DGED or
    DTED, ``collection`` CCM or COP-DEM, ``delivery`` (CCM), ``coverage`` sen2cor or footprint,
    ``workers``, ``transfer`` (auto, nodes, zip), ``keep_existing``, ``max_minutes`` (0: no
    limit), ``kml`` (the tiling KML), ``gipp`` (a Sen2Cor L2A_GIPP.xml to point at the folder
    once complete) and ``fill_gaps`` are the command line's options of the same names.

    A cell the dataset has no product for is ``sea`` only when no Copernicus DEM dataset has one;
    otherwise it is a ``gap`` (exit status 1), which ``fill_gaps`` fills from another dataset's
    product of the cell (``filled``; ``geocell.filled_from`` names the dataset).

    ``sen2like``, ``force``, ``quicklook``: folders for the DEM of each complete tile as sen2like and
    FORCE read it, and a shaded-relief PNG of it (``--sen2like`` ...; need the ``processors`` extra,
    rasterio); each tile's paths are in ``result.tiles[i].outputs``.

    ``credentials``: a ``(user name, password)`` pair or :class:`cdse_dem.Credentials`; None:
    ``CDSE_USERNAME``/``CDSE_PASSWORD``, then the stored entry, then ``~/.netrc`` (never a
    prompt: none found raises :class:`cdse_dem.CredentialError`, exit status 2).

    ``stop``: a ``threading.Event``; setting it (from any thread) ends the call within a
    second or two, with everything finished recorded (``result.interrupted``).

    ``progress(done, total)``: told of the bytes downloaded and expected so far, from the
    download threads, one call at a time; keep it quick.

    Returns a :class:`cdse_dem.Result` (``exit_status`` as the command line's). Raises a
    :class:`cdse_dem.DemError` subclass for what stops a run before or during its work (a bad
    option or tile list, no credentials, a refused login, an unreachable identity service).
    """
    if output_dir is None:
        raise UsageError("download needs an output_dir")
    _check_callbacks(stop, progress)  # before prepare creates the output folder
    job = prepare(Mode.DOWNLOAD, tiles, output_dir, aoi=aoi, points=points, resolution=resolution, model=model,
                  collection=collection, delivery=delivery, coverage=coverage, workers=workers, transfer=transfer,
                  keep_existing=keep_existing, max_minutes=max_minutes, kml=kml, gipp=gipp,
                  fill_gaps=fill_gaps, sen2like=sen2like, force=force, quicklook=quicklook)
    return run(job, credentials=credentials, stop=stop, progress=progress)


def plan(tiles: Tiles = (), output_dir: str | os.PathLike | None = None, *, aoi: Areas = None,
         points: Points = None, resolution: int = DEFAULT_RESOLUTION,
         model: str = DEFAULT_MODEL, collection: str = DEFAULT_COLLECTION, delivery: str = DEFAULT_DELIVERY,
         coverage: str = DEFAULT_COVERAGE, keep_existing: bool = False, kml: str | os.PathLike | None = None,
         stop: threading.Event | None = None, fill_gaps: bool = False) -> Result:
    """What :func:`download` would do, as ``--dry-run`` shows it; needs no credentials, writes nothing.

    Each geocell is ``planned`` (with the product the catalogue chose; with ``fill_gaps``, a gap's
    source product and ``filled_from``), ``present`` (whole and recorded in ``output_dir``),
    ``filled`` (filled by an earlier run), ``sea`` (no product on CDSE), ``gap`` (a product in
    another dataset only) or ``failed`` (the search failed). ``output_dir`` None: nothing is taken
    as present. ``tiles``, ``aoi`` and ``points`` as :func:`download`'s.
    """
    job = prepare(Mode.PLAN, tiles, output_dir, aoi=aoi, points=points, resolution=resolution, model=model,
                  collection=collection, delivery=delivery, coverage=coverage, keep_existing=keep_existing, kml=kml,
                  fill_gaps=fill_gaps)
    return run(job, stop=stop)


def check(tiles: Tiles = (), output_dir: str | os.PathLike | None = None, *, aoi: Areas = None,
          points: Points = None, resolution: int = DEFAULT_RESOLUTION,
          model: str = DEFAULT_MODEL, collection: str = DEFAULT_COLLECTION, delivery: str = DEFAULT_DELIVERY,
          coverage: str = DEFAULT_COVERAGE, kml: str | os.PathLike | None = None,
          sen2cor_missing_list: str | os.PathLike | None = None, gipp: str | os.PathLike | None = None,
          sen2like: str | os.PathLike | None = None, force: str | os.PathLike | None = None,
          quicklook: str | os.PathLike | None = None, stop: threading.Event | None = None) -> Result:
    """Will Sen2Cor find a complete DEM for each tile in ``output_dir``? What ``--check`` says.

    Downloads nothing, needs no credentials, changes nothing in the folder (``gipp`` is
    written only when every tile is ready). Each tile's ``check`` holds the verdict
    (``ready``, ``present``, ``filled``, ``sea``, ``missing``: a gap is missing, and so is a file
    ``sen2cor_missing_list`` names, which Sen2Cor skips); ``result.ready`` is all of them, and
    ``exit_status`` 0 when every tile is ready, 1 when one is not (or an entry was invalid).
    ``tiles``, ``aoi`` and ``points`` as :func:`download`'s. ``sen2like``, ``force``, ``quicklook``:
    as for :func:`download`, made for each complete tile.
    """
    if output_dir is None:
        raise UsageError("check needs an output_dir")
    job = prepare(Mode.CHECK, tiles, output_dir, aoi=aoi, points=points, resolution=resolution, model=model,
                  collection=collection, delivery=delivery, coverage=coverage, kml=kml, gipp=gipp,
                  missing_list=sen2cor_missing_list, sen2like=sen2like, force=force, quicklook=quicklook)
    return run(job, stop=stop)


# --- the request, checked -----------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """A request found usable: nothing in it can fail the run before the network is asked."""

    mode: Mode
    valid: tuple[Entry, ...]  # one per tile, in the order first asked for
    invalid: tuple[Entry, ...]
    output_dir: Path | None
    resolution: int
    model: str
    collection: str
    delivery: str
    coverage: str
    workers: int
    transfer: str
    keep_existing: bool
    max_minutes: float
    footprints: FootprintFinder  # of the run's tiling KML (--kml), or computed
    gipp: str | None
    missing_list: str | None
    fill_gaps: bool = False
    outputs: processors.Outputs | None = None  # the sen2like, FORCE and quicklook folders

    @property
    def dataset(self) -> Dataset:
        return Dataset(self.collection, self.resolution, self.model, self.delivery)


def prepare(mode: Mode, tiles: Tiles, output_dir: str | os.PathLike | None, *, aoi: Areas = None,
            points: Points = None, resolution: int = DEFAULT_RESOLUTION, model: str = DEFAULT_MODEL,
            collection: str = DEFAULT_COLLECTION, delivery: str = DEFAULT_DELIVERY, coverage: str = DEFAULT_COVERAGE,
            workers: int = 4, transfer: str = "auto", keep_existing: bool = False, max_minutes: float = 60.0,
            kml: str | os.PathLike | None = None, gipp: str | os.PathLike | None = None,
            missing_list: str | os.PathLike | None = None, fill_gaps: bool = False,
            sen2like: str | os.PathLike | None = None, force: str | os.PathLike | None = None,
            quicklook: str | os.PathLike | None = None) -> Job:
    """The request checked, in the command line's order: options, GIPP, the processors' outputs (rasterio
    there), tile list, areas and points (invalid entries logged), output folder (created and probed for a
    download), the outputs' folders (likewise); UsageError (exit 2) otherwise."""
    model, collection = str(model).upper(), str(collection).upper()
    coverage, transfer = str(coverage).lower(), str(transfer).lower()
    _one_of("resolution", resolution, RESOLUTIONS)
    _one_of("model", model, MODELS)
    _one_of("collection", collection, COLLECTIONS)
    _one_of("delivery", delivery, DELIVERIES)
    _one_of("coverage", coverage, COVERAGES)
    _one_of("transfer", transfer, tuple(t.value for t in Transfer))
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"workers must be a whole number from 1 to {MAX_WORKERS}, not {workers!r}")
    if not isinstance(max_minutes, (int, float)) or not max_minutes >= 0:
        raise UsageError(f"max_minutes must be 0 (no limit) or more, not {max_minutes!r}")
    if fill_gaps and mode == Mode.CHECK:
        raise UsageError("--fill-gaps is for a download (or --dry-run): --check never writes a file")
    gipp = _path_text(gipp, "Sen2Cor GIPP")
    missing_list = _path_text(missing_list, "Sen2Cor missing-tiles list")
    out_dir = settings.expand_user(output_dir, "output folder") if output_dir is not None else None
    check_gipp_option(gipp, model, out_dir)  # before any work: refused GIPPs stay untouched
    outputs = _outputs(mode, sen2like, force, quicklook, resolution, collection, delivery, model)
    _check_open_files(mode, workers, outputs is not None)
    footprints = FootprintFinder(settings.kml_path_of(kml))
    entries = _entries(tiles) + areas.entries_of(aoi, points, footprints)
    if not entries:
        raise InputError("no tile id, SAFE name, area or point to process")
    invalid = [e for e in entries if e.error]
    for entry in invalid:
        log.error("%s", entry.message)
    valid = tiles_mod.unique_tiles(entries)
    if not valid:
        raise InputError("no valid tile id or SAFE name to process")
    if out_dir is not None:
        _check_output_dir(out_dir, create=mode == Mode.DOWNLOAD)
        if mode == Mode.DOWNLOAD:
            _check_record_lock(out_dir)
    for kind, folder in (outputs.asked() if outputs is not None else {}).items():
        _check_output_dir(folder, create=True, what=f"{kind} folder")
    return Job(mode, tuple(valid), tuple(invalid), out_dir, resolution, model, collection, delivery, coverage,
               workers, transfer, bool(keep_existing), float(max_minutes), footprints, gipp, missing_list,
               bool(fill_gaps), outputs)


def _path_text(value, what: str) -> str | None:
    """An optional path argument as text (None or "": not given); UsageError for a value that is no path."""
    if value is None or value == "":
        return None
    return str(settings.expand_user(value, what))


def _outputs(mode: Mode, sen2like, force, quicklook, resolution: int, collection: str, delivery: str,
             model: str) -> processors.Outputs | None:
    """The processors' folders asked for, None when none is; refused with a dry run, sen2like with DTED
    and any without rasterio."""
    folders = {kind: settings.expand_user(path, f"{kind} folder")
               for kind, path in (("sen2like", sen2like), ("force", force), ("quicklook", quicklook)) if path}
    if not folders:
        return None
    if mode == Mode.PLAN:
        raise UsageError(f"--dry-run writes nothing: it does not go with --{', --'.join(folders)}")
    outputs = processors.Outputs(**folders, resolution=resolution,
                                 dataset=processors.sen2like_dataset(resolution, collection, delivery))
    processors.check_request(outputs, model)
    return outputs


# The files a run opens at once, beyond those already open when it starts (peaks measured with
# benchmarks/bench_open_files.py: 14, 28, 47 and 77 in all for 1, 4, 8 and 16 workers; 28, 34 and
# 61 for 1, 4 and 16 with the three outputs of --sen2like, --force and --quicklook): the catalogue
# searches' connections, the identity service's, the folder's record and its lock, the KML index
# and a few more; per worker a connection, a temporary file and the lock held on it, the
# geocell's lock and the account's slot; per extraction the zip, its lock and the DEM's temporary
# file and lock; and per tile whose outputs are made at once (processors.THREADS), its geocells
# as GDAL reads them and the files it writes.
OPEN_FILES_RUN = SEARCH_THREADS + 8
OPEN_FILES_WORKER = 5
OPEN_FILES_EXTRACTION = 4
OPEN_FILES_OUTPUTS = 8


def open_files_needed(mode: Mode, workers: int, outputs: bool = False) -> int:
    """The most files (descriptors: files, sockets, locks) a run opens at once, beyond those open
    before it; ``outputs``: with the processors' outputs made as tiles complete."""
    if mode != Mode.DOWNLOAD:
        return OPEN_FILES_RUN
    return (OPEN_FILES_RUN + OPEN_FILES_WORKER * workers + OPEN_FILES_EXTRACTION * EXTRACT_THREADS
            + (OPEN_FILES_OUTPUTS * processors.THREADS if outputs else 0))


def _check_open_files(mode: Mode, workers: int, outputs: bool = False) -> None:
    """A run that would reach the process's limit of open files (``ulimit -n``) is refused before it
    starts, in one line saying what it needs: past the limit every file, lock and connection it
    opens would fail, each in its own way."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows: no such limit
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    try:
        open_now = len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor is not counted
    except OSError:
        open_now = 3
    need = open_now + open_files_needed(mode, workers, outputs)
    if need <= soft:
        return
    if mode != Mode.DOWNLOAD:
        raise UsageError(f"this process may open only {soft} files at once (ulimit -n), {open_now} of them open "
                         f"already: the run needs up to {need}; raise the limit (ulimit -n {need})")
    fewer = next((w for w in range(workers - 1, 0, -1) if open_now + open_files_needed(mode, w, outputs) <= soft),
                 None)
    advice = f" or use fewer workers (--workers {fewer})" if fewer else ""
    raise UsageError(f"this process may open only {soft} files at once (ulimit -n), {open_now} of them open already: "
                     f"a run with {workers} worker(s) needs up to {need}; raise the limit (ulimit -n {need}){advice}")


def _one_of(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")


def _entries(tiles: Tiles) -> list[Entry]:
    """A tile list file or a folder of products (a path), one entry (a str), or entries (an iterable of str)."""
    if tiles is None:
        return []
    if isinstance(tiles, os.PathLike):
        path = settings.expand_user(tiles, "tile list file")
        if path.is_dir():
            return tiles_mod.read_product_folder(path)
        log.info("Reading tiles from %s", path)
        return tiles_mod.read_tile_list(path)
    if isinstance(tiles, str):
        tiles = [tiles]
    wanted = "tiles must be tile ids or SAFE names (str), or a pathlib.Path to a tile list file"
    if isinstance(tiles, (bytes, bytearray)) or not isinstance(tiles, Iterable):
        raise UsageError(f"{wanted}, not {type(tiles).__name__}")
    values = list(tiles)
    wrong = [value for value in values if not isinstance(value, str)]
    if wrong:
        raise UsageError(f"{wanted}, not a {type(wrong[0]).__name__} among them")
    return tiles_mod.from_command_line(values)


def _check_output_dir(out_dir: Path, *, create: bool, what: str = "output folder") -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: the {what} is a file")
    if not out_dir.exists():
        if not create:
            return
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{out_dir}: cannot create the {what} ({exc.strerror})") from None
    if not create:
        return  # a dry run or a check writes nothing there, not even a probe
    try:  # a fresh name created exclusively: never a file (or a symlink to one) already there
        with tempfile.TemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot write into the {what} ({exc.strerror})") from None


def _check_record_lock(out_dir: Path) -> None:
    """The lock of the output folder's record must be free or a plain file: every geocell is recorded
    under it, so with a link, a folder or a FIFO there none could be."""
    record_lock = lock_path_for(out_dir, settings.JSON_NAME)
    kind = not_a_lock_file(record_lock)
    if kind is not None:
        raise UsageError(f"{record_lock}: {kind}, not the lock file of the output folder's record: "
                         "left alone; move it away and run again")


# --- the run ------------------------------------------------------------------------------------

def run(job: Job, *, credentials: Credentials | tuple[str, str] | None = None, stop: threading.Event | None = None,
        progress: ProgressCallback | None = None, ask_totp: Callable[[], str] | None = None) -> Result:
    """Do ``job``: a Result, or a DemError (with the Result so far in ``.result`` once work began).

    ``ask_totp``: where a fresh two-factor code comes from when a run must log in again (the
    command line's terminal); None: nobody to ask, the run stops starting downloads instead.
    """
    _check_callbacks(stop, progress)
    stop = Stop(stop)  # the run's own: a progress callback that fails ends the run, never sets the caller's event
    logs.scrub_our_loggers()
    with logs.run_scope():
        if job.mode == Mode.DOWNLOAD:  # neither a plan nor a check reads, asks for or sends credentials
            credentials = _credentials(credentials)
        log.info("Processing %d Tile(s)", len(job.valid))
        log.info("Start time: %s", datetime.now())
        log.info("<----->")
        try:
            if job.mode == Mode.CHECK:
                return _check(job, stop)
            return _plan_and_fetch(job, credentials, stop, progress, ask_totp)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            # the limit was checked before the run (prepare); the caller, or another thread, opened more
            need = open_files_needed(job.mode, job.workers, job.outputs is not None)
            raise DemError(f"too many files open at once ({exc.strerror}): a run with {job.workers} worker(s) needs "
                           f"up to {need} more than the process had open; raise the limit (ulimit -n) or use fewer "
                           "workers") from None


def _check_callbacks(stop, progress) -> None:
    """What the caller hands over to be called: UsageError up front when it cannot be."""
    if stop is not None and not all(callable(getattr(stop, name, None)) for name in ("is_set", "wait")):
        raise UsageError(f"stop must be a threading.Event, not {type(stop).__name__}")
    if progress is not None and not callable(progress):
        raise UsageError(f"progress must be a function of (done, total), not {type(progress).__name__}")


def _credentials(given) -> Credentials:
    if given is None:
        return obtain_credentials(settings.credentials_dir(), Endpoints.from_env().identity_host, interactive=False)
    if isinstance(given, Credentials):
        logs.remember(given.password, given.totp)  # again: a run that ended meanwhile forgot them
        logs.shown(given.username)
        return given
    if isinstance(given, (tuple, list)) and len(given) in (2, 3) and all(isinstance(v, str) and v for v in given[:2]):
        found = Credentials(given[0], given[1], given[2] if len(given) == 3 else None, "argument")
        log.info("Using the CDSE credentials of %s given by the caller", found.username)
        return found
    raise UsageError("credentials must be a (user name, password) pair, a cdse_dem.Credentials, or None")


def _plan_and_fetch(job: Job, credentials: Credentials | None, stop: threading.Event,
                    progress: ProgressCallback | None, ask_totp) -> Result:
    """A download, or a plan (``--dry-run``: the same up to the downloads, which it leaves out)."""
    started = time.monotonic()
    downloading = job.mode == Mode.DOWNLOAD
    endpoints = Endpoints.from_env()
    out_dir = job.output_dir
    tile_plans = _tile_plans(job.valid, job.footprints, job.coverage)
    cache = NameIdCache.load(out_dir) if out_dir is not None and out_dir.is_dir() else None
    if cache is not None and downloading:
        for stale in remove_stale_temporaries(out_dir):
            log.info("Removed a temporary file left by an earlier run: %s", stale.name)

    def file_name(cell):
        return cell.dem_file_name(job.resolution, job.model)

    def recorded_id(name):
        if cache is None or not cache.is_complete(name):
            return None

        problem = dem_problem(out_dir / name)  # headers only (and DTED checksums): cheap per file
        if problem is not None:
            log.warning("%s is recorded but is not a whole DEM (%s): downloading it again", name, problem)
            return None
        return cache.product_id(name)

    plan_ = planning.start_plan(tile_plans, file_name, recorded_id)
    sea_record, sources = _folder_records(out_dir, job)
    if sea_record is not None:
        planning.mark_known_sea(plan_, sea_record.is_sea)
    if sources is not None:
        _kept_fills(planning.mark_filled(plan_, sources.filled_from))
        if job.keep_existing:
            if plan_.count(planning.Status.PRESENT):
                log.info("--keep-existing: %d geocell(s) already present kept as they are",
                         plan_.count(planning.Status.PRESENT))
        else:
            planning.mark_to_compare(plan_, lambda name: sources.came_from(name, job.dataset.label))
    http = new_http_session(job.workers + SEARCH_THREADS, endpoints)
    catalogue = Catalogue(endpoints.catalogue_url, http, stop=Stop(stop))
    builder = processors.Builder(job.outputs, plan_, out_dir, stop) if downloading and job.outputs else None
    reporter = _Progress(progress, stop.set) if downloading and progress is not None else None
    fetcher = _fetcher(job, credentials, http, endpoints, cache, stop, reporter, ask_totp,
                       builder.cell_landed if builder is not None else None) if downloading else None
    status = EXIT_OK
    failure: BaseException | None = None
    try:
        _search(plan_, catalogue, job, fetcher)
        if stop.is_set():
            raise Interrupted("stopped during the catalogue search")
        if builder is not None:  # the tiles already whole start now; the others as their last geocell lands
            builder.offer_complete()
        if fetcher is None:
            log.info("There are %d DEM files expected", len(plan_.to_fetch()))
        else:
            log.info("There are %d DEM files expected", fetcher.outcome.submitted)
            if fetcher.outcome.submitted == 0 and plan_.count(planning.Status.PRESENT):
                log.info("Nothing to download: every DEM geocell is already in %s", out_dir)
            fetcher.finish()
            if stop.is_set():
                raise Interrupted("stopped during the downloads")
            if fetcher.session is not None:
                log.info("Dictionary name:id saved to JSON file")
    except Interrupted:
        status = EXIT_INTERRUPTED
        if fetcher is not None:
            fetcher.abort()
    except BaseException as exc:  # a login refused while tiles were searched; a KeyboardInterrupt; a bug
        if fetcher is not None:
            fetcher.abort()
        status = exc.exit_status if isinstance(exc, DemError) else EXIT_INTERRUPTED
        failure = exc
    finally:
        http.close()  # after the logout: nothing a search thread still holds is sent again
        if builder is not None and status != EXIT_OK:
            builder.abort()
        if reporter is not None:
            reporter.close()
    if reporter is not None and reporter.failure is not None and failure is None:
        status, failure = EXIT_FAILED, reporter.error()
    made = _finish_outputs(builder)
    if made is not None and status == EXIT_OK and stop.is_set():
        status = EXIT_INTERRUPTED  # stopped while the outputs were made: those under way were left
    outcome = fetcher.outcome if fetcher is not None else FetchOutcome()
    if status == EXIT_OK:
        status = _exit_status(plan_, job.invalid, outcome.left, outcome.fatal)
    if downloading:
        _record_what_the_catalogue_said(plan_, sea_record, sources, job)
    if outcome.left:
        log.warning("Time budget spent: %d geocell(s) not started; run again to resume", len(outcome.left))
    result = result_of(plan_, list(job.invalid), exit_status=status, seconds=time.monotonic() - started,
                       bytes_downloaded=outcome.bytes, output_dir=out_dir, left=outcome.left,
                       error=str(outcome.fatal) if outcome.fatal is not None else None, outputs=made,
                       asked=job.outputs)
    if failure is not None:
        if isinstance(failure, DemError):
            failure.result = result
        raise failure
    if outcome.fatal is not None:
        log.error("%s", outcome.fatal)
    if downloading and status != EXIT_INTERRUPTED:
        complete = not (outcome.left or outcome.fatal) and planning.complete(c.status for c in plan_.cells.values())
        if not end_of_work(job.gipp, out_dir, job.resolution, job.model, complete=complete):
            result.exit_status = EXIT_FAILED
        _end_of_outputs(job, made, result)
    return result


def _check(job: Job, stop: threading.Event) -> Result:
    """The check from planned tiles to its Result: each tile's verdict in ``tile.check``."""

    out_dir = job.output_dir
    tile_plans = _tile_plans(job.valid, job.footprints, job.coverage)  # exactly the geocells a run plans
    missing_list = read_missing_list(job.missing_list, job.resolution) if job.missing_list else None
    started = time.monotonic()
    plan_ = planning.start_plan(tile_plans, lambda cell: cell.dem_file_name(job.resolution, job.model),
                                lambda name: None)
    problems = folder_problems(out_dir, plan_, job.resolution)
    for state in plan_.cells.values():
        if problems[state.file_name] is None:
            state.status, state.file = planning.Status.PRESENT, str(out_dir / state.file_name)
    planning.mark_filled(plan_, FileSources.load(out_dir).filled_from)
    log.info("Checking %s: %d of %d geocells have a whole DEM file there", out_dir,
             sum(p is None for p in problems.values()), len(problems))
    endpoints = Endpoints.from_env()
    http = new_http_session(SEARCH_THREADS, endpoints)
    interrupted = False
    try:
        _search(plan_, Catalogue(endpoints.catalogue_url, http, stop=Stop(stop)), job, None)
        interrupted = stop.is_set()
    except Interrupted:
        interrupted = True
    finally:
        http.close()
    verdicts = [tile_readiness(plan_, tile, problems, missing_list) for tile in plan_.tiles]
    if interrupted:
        status = EXIT_INTERRUPTED
    else:
        ready = all(v.ready for v in verdicts)
        status = EXIT_OK if ready and not job.invalid else EXIT_FAILED
        for verdict in verdicts:
            if not verdict.ready:
                log.warning("Tile %s is not ready for Sen2Cor: %s", verdict.tile,
                            ", ".join(m.file_name for m in verdict.missing))
        if not end_of_work(job.gipp, out_dir, job.resolution, job.model, complete=ready):
            status = EXIT_FAILED
    made = None
    if job.outputs is not None and not interrupted:
        made = _finish_outputs(processors.Builder(job.outputs, plan_, out_dir, stop))
        if stop.is_set():
            interrupted, status = True, EXIT_INTERRUPTED  # those under way were left
    result = result_of(plan_, list(job.invalid), exit_status=status, seconds=time.monotonic() - started,
                       bytes_downloaded=0, output_dir=out_dir, checks=verdicts, outputs=made,
                       asked=job.outputs)
    if not interrupted:
        _end_of_outputs(job, made, result)
    return result


def _finish_outputs(builder: processors.Builder | None) -> dict[str, processors.TileOutputs] | None:
    """Every tile's outputs, once the tiles still to start (their last geocell landed late) have started."""
    if builder is None:
        return None
    builder.offer_complete()
    return builder.finish()


def _end_of_outputs(job: Job, made: dict[str, processors.TileOutputs] | None, result: Result) -> None:
    """sen2like's and FORCE's lines; a run whose output failed ends with exit status 1."""
    if made is None:
        return
    processors.log_configuration(job.outputs, made)
    if result.exit_status == EXIT_OK and any(tile.errors for tile in made.values()):
        result.exit_status = EXIT_FAILED


def _fetcher(job: Job, credentials: Credentials, http, endpoints: Endpoints, cache, stop: threading.Event,
             progress: _Progress | None, ask_totp, on_landed) -> Fetcher:
    """Downloads start as soon as the catalogue names a first product: login then, not before."""

    def login():
        session = CdseSession(credentials, endpoints, http=http, max_minutes=job.max_minutes, ask_totp=ask_totp,
                              sleep=interruptible_sleep(stop))
        session.login()
        return session

    def open_session():
        # a login waits for the identity service (its retries, a 30 s read timeout): a stop must not
        return call_unless_stopped(login, stop, abandoned=_log_out)

    slots = SlotPool.for_account(endpoints.token_url, credentials.username, job.workers)
    return Fetcher(open_session=open_session, http=http, endpoints=endpoints, out_dir=job.output_dir, cache=cache,
                   workers=job.workers, progress=progress, slots=slots, transfer=job.transfer, stop=stop,
                   on_landed=on_landed)


def _log_out(session) -> None:
    """A login that completed after its run had stopped: end that CDSE session too."""
    session.logout()
    session.close()


PROGRESS_GRACE = 1.0  # seconds the run's end waits for the caller's progress callback to take its last figures


class _Progress:
    """The byte counter the fetcher moves (``total``, ``update``, ``refresh``, as on a tqdm bar),
    told to the caller's ``progress(done, total)`` from a thread of its own.

    The download threads only add to the counter: a callback that is slow, blocks or raises
    never holds a transfer (nor a stop) up. The callback gets the latest figures, one call at a
    time, none after :meth:`close`; one that raises ends the run (``on_failure``), and the run
    then fails with :meth:`error`, naming it.
    """

    def __init__(self, report: ProgressCallback, on_failure: Callable[[], None]):
        self._report = report
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._done = 0
        self.total = 0
        self._changed = threading.Event()
        self._closed = False
        self._busy = False  # a call of the callback is under way
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._tell, name="progress", daemon=True)
        self._thread.start()

    def update(self, count: int) -> None:
        with self._lock:
            self._done += count
        self._changed.set()

    def refresh(self) -> None:
        self._changed.set()

    def _tell(self) -> None:
        while True:
            self._changed.wait()
            with self._lock:  # taken and marked busy at once: close() sees one or the other
                self._changed.clear()
                if self._closed:
                    return
                done, total = self._done, self.total or 0
                self._busy = True
            try:
                self._report(done, total)
            except BaseException as exc:  # the caller's code: the run ends, and says why
                self.failure = exc
                self._on_failure()
                return
            finally:
                with self._lock:
                    self._busy = False

    def close(self) -> None:
        """The last figures told, and no call after this returns (a callback still busy is waited for
        ``PROGRESS_GRACE`` at most: after that it is left to itself, and never called again)."""
        self._changed.set()
        deadline = time.monotonic() + PROGRESS_GRACE
        while self._thread.is_alive() and time.monotonic() < deadline:
            with self._lock:
                if not self._busy and not self._changed.is_set():
                    break
            time.sleep(0.005)
        with self._lock:
            self._closed = True
        self._changed.set()

    def error(self) -> DemError:
        name = getattr(self._report, "__qualname__", None) or type(self._report).__name__
        exc = self.failure
        return DemError(f"the progress callback {name} raised {type(exc).__name__}: {exc}; the run was stopped")


def _tile_plans(valid, finder: FootprintFinder, coverage: str):
    """Footprints and geocells of every tile, in one batch.

    With the KML, a tile's geocells are those of its KML polygon and of its true area (the
    computed footprint) together: the KML's straight lon/lat edges miss a sliver of the true
    tile in 120 band-C tiles, and Sen2Cor needs the DEM under every pixel. With ``--coverage
    sen2cor`` (the default) every cell of Sen2Cor's rectangle is added (sen2cor.py).
    """

    footprints = finder.footprints([entry.tile for entry in valid])
    cells = geocells_of_each(f.parts for f in footprints)
    from_kml = [i for i, f in enumerate(footprints) if f.source == FootprintSource.KML]
    if from_kml:
        true_areas = computed_footprints([footprints[i].tile for i in from_kml])
        for i, extra in zip(from_kml, geocells_of_each(f.parts for f in true_areas), strict=True):
            cells[i] = sorted(set(cells[i]) | set(extra))
    reasons = cells_with_reasons([f.tile for f in footprints], cells, coverage)
    return [planning.TilePlan(entry, entry.tile, footprint.source, list(tile_reasons), footprint,
                              reasons=tile_reasons)
            for entry, footprint, tile_reasons in zip(valid, footprints, reasons, strict=True)]


def _search(plan_, catalogue: Catalogue, job: Job, fetcher: Fetcher | None) -> None:
    """Catalogue searches by area for the cells that need one (see cdse_dem.search)."""
    search_all(plan_, catalogue, job.dataset, fetcher, SEARCH_THREADS, fill_gaps=job.fill_gaps)


def _folder_records(out_dir: Path | None, job: Job):
    """What earlier runs learnt from the catalogue: the open-sea cells of this collection and
    model, and which dataset each present file came from (both None when there is no folder yet).

    Open sea is a cell no dataset of the collection has (at any resolution or delivery: the
    search for other datasets said so), so it is recorded per collection and model; records
    keyed by one dataset, as earlier versions wrote them, may hold gaps and are not read.
    """

    if out_dir is None or not out_dir.is_dir():
        return None, None
    sea = SeaRecord.load(out_dir, f"{job.collection} {job.model} (every resolution and delivery)")
    return sea, FileSources.load(out_dir)


def _kept_fills(kept: list[planning.CellState]) -> None:
    if kept:
        log.info("%d geocell(s) filled by an earlier run kept as they are (whole DEMs, filled from %s): %s; "
                 "each is replaced once CDSE has its own product", len(kept),
                 ", ".join(sorted({state.fill_from for state in kept})),
                 " ".join(state.geocell.grid_id for state in kept))


def _record_what_the_catalogue_said(plan_, sea_record, sources, job: Job) -> None:
    """Open-sea cells and where the files this run fetched, filled or confirmed came from, for
    the next run's plan and for ``--check``."""
    if sea_record is None:
        return
    sea_record.save(c.geocell for c in plan_.cells.values() if c.status == planning.Status.SEA)
    sources.save({c.file_name: sources.filled(c.fill_from) if c.status == planning.Status.FILLED else job.dataset.label
                  for c in plan_.cells.values()
                  if c.confirmed or c.status in (planning.Status.DOWNLOADED, planning.Status.FILLED)})


def _exit_status(plan_, invalid, left, fatal) -> int:
    if left:
        return EXIT_BUDGET
    if fatal is not None or invalid or plan_.count(planning.Status.FAILED) or plan_.count(planning.Status.GAP):
        return EXIT_FAILED
    return EXIT_OK
