#!/usr/bin/env python3
"""CDSE Copernicus DEM Downloader: the Copernicus DEM geocells Sen2Cor needs, from CDSE.

This file is the command line only, a thin skin over the ``cdse_dem`` library (as ``rio`` is
over rasterio): argparse, logging, signals, the credentials prompt, the progress bar, printing
and the exit status. The library is imported lazily, after argparse, so that ``--help`` and
``--version`` stay instant.
"""

import argparse
import sys

from cdse_dem import RELEASE_DATE, __version__

VERSION_LINE = f"DEM Downloader Version: {__version__} Release Date: {RELEASE_DATE}."

EPILOG = """\
examples:
  %(prog)s --t 32UMA --dry-run
      which geocells and products tile 32UMA needs (no account needed)
  %(prog)s --i tiles.txt --o ~/dem/CopernicusDEM90 --gipp ~/sen2cor/2.12/cfg/L2A_GIPP.xml
      download the DEM of every tile listed, and point Sen2Cor's GIPP at the folder
  %(prog)s --i tiles.txt --o ~/dem/CopernicusDEM90 --check
      is every tile's DEM complete for Sen2Cor? (downloads nothing, no account needed)

--config overrides the data, input and output options; --t wins over --i;
the tiles of --aoi and --point add to theirs.
exit status: 0 done, 1 some failed, 2 usage error, 3 time budget, 130 interrupted.
Every option, the configuration file and the environment: docs/options.md
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Each option's names once, then its value once (``--t, -t, --tile TILE``), so that its help
    fits on the same line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {value}"


class _Parser(argparse.ArgumentParser):
    """argparse, with the guide's version line on top and one-line errors."""

    def format_help(self) -> str:
        return f"{VERSION_LINE}\n\n{super().format_help()}"

    def error(self, message: str) -> None:  # type: ignore[override]
        for option, example in (("--point", "--point=-33.48,-62.96"), ("--aoi", "--aoi=-20,-10,-15,-5")):
            if message == f"argument {option}: expected one argument":  # argparse took '-33.48,...' for an option
                message += f" (a value that starts with a minus is written {example})"
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _workers(text: str) -> int:
    from cdse_dem.settings import MAX_WORKERS

    value = _positive_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_WORKERS} (CDSE serves 4 downloads at once)")
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of minutes") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text} is not 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    from cdse_dem.settings import COLLECTIONS, COVERAGES, DEFAULT_COVERAGE, DELIVERIES, MODELS, RESOLUTIONS, Transfer

    parser = _Parser(
        prog="cdse_copernicus_dem_downloader.py",
        description="Download the Copernicus DEM geocells (DGED or DTED, 30 m or 90 m) that Sen2Cor needs\n"
                    "for Sentinel-2 tiles or SAFE products, from the Copernicus Data Space Ecosystem.",
        epilog=EPILOG,
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    group = parser.add_argument_group("input (which tiles)")
    group.add_argument("--t", "-t", "--tile", dest="tile", action="append", metavar="TILE",
                       help="a tile id (32UMA) or SAFE name; repeatable")
    group.add_argument("--i", "-i", "--input", dest="input", metavar="PATH",
                       help="a list of tiles or SAFE names, one a line; or a folder of products (*.SAFE, *.zip)")
    group.add_argument("--aoi", action="append", metavar="AREA",
                       help="add the tiles overlapping an area: a GeoJSON or WKT file, WKT, or W,S,E,N; repeatable")
    group.add_argument("--point", action="append", metavar="LAT,LON",
                       help="add the tiles covering a point (--point=-33.48,-62.96 for a minus); repeatable")
    group.add_argument("--config", nargs="?", const="", metavar="CONFIG",
                       help="options from a configuration.xml (bare: default)")
    group.add_argument("--kml", metavar="PATH",
                       help="the tiling KML (default: the one in auxiliary/)")

    group = parser.add_argument_group("data (which DEM)")
    group.add_argument("--r", "-r", "--resolution", dest="resolution", type=int, choices=RESOLUTIONS,
                       help="resolution in metres (default 90)")
    group.add_argument("--m", "-m", "--model", dest="model", type=str.upper, choices=MODELS,
                       help="DGED (GeoTIFF, read by Sen2Cor; default) or DTED")
    group.add_argument("-d", "--delivery", "--delivery_id", dest="delivery", choices=DELIVERIES, metavar="ID",
                       help=f"CCM delivery {DELIVERIES[0]}..{DELIVERIES[-1]} (default {DELIVERIES[-1]})")
    group.add_argument("--collection", type=str.upper, choices=COLLECTIONS,
                       help="CDSE collection: CCM (default) or COP-DEM")
    group.add_argument("--coverage", type=str.lower, choices=COVERAGES, default=DEFAULT_COVERAGE,
                       help="cells Sen2Cor asks for (default), or overlapped")
    group.add_argument("--fill-gaps", action="store_true",
                       help="fill land this dataset lacks from another one")

    group = parser.add_argument_group("output")
    group.add_argument("--o", "-o", "--output", dest="output", metavar="DIR",
                       help="the DEM folder, Sen2Cor's DEM_Directory")
    group.add_argument("--keep-existing", action="store_true",
                       help="keep DEM files of another delivery as they are")
    group.add_argument("--summary-json", metavar="PATH", help="write the run's summary as JSON")
    group.add_argument("--kml-report", metavar="PATH", help="write a KML of tiles and geocells by status")
    group.add_argument("--log-file", metavar="PATH", help="also write the log to this file")

    group = parser.add_argument_group("processors (Sen2Cor and others)")
    group.add_argument("--gipp", metavar="FILE",
                       help="point this Sen2Cor L2A_GIPP.xml at the folder")
    group.add_argument("--sen2cor-missing-list", metavar="FILE",
                       help="with --check: Sen2Cor's missing-tiles list")
    group.add_argument("--sen2like", metavar="DIR",
                       help="each complete tile's DEM as sen2like reads it, in DIR")
    group.add_argument("--force", metavar="DIR",
                       help="each complete tile's VRT as FORCE reads it, in DIR")
    group.add_argument("--quicklook", metavar="DIR",
                       help="a shaded-relief PNG of each complete tile, in DIR")

    group = parser.add_argument_group("run control")
    group.add_argument("--dry-run", action="store_true",
                       help="plan only: tiles, geocells, products")
    group.add_argument("--check", action="store_true",
                       help="is each tile's DEM complete for Sen2Cor?")
    group.add_argument("--workers", type=_workers, default=4, metavar="N",
                       help="parallel downloads (default 4, at most 16)")
    group.add_argument("--transfer", choices=[t.value for t in Transfer], default=Transfer.AUTO.value,
                       help="DEM file alone, zip if that fails (auto)")
    group.add_argument("--max-minutes", type=_minutes, default=60.0, metavar="M",
                       help="time budget (default 60; 0: none)")
    group.add_argument("-v", "--verbose", action="store_true", help="add debug lines to the log")
    group.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    group.add_argument("--version", action="version", version=VERSION_LINE)

    group = parser.add_argument_group("credentials")
    group.add_argument("--reset", nargs="?", const=True, default=False, metavar="RESET",
                       help="forget your stored credentials, ask anew")
    group.add_argument("--yes", action="store_true", help="with --reset: do not ask to confirm")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cdse_dem.errors import EXIT_INTERRUPTED

    status = run(args)
    if status == EXIT_INTERRUPTED and argv is None:
        _end_now(status)
    return status


# --- one run, from parsed arguments to exit status ----------------------------------------------
# The work is the library's (cdse_dem.job); what is here is what only a command line does: the
# options and the configuration file, logging, the credentials prompt, signals, the progress
# bar, printing, the report files, the exit status.

INTERRUPTED = "Interrupted: finished geocells are recorded; a re-run resumes"


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from cdse_dem import logs
    from cdse_dem.errors import EXIT_INTERRUPTED, EXIT_USAGE, DemError
    from cdse_dem.logs import setup_logging

    try:
        setup_logging(args.verbose, args.quiet, Path(args.log_file) if args.log_file else None)
    except OSError as exc:
        print(f"{args.log_file}: cannot write the log file ({exc.strerror})", file=sys.stderr)
        return EXIT_USAGE
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    if hasattr(sys.stdout, "reconfigure") and encoding in ("utf-8", "utf8"):
        sys.stdout.reconfigure(errors="surrogateescape")  # a path that is not UTF-8 printed as it is named
    log = logging.getLogger("cdse_dem.cli")
    log.info("CDSE Copernicus DEM Downloader: Copernicus DEM retrieval for Sen2Cor")
    log.info("Version: %s Date: %s", __version__, RELEASE_DATE)
    log.info("<----->")
    signals = _Signals()
    with logs.run_scope():  # the secrets of this process stay known until its last line is written
        try:
            if args.reset:
                return _reset(args)
            return _run(args, signals, log)
        except DemError as exc:
            log.error("%s", exc)
            return exc.exit_status
        except KeyboardInterrupt:  # a signal before the run began (e.g. at the credentials prompt)
            log.error("%s", INTERRUPTED)
            return EXIT_INTERRUPTED
        finally:
            signals.restore()


class _Signals:
    """SIGINT and SIGTERM, from start to end of a run.

    Before the work starts (reading options, the credentials prompt) the first one interrupts
    at once (KeyboardInterrupt). Once the library runs (:meth:`run_starts`), it only sets the
    ``stop`` event: the run then ends itself within a second or two (no search sent after it,
    downloads stopped, temporaries removed, what is finished recorded) and says so, exit
    status 130.

    During the run the two signals are blocked in every thread and taken by one thread that
    waits for nothing else (``sigwait``): the kernel may hand a process's signal to any of its
    threads, and Python runs its handlers in the main thread only, when that thread next looks
    up (up to a poll interval later), while a search thread could already send its retry.

    Either way later signals are ignored while the run cleans up: a second one cutting that
    short would leave temporary files and a traceback, and save nothing. They stay ignored
    until the process ends.
    """

    _NAMES = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        import signal
        import threading

        self.stop = threading.Event()
        self.raising = True
        self._previous = {}
        self._taker: threading.Thread | None = None
        self._over = False
        if threading.current_thread() is threading.main_thread():  # main() called from a thread: none
            for name in self._NAMES:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)

    def run_starts(self) -> None:
        """From here on a signal sets the stop event, at once, and the run ends itself."""
        import signal
        import threading

        self.raising = False
        if not self._previous or not hasattr(signal, "pthread_sigmask"):  # Windows: the handler alone
            return
        # threads inherit the mask of the thread that starts them: all of the run's are started from here
        signal.pthread_sigmask(signal.SIG_BLOCK, set(self._previous))
        self._taker = threading.Thread(target=self._take, name="signals", daemon=True)
        self._taker.start()

    def _take(self) -> None:
        import signal

        while True:
            signal.sigwait(set(self._previous))
            if self._over:  # woken by restore(): the run is over
                return
            self.stop.set()

    def _handle(self, signum, frame) -> None:
        import signal

        for sig in self._previous:
            signal.signal(sig, _ignore)
        self.stop.set()
        if self.raising:
            raise KeyboardInterrupt

    def restore(self) -> None:
        """Not interrupted: give the caller of main() its handlers (and its signal mask) back."""
        import signal

        if self.stop.is_set():
            return
        if self._taker is not None:
            self._over = True
            signal.pthread_kill(self._taker.ident, signal.SIGINT)  # ends its sigwait
            self._taker.join()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, set(self._previous))
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _ignore(signum, frame):
    """Not SIG_IGN: a signal that arrived before the switch would then be reported by Python as
    "ignored due to race condition", with a traceback."""


def _reset(args) -> int:
    from cdse_dem import settings as settings_mod
    from cdse_dem.credentials import reset_credentials

    return reset_credentials(settings_mod.credentials_dir(), assume_yes=args.yes)


def _run(args, signals: _Signals, log) -> int:
    from pathlib import Path

    from cdse_dem import job as job_mod
    from cdse_dem import settings as settings_mod
    from cdse_dem.errors import EXIT_INTERRUPTED, DemError
    from cdse_dem.job import Mode
    from cdse_dem.settings import CDSE_CONNECTION_LIMIT, decide

    config = None
    if args.config is not None:
        from cdse_dem.settings import load_config

        config = load_config(settings_mod.expand_user(args.config, "configuration file") if args.config
                             else settings_mod.default_configuration_file())
    settings = decide(args, config)
    log.info("Reading Request from %s", settings.origin)
    if settings.ignored:
        log.warning("%s has priority: %s ignored", "--config" if config else "--t", ", ".join(settings.ignored))
    if args.workers > CDSE_CONNECTION_LIMIT:
        log.warning("--workers %d: CDSE serves %d downloads at once per account; the others wait for 429 answers",
                    args.workers, CDSE_CONNECTION_LIMIT)
    _check_options(args)
    mode = Mode.CHECK if args.check else Mode.PLAN if args.dry_run else Mode.DOWNLOAD
    out_dir = settings.output_dir
    job = job_mod.prepare(
        mode, list(settings.tile_args) if settings.tile_args else settings.tiles_file, out_dir,
        aoi=list(settings.areas), points=list(settings.points), resolution=settings.resolution,
        model=settings.model, collection=settings.collection, delivery=settings.delivery, coverage=args.coverage,
        workers=args.workers, transfer=args.transfer, keep_existing=args.keep_existing, max_minutes=args.max_minutes,
        kml=args.kml, gipp=args.gipp, missing_list=args.sen2cor_missing_list, fill_gaps=args.fill_gaps,
        sen2like=args.sen2like, force=args.force, quicklook=args.quicklook)
    for path, what in ((args.summary_json, "summary JSON"), (args.kml_report, "KML report")):
        if path:
            _check_report_path(Path(path), what, out_dir)
    credentials, ask_totp = None, None
    if mode == Mode.DOWNLOAD:  # neither a dry run nor a check reads, asks for or sends credentials
        from cdse_dem.credentials import obtain_credentials
        from cdse_dem.http import Endpoints

        credentials = obtain_credentials(settings_mod.credentials_dir(), Endpoints.from_env().identity_host)
        if credentials.totp and sys.stdin.isatty():
            from cdse_dem.credentials import read_totp

            ask_totp = read_totp
    bar = _Bar(args.quiet) if mode == Mode.DOWNLOAD else None
    signals.run_starts()  # from here on a signal sets the stop event, and the run ends itself
    try:
        result = job_mod.run(job, credentials=credentials, stop=signals.stop, ask_totp=ask_totp,
                             progress=bar if bar is not None and bar.enabled else None)
    except DemError as exc:  # a login refused while tiles were searched: what was done is reported
        if bar is not None:
            bar.close()
        if exc.result is not None and mode != Mode.CHECK:
            _report(args, settings, mode, exc.result, finished=False)
        raise
    if bar is not None:
        bar.close()
    if not (mode == Mode.CHECK and result.interrupted):
        _report(args, settings, mode, result, finished=not result.interrupted)
    if result.interrupted:
        log.error("%s", INTERRUPTED)
        return EXIT_INTERRUPTED
    if mode == Mode.CHECK:
        ready = sum(1 for tile in result.tiles if tile.check.ready)
        log.info("Check finished: %d of %d tiles ready for Sen2Cor", ready, len(result.tiles))
    else:
        log.info("Process is finished")
    return result.exit_status


def _check_options(args) -> None:
    """Options that only make sense together, refused before any work."""
    from cdse_dem.errors import UsageError

    if args.check and args.dry_run:
        raise UsageError("--check and --dry-run do not go together: --check already downloads nothing")
    if args.sen2cor_missing_list and not args.check:
        raise UsageError("--sen2cor-missing-list is for --check")


def _report(args, settings, mode, result, *, finished: bool) -> None:
    """What the user is shown of a result: the plan (dry run), the summary or the check, and the
    files asked for (--summary-json, --kml-report)."""
    from pathlib import Path

    from cdse_dem.job import Mode
    from cdse_dem.logs import scrub
    from cdse_dem.report import plan_lines, summary_lines, write_summary_json

    if mode == Mode.CHECK:
        from cdse_dem.report import report_lines
        from cdse_dem.sen2cor import dem_directory

        if not args.quiet:
            print("\n".join(report_lines([t.check for t in result.tiles], dem_directory(settings.output_dir))),
                  flush=True)
    else:
        if mode == Mode.PLAN and finished:
            print("\n".join(plan_lines(result)))
        if not args.quiet:
            print(scrub("\n".join(summary_lines(result))), flush=True)
    if args.summary_json:
        write_summary_json(Path(args.summary_json), result.to_dict())
    if args.kml_report and mode != Mode.CHECK:
        from cdse_dem.grid import parse_grid_id
        from cdse_dem.report import write_kml_report

        write_kml_report(Path(args.kml_report), [t.footprint for t in result.tiles],
                         {parse_grid_id(cell.grid_id): cell.status for cell in result.geocells}, settings.resolution)


class _Bar:
    """The progress bar of a download: on a terminal only (not with -q), shown from the first bytes
    expected; log lines are printed above it, not through it (logs.progress_writer)."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self._bar = None

    def __call__(self, done: int, total: int) -> None:  # the library calls it one call at a time
        if self._bar is None:
            from tqdm import tqdm

            from cdse_dem.logs import progress_writer

            self._bar = tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc="DEM",
                             leave=False, file=sys.stderr)
            progress_writer(lambda line: tqdm.write(line, file=sys.stderr))
        if (total or None) != self._bar.total:
            self._bar.total = total or None
            self._bar.refresh()
        if done != self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            from cdse_dem.logs import progress_writer

            self._bar.close()
            progress_writer(None)
            self._bar = None


def _check_report_path(path, what: str, out_dir) -> None:
    """A report written at the end must be writable from the start: no work is lost to a typo,
    and it may not land on the output folder's record."""
    import os

    from cdse_dem.errors import UsageError
    from cdse_dem.fsutil import report_target
    from cdse_dem.settings import JSON_NAME

    try:
        report_target(path)
    except ValueError as exc:
        raise UsageError(f"{path}: cannot write the {what} ({exc})") from None
    record = out_dir / JSON_NAME
    same = (os.path.samefile(path, record) if path.exists() and record.exists()
            else os.path.realpath(path) == os.path.realpath(record))
    if same:
        raise UsageError(f"{path}: cannot write the {what} there: it is the output folder's record {JSON_NAME}")


def _end_now(status: int) -> None:
    """After an interrupt everything is cleaned up and recorded: end the process here.

    Python resets the signal handlers while it winds down, so one more Ctrl-C or SIGTERM in
    those last milliseconds would kill it with a traceback or another status than 130.
    """
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
