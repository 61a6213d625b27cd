"""``--check``: is the output folder ready for Sen2Cor, tile by tile? Downloads nothing.

It plans the tiles' geocells as a run does, looks at each file in the folder with the DEM
integrity check (a truncated file, or one that is not a DEM of its cell, counts as missing),
and asks the catalogue (no token: search needs none) only for the tiles that lack a file,
to tell which missing files CDSE has and which cells are open sea. Nothing in the folder is
written, renamed or removed; no credentials are read, asked for or sent.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cdse_dem.errors import EXIT_FAILED, EXIT_OK, UsageError

log = logging.getLogger(__name__)


def read_missing_list(path: str, resolution: int):
    """Sen2Cor's missing-tiles list, parsed; UsageError (exit 2) for a line that is not a cell."""
    from cdse_dem.fsutil import read_input
    from cdse_dem.readiness import parse_missing_list

    data = read_input(Path(path).expanduser(), "Sen2Cor missing-tiles list", UsageError)
    missing_list = parse_missing_list(data.decode("utf-8-sig", errors="replace"), path, resolution)
    if missing_list.unmatched:
        log.warning("%s: %d line(s) without _DEM.tif (first: %s): Sen2Cor compares whole file names, "
                    "so it does not skip those cells", path, len(missing_list.unmatched), missing_list.unmatched[0])
    return missing_list


def folder_problems(out_dir: Path, plan, resolution: int) -> dict[str, str | None]:
    """For each geocell's file: None when the folder holds a whole DEM of that cell, else why not."""
    from cdse_dem.integrity import dem_problem

    return {state.file_name: dem_problem(out_dir / state.file_name, resolution=resolution, cell=state.geocell)
            for state in plan.cells.values()}


def run_check(args, settings, tile_plans, invalid, out_dir: Path) -> int:
    """The check from planned tiles to exit status: 0 every tile ready, 1 any not (or invalid entries)."""
    from cdse_dem import planning as plan_mod
    from cdse_dem.app import SEARCH_THREADS, _search
    from cdse_dem.catalogue import Catalogue
    from cdse_dem.endpoints import Endpoints
    from cdse_dem.gipp import dem_directory, end_of_work
    from cdse_dem.http import new_http_session
    from cdse_dem.readiness import check_dict, report_lines, tile_readiness
    from cdse_dem.report import Totals, summary_dict, write_summary_json

    missing_list = (read_missing_list(args.sen2cor_missing_list, settings.resolution)
                    if args.sen2cor_missing_list else None)
    started = time.monotonic()
    plan = plan_mod.start_plan(tile_plans, lambda cell: cell.dem_file_name(settings.resolution, settings.model),
                               lambda name: None)
    problems = folder_problems(out_dir, plan, settings.resolution)
    for state in plan.cells.values():
        if problems[state.file_name] is None:
            state.status, state.file = plan_mod.PRESENT, str(out_dir / state.file_name)
    log.info("Checking %s: %d of %d geocells have a whole DEM file there", out_dir,
             sum(p is None for p in problems.values()), len(problems))
    _search(plan, Catalogue(Endpoints.from_env().catalogue_url, new_http_session(SEARCH_THREADS)), settings, None)
    verdicts = [tile_readiness(plan, tile, problems, missing_list) for tile in plan.tiles]
    ready = all(v.ready for v in verdicts)
    status = EXIT_OK if ready and not invalid else EXIT_FAILED
    if not args.quiet:
        print("\n".join(report_lines(verdicts, dem_directory(out_dir))), flush=True)
    for verdict in verdicts:
        if not verdict.ready:
            log.warning("Tile %s is not ready for Sen2Cor: %s", verdict.tile,
                        ", ".join(m.file_name for m in verdict.missing))
    if not end_of_work(args.gipp, out_dir, settings.resolution, settings.model, complete=ready):
        status = EXIT_FAILED
    if args.summary_json:

        summary = summary_dict(plan, invalid, Totals(seconds=time.monotonic() - started), status)
        for part, verdict in zip(summary["tiles"], verdicts, strict=True):
            part["check"] = check_dict(verdict)
        write_summary_json(Path(args.summary_json), summary)
    log.info("Check finished: %d of %d tiles ready for Sen2Cor", sum(v.ready for v in verdicts), len(verdicts))
    return status


def check_options(args) -> None:
    """Options that only make sense together, refused before any work."""
    if args.check and args.dry_run:
        raise UsageError("--check and --dry-run do not go together: --check already downloads nothing")
    if args.sen2cor_missing_list and not args.check:
        raise UsageError("--sen2cor-missing-list is for --check")
