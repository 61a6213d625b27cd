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

    try:
        setup_logging(args.verbose, args.quiet, Path(args.log_file) if args.log_file else None)
    except OSError as exc:
        print(f"{args.log_file}: cannot write the log file ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE
    log.info("CDSE Copernicus DEM Downloader: Copernicus DEM retrieval for Sen2Cor")
    log.info("Version: %s Date: %s", __version__, RELEASE_DATE)
    log.info("<----->")
    previous = signal.signal(signal.SIGTERM, _terminate)
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
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _reset(args) -> int:
    from cdse_dem.credentials import reset_credentials

    return reset_credentials(paths.credentials_dir(), assume_yes=args.yes)


def _run(args) -> int:
    from cdse_dem import entries as entries_mod
    from cdse_dem.config import load_config
    from cdse_dem.options import decide

    config = None
    if args.config is not None:
        config = load_config(Path(args.config).expanduser() if args.config else paths.default_configuration_file())
    settings = decide(args, config)
    log.info("Reading Request from %s", settings.origin)
    if settings.ignored:
        log.warning("%s has priority: %s ignored", "--config" if config else "--t", ", ".join(settings.ignored))

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
    _check_output_dir(out_dir, create=not args.dry_run)
    for path, what in ((args.summary_json, "summary JSON"), (args.kml_report, "KML report")):
        if path:
            _check_report_path(Path(path), what)
    credentials = None
    if not args.dry_run:
        from cdse_dem.credentials import obtain_credentials
        from cdse_dem.endpoints import Endpoints

        credentials = obtain_credentials(paths.credentials_dir(), _host(Endpoints.from_env().token_url))

    log.info("Processing %d Tile(s)", len(valid))
    log.info("Start time: %s", datetime.now())
    log.info("<----->")
    return _work(args, settings, valid, invalid, out_dir, credentials)


def _work(args, settings, valid, invalid, out_dir: Path, credentials) -> int:
    from cdse_dem import plan as plan_mod
    from cdse_dem.cache import NameIdCache
    from cdse_dem.catalogue import Catalogue
    from cdse_dem.endpoints import Endpoints
    from cdse_dem.http import new_http_session
    from cdse_dem.progress import close_bar
    from cdse_dem.report import Totals

    started = time.monotonic()
    endpoints = Endpoints.from_env()
    tile_plans = _tile_plans(valid, args.kml)
    cache = NameIdCache.load(out_dir) if out_dir.is_dir() else None
    if cache is not None and not args.dry_run:
        from cdse_dem.fsutil import remove_stale_temporaries

        for stale in remove_stale_temporaries(out_dir):
            log.info("Removed a temporary file left by an earlier run: %s", stale.name)

    def file_name(cell):
        return cell.dem_file_name(settings.resolution, settings.model)

    def recorded_id(name):
        return cache.product_id(name) if cache is not None and cache.is_complete(name) else None

    plan = plan_mod.start_plan(tile_plans, file_name, recorded_id)
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
        _finish(args, plan, invalid, totals, left, status, settings)
    if fatal is not None:
        log.error("%s", fatal)
    log.info("Process is finished")
    return status


def _fetcher(args, credentials, http, endpoints, out_dir, cache):
    """Downloads start as soon as the catalogue names a first product: login then, not before."""
    from cdse_dem.fetch import Fetcher
    from cdse_dem.progress import open_bar
    from cdse_dem.session import CdseSession

    def open_session():
        session = CdseSession(credentials, endpoints, http=http, max_minutes=args.max_minutes)
        session.login()
        return session

    return Fetcher(open_session=open_session, http=http, endpoints=endpoints, out_dir=out_dir, cache=cache,
                   workers=args.workers, progress=open_bar(0, args.quiet),
                   transfer=getattr(args, "transfer", None) or "auto")


def _tile_plans(valid, kml_arg: str | None):
    """Footprints and geocells of every tile, in one batch.

    With the KML, a tile's geocells are those of its KML polygon and of its true area (the
    computed footprint) together: the KML's straight lon/lat edges miss a sliver of the true
    tile in 120 band-C tiles, and Sen2Cor needs the DEM under every pixel.
    """
    from cdse_dem.footprint import FootprintFinder, computed_footprints
    from cdse_dem.geocells import geocells_of_each
    from cdse_dem.plan import TilePlan

    kml_path = Path(kml_arg).expanduser() if kml_arg else paths.default_kml_path()
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
    return [TilePlan(entry, entry.tile, footprint.source, tile_cells, footprint)
            for entry, footprint, tile_cells in zip(valid, footprints, cells, strict=True)]


def _search(plan, catalogue, settings, fetcher) -> None:
    """Catalogue searches for the tiles that need one, a few at a time; each tile's geocells
    go to the fetcher as soon as its answer is in."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from cdse_dem import plan as plan_mod
    from cdse_dem.catalogue import area_wkt, parse_product, product_filter

    def search(tile):
        products = []
        for part in tile.footprint.query_parts():
            text = product_filter(settings.collection, settings.resolution, settings.model, settings.delivery,
                                  area_wkt(part))
            products.extend(p for p in map(parse_product, catalogue.search(text)) if p is not None)
        return products

    tiles = plan_mod.tiles_to_search(plan)
    with ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="search") as pool:
        futures = {pool.submit(search, tile): tile for tile in tiles}
        for future in as_completed(futures):
            tile = futures[future]
            log.info("Tile_ID: %s", tile.tile)
            source = "tiling KML" if tile.footprint_source == "kml" else "computed"
            log.info("Tile Found (footprint: %s)", source)
            try:
                products = future.result()
            except DemError as exc:
                log.error("Tile %s: %s", tile.tile, exc)
                plan_mod.search_failed(plan, tile, str(exc))
                continue
            log.info("DEM_LIST from url retrieved")
            plan_mod.apply_products(plan, tile, products)
            states = [plan.cells[c] for c in tile.geocells]
            sea = [s.geocell.grid_id for s in states if s.status == plan_mod.SEA]
            if sea:
                log.info("No DEM in CDSE (open sea) for %d of %d geocells: %s", len(sea), len(tile.geocells),
                         " ".join(sea))
            if fetcher is not None:
                fetcher.add([s for s in states if s.status == plan_mod.PLANNED])


def _exit_status(plan, invalid, left, fatal) -> int:
    from cdse_dem.plan import FAILED

    if left:
        return EXIT_BUDGET
    if fatal is not None or invalid or plan.count(FAILED):
        return EXIT_FAILED
    return EXIT_OK


def _finish(args, plan, invalid, totals, left, status, settings) -> None:
    from cdse_dem.report import summary_dict, summary_lines

    if left:
        log.warning("Time budget spent: %d geocell(s) not started; run again to resume", len(left))
    if not args.quiet:
        print("\n".join(summary_lines(plan, invalid, totals, left)), flush=True)
    if args.summary_json:
        from cdse_dem.fsutil import atomic_write_json

        try:
            atomic_write_json(Path(args.summary_json), summary_dict(plan, invalid, totals, status))
        except OSError as exc:  # checked at the start; the disk may still fill up meanwhile
            log.error("%s: cannot write the summary JSON (%s)", args.summary_json, exc.strerror or exc)
    if args.kml_report:
        from cdse_dem.kml_report import write_kml_report

        write_kml_report(Path(args.kml_report), [t.footprint for t in plan.tiles],
                         {cell: state.status for cell, state in plan.cells.items()}, settings.resolution)


def _print_plan(plan) -> None:
    from cdse_dem.plan import tile_counts

    for tile in plan.tiles:
        counts = tile_counts(plan, tile)
        print(f"{tile.tile} (footprint: {tile.footprint_source}): {len(tile.geocells)} geocells, "
              f"{counts['planned']} to download, {counts['present']} present, {counts['sea']} open sea")
        for cell in tile.geocells:
            state = plan.cells[cell]
            print(f"  {cell.grid_id}  {state.file_name}  {state.status}  {state.product_id or '-'}")


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
    probe = out_dir / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if create:
            raise UsageError(f"{out_dir}: cannot write into the output folder ({exc.strerror})") from None


def _check_report_path(path: Path, what: str) -> None:
    """A report written at the end must be writable from the start: no work is lost to a typo."""
    import errno

    problem = errno.EISDIR if path.is_dir() else None if path.parent.is_dir() else errno.ENOENT
    if problem is not None:
        raise UsageError(f"{path}: cannot write the {what} ({os.strerror(problem)})")


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""

