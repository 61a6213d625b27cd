"""One run of the tool, from parsed arguments to exit status.

The order matters to users: everything that can be wrong with the request (options,
configuration, tile list, output folder, credentials) is found before any network call;
the catalogue is searched before logging in (search needs no token, and a run with
nothing to download needs no login); geocells are fetched last.
"""

import logging
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from cdse_dem import RELEASE_DATE, __version__, paths
from cdse_dem.errors import (
    EXIT_BUDGET,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    DemError,
    InputError,
    UsageError,
)

log = logging.getLogger("cdse_dem.app")
SEARCH_THREADS = 8


def run(args) -> int:
    from cdse_dem.logs import setup_logging
    from cdse_dem.redact import forget_all

    forget_all()  # secrets are registered as this run comes to hold them (redact.py)

    try:
        setup_logging(args.verbose, args.quiet, Path(args.log_file) if args.log_file else None)
    except OSError as exc:
        print(f"{args.log_file}: cannot write the log file ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    if hasattr(sys.stdout, "reconfigure") and encoding in ("utf-8", "utf8"):
        sys.stdout.reconfigure(errors="surrogateescape")  # a path that is not UTF-8 printed as it is named
    log.info("CDSE Copernicus DEM Downloader: Copernicus DEM retrieval for Sen2Cor")
    log.info("Version: %s Date: %s", __version__, RELEASE_DATE)
    log.info("<----->")
    previous = {sig: signal.signal(sig, _interrupt) for sig in _STOP_SIGNALS}
    try:
        if args.reset:
            return _reset(args)
        return _run(args)
    except DemError as exc:
        log.error("%s", exc)
        return exc.exit_status
    except KeyboardInterrupt:
        log.error("Interrupted: finished geocells are recorded; a re-run resumes")
        return EXIT_INTERRUPTED
    finally:
        if signal.getsignal(signal.SIGINT) is _interrupt:  # not interrupted: give the caller its handlers back
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum, frame):
    """The first Ctrl-C or SIGTERM stops the run; later ones are ignored while it cleans up.

    Cleaning up is short (workers notice the stop within a fraction of a second, remove their
    temporaries, verified downloads are recorded): a second signal cutting it short would
    leave temporary files and a traceback, and save nothing. They stay ignored until the
    process ends, which waits for the download threads to finish cleaning up.
    """
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _ignore)
    raise KeyboardInterrupt


def _ignore(signum, frame):
    """Not SIG_IGN: a signal that arrived before the switch would then be reported by Python as
    "ignored due to race condition", with a traceback."""


def _reset(args) -> int:
    from cdse_dem.credentials import reset_credentials

    return reset_credentials(paths.credentials_dir(), assume_yes=args.yes)


def _run(args) -> int:
    from cdse_dem import entries as entries_mod
    from cdse_dem.config import load_config
    from cdse_dem.options import decide

    config = None
    if args.config is not None:
        config = load_config(paths.expand_user(args.config, "configuration file") if args.config
                             else paths.default_configuration_file())
    settings = decide(args, config)
    log.info("Reading Request from %s", settings.origin)
    if settings.ignored:
        log.warning("%s has priority: %s ignored", "--config" if config else "--t", ", ".join(settings.ignored))
    from cdse_dem.options import CDSE_CONNECTION_LIMIT

    if args.workers > CDSE_CONNECTION_LIMIT:
        log.warning("--workers %d: CDSE serves %d downloads at once per account; the others wait for 429 answers",
                    args.workers, CDSE_CONNECTION_LIMIT)

    from cdse_dem.check import check_options
    from cdse_dem.gipp import check_gipp_option

    check_options(args)
    check_gipp_option(args.gipp, settings.model)  # before any work: refused GIPPs stay untouched

    if settings.tile_args:
        entries = entries_mod.from_command_line(list(settings.tile_args))
    else:
        log.info("Reading tiles from %s", settings.tiles_file)
        entries = entries_mod.read_tile_list(settings.tiles_file)
    invalid = [e for e in entries if e.error]
    for entry in invalid:
        log.error("%s", entry.message)
    valid = entries_mod.unique_tiles(entries)
    if not valid:
        raise InputError("no valid tile id or SAFE name to process")

    out_dir = settings.output_dir
    _check_output_dir(out_dir, create=not (args.dry_run or args.check))
    for path, what in ((args.summary_json, "summary JSON"), (args.kml_report, "KML report")):
        if path:
            _check_report_path(Path(path), what, out_dir)
    credentials = None
    if not (args.dry_run or args.check):  # neither downloads: no credentials read, asked for or sent
        from cdse_dem.credentials import obtain_credentials
        from cdse_dem.endpoints import Endpoints

        credentials = obtain_credentials(paths.credentials_dir(), _host(Endpoints.from_env().token_url))

    log.info("Processing %d Tile(s)", len(valid))
    log.info("Start time: %s", datetime.now())
    log.info("<----->")
    return _work(args, settings, valid, invalid, out_dir, credentials)


def _work(args, settings, valid, invalid, out_dir: Path, credentials) -> int:
    from cdse_dem import planning as plan_mod
    from cdse_dem.cache import NameIdCache
    from cdse_dem.catalogue import Catalogue
    from cdse_dem.endpoints import Endpoints
    from cdse_dem.http import new_http_session
    from cdse_dem.progress import close_bar
    from cdse_dem.report import Totals

    started = time.monotonic()
    endpoints = Endpoints.from_env()
    tile_plans = _tile_plans(valid, args.kml, args.coverage)
    if args.check:  # the tiles' geocells exactly as a run plans them; the check goes its own way from here
        from cdse_dem.check import run_check

        return run_check(args, settings, tile_plans, invalid, out_dir)
    cache = NameIdCache.load(out_dir) if out_dir.is_dir() else None
    if cache is not None and not args.dry_run:
        from cdse_dem.fsutil import remove_stale_temporaries

        for stale in remove_stale_temporaries(out_dir):
            log.info("Removed a temporary file left by an earlier run: %s", stale.name)

    def file_name(cell):
        return cell.dem_file_name(settings.resolution, settings.model)

    def recorded_id(name):
        if cache is None or not cache.is_complete(name):
            return None
        from cdse_dem.integrity import dem_problem

        problem = dem_problem(out_dir / name)  # headers only (and DTED checksums): cheap per file
        if problem is not None:
            log.warning("%s is recorded but is not a whole DEM (%s): downloading it again", name, problem)
            return None
        return cache.product_id(name)

    plan = plan_mod.start_plan(tile_plans, file_name, recorded_id)
    sea_record, sources = _folder_records(out_dir, settings)
    if sea_record is not None:
        plan_mod.mark_known_sea(plan, sea_record.is_sea)
    if sources is not None:
        if getattr(args, "keep_existing", False):
            if plan.count(plan_mod.PRESENT):
                log.info("--keep-existing: %d geocell(s) already present kept as they are",
                         plan.count(plan_mod.PRESENT))
        else:
            plan_mod.mark_to_compare(plan, lambda name: sources.came_from(name, sea_record.key))
    http = new_http_session(args.workers + SEARCH_THREADS)
    catalogue = Catalogue(endpoints.catalogue_url, http)
    fetcher = None if args.dry_run else _fetcher(args, credentials, http, endpoints, out_dir, cache)
    totals = Totals()
    left: list[str] = []
    fatal: DemError | None = None
    status = EXIT_OK
    try:
        _search(plan, catalogue, settings, fetcher)
        if fetcher is None:
            log.info("There are %d DEM files expected", len(plan.to_fetch()))
            _print_plan(plan)
        else:
            log.info("There are %d DEM files expected", fetcher.outcome.submitted)
            if fetcher.outcome.submitted == 0 and plan.count(plan_mod.PRESENT):
                log.info("Nothing to download: every DEM geocell is already in %s", out_dir)
            outcome = fetcher.finish()
            if fetcher.session is not None:
                log.info("Dictionary name:id saved to JSON file")
            left, fatal, totals.bytes_downloaded = outcome.left, outcome.fatal, outcome.bytes
    except BaseException as exc:  # Ctrl-C, or a login refused while tiles were being searched
        if fetcher is not None:
            fetcher.abort()
        status = exc.exit_status if isinstance(exc, DemError) else EXIT_INTERRUPTED
        raise
    finally:
        if fetcher is not None:
            close_bar(fetcher.progress)
        totals.seconds = time.monotonic() - started
        if status == EXIT_OK:
            status = _exit_status(plan, invalid, left, fatal)
        if not args.dry_run:
            _record_what_the_catalogue_said(plan, sea_record, sources)
        _finish(args, plan, invalid, totals, left, status, settings)
    if fatal is not None:
        log.error("%s", fatal)
    if not args.dry_run:
        from cdse_dem.gipp import end_of_work

        complete = not (left or fatal or plan.count(plan_mod.FAILED) or plan.count(plan_mod.PLANNED))
        if not end_of_work(args.gipp, out_dir, settings.resolution, settings.model, complete=complete):
            status = EXIT_FAILED
    log.info("Process is finished")
    return status


def _folder_records(out_dir: Path, settings):
    """What earlier runs learnt from the catalogue for this dataset: the open-sea cells, and which
    dataset each present file came from (both None when there is no folder yet)."""
    from cdse_dem.catalogue import dataset_key
    from cdse_dem.sea_record import FileSources, SeaRecord

    if not out_dir.is_dir():
        return None, None
    _, value = dataset_key(settings.collection, settings.resolution, settings.model, settings.delivery)
    return SeaRecord.load(out_dir, f"{settings.collection} {value}"), FileSources.load(out_dir)


def _record_what_the_catalogue_said(plan, sea_record, sources) -> None:
    """Open-sea cells and the files this run fetched or confirmed, for the next run's plan."""
    from cdse_dem import planning as plan_mod

    if sea_record is None:
        return
    sea_record.save(c.geocell for c in plan.cells.values() if c.status == plan_mod.SEA)
    sources.save((c.file_name for c in plan.cells.values() if c.confirmed or c.status == plan_mod.DOWNLOADED),
                 sea_record.key)



def _fetcher(args, credentials, http, endpoints, out_dir, cache):
    """Downloads start as soon as the catalogue names a first product: login then, not before."""
    from cdse_dem.fetch import Fetcher
    from cdse_dem.locks import SlotPool
    from cdse_dem.progress import open_bar
    from cdse_dem.prompt import read_totp
    from cdse_dem.session import CdseSession

    ask_totp = read_totp if credentials.totp and sys.stdin.isatty() else None

    def open_session():
        session = CdseSession(credentials, endpoints, http=http, max_minutes=args.max_minutes, ask_totp=ask_totp)
        session.login()
        return session

    slots = SlotPool.for_account(endpoints.token_url, credentials.username, args.workers)
    return Fetcher(open_session=open_session, http=http, endpoints=endpoints, out_dir=out_dir, cache=cache,
                   workers=args.workers, progress=open_bar(0, args.quiet), slots=slots,
                   transfer=getattr(args, "transfer", None) or "auto")


def _tile_plans(valid, kml_arg: str | None, coverage: str):
    """Footprints and geocells of every tile, in one batch.

    With the KML, a tile's geocells are those of its KML polygon and of its true area (the
    computed footprint) together: the KML's straight lon/lat edges miss a sliver of the true
    tile in 120 band-C tiles, and Sen2Cor needs the DEM under every pixel. With ``--coverage
    sen2cor`` (the default) every cell of Sen2Cor's rectangle is added (sen2cor.py).
    """
    from cdse_dem.footprint import FootprintFinder, computed_footprints
    from cdse_dem.geocells import geocells_of_each
    from cdse_dem.planning import TilePlan
    from cdse_dem.sen2cor import cells_with_reasons

    kml_path = paths.expand_user(kml_arg, "tiling KML") if kml_arg else paths.default_kml_path()
    if kml_arg and not kml_path.is_file():
        raise UsageError(f"{kml_path}: tiling KML not found")
    finder = FootprintFinder(kml_path if kml_path.is_file() else None)
    footprints = finder.footprints([entry.tile for entry in valid])
    cells = geocells_of_each(f.parts for f in footprints)
    from_kml = [i for i, f in enumerate(footprints) if f.source == "kml"]
    if from_kml:
        true_areas = computed_footprints([footprints[i].tile for i in from_kml])
        for i, extra in zip(from_kml, geocells_of_each(f.parts for f in true_areas), strict=True):
            cells[i] = sorted(set(cells[i]) | set(extra))
    reasons = cells_with_reasons([f.tile for f in footprints], cells, coverage)
    return [TilePlan(entry, entry.tile, footprint.source, list(tile_reasons), footprint, reasons=tile_reasons)
            for entry, footprint, tile_reasons in zip(valid, footprints, reasons, strict=True)]


def _search(plan, catalogue, settings, fetcher) -> None:
    """Catalogue searches by area for the cells that need one (see cdse_dem.area_search)."""
    from cdse_dem.area_search import search_all
    from cdse_dem.catalogue import dataset_filter

    text = dataset_filter(settings.collection, settings.resolution, settings.model, settings.delivery)
    search_all(plan, catalogue, text, fetcher, SEARCH_THREADS)


def _exit_status(plan, invalid, left, fatal) -> int:
    from cdse_dem.planning import FAILED

    if left:
        return EXIT_BUDGET
    if fatal is not None or invalid or plan.count(FAILED):
        return EXIT_FAILED
    return EXIT_OK


def _finish(args, plan, invalid, totals, left, status, settings) -> None:

    from cdse_dem.redact import scrub
    from cdse_dem.report import summary_dict, summary_lines, write_summary_json

    if left:
        log.warning("Time budget spent: %d geocell(s) not started; run again to resume", len(left))
    if not args.quiet:
        print(scrub("\n".join(summary_lines(plan, invalid, totals, left))), flush=True)
    if args.summary_json:
        write_summary_json(Path(args.summary_json), summary_dict(plan, invalid, totals, status))
    if args.kml_report:
        from cdse_dem.kml_report import write_kml_report

        write_kml_report(Path(args.kml_report), [t.footprint for t in plan.tiles],
                         {cell: state.status for cell, state in plan.cells.items()}, settings.resolution)


def _print_plan(plan) -> None:
    from cdse_dem.planning import tile_counts

    for tile in plan.tiles:
        counts = tile_counts(plan, tile)
        print(f"{tile.tile} (footprint: {tile.footprint_source}): {len(tile.geocells)} geocells, "
              f"{counts['planned']} to download, {counts['present']} present, {counts['sea']} open sea")
        for cell in tile.geocells:
            state = plan.cells[cell]
            print(f"  {cell.grid_id}  {state.file_name}  {state.status}  {state.product_id or '-'}  "
                  f"{tile.reasons.get(cell, 'footprint')}")


def _check_output_dir(out_dir: Path, *, create: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: the output folder is a file")
    if not out_dir.exists():
        if not create:
            return
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
    if not create:
        return  # a dry run or a check writes nothing there, not even a probe
    import tempfile

    try:  # a fresh name created exclusively: never a file (or a symlink to one) already there
        with tempfile.TemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot write into the output folder ({exc.strerror})") from None


def _check_report_path(path: Path, what: str, out_dir: Path) -> None:
    """A report written at the end must be writable from the start: no work is lost to a typo,
    and it may not land on the output folder's record."""
    from cdse_dem.fsutil import report_target
    from cdse_dem.paths import JSON_NAME

    try:
        report_target(path)
    except ValueError as exc:
        raise UsageError(f"{path}: cannot write the {what} ({exc})") from None
    record = out_dir / JSON_NAME
    same = (os.path.samefile(path, record) if path.exists() and record.exists()
            else os.path.realpath(path) == os.path.realpath(record))
    if same:
        raise UsageError(f"{path}: cannot write the {what} there: it is the output folder's record {JSON_NAME}")


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""

