#!/usr/bin/env python3
"""CDSE Copernicus DEM Downloader: the Copernicus DEM geocells Sen2Cor needs, from CDSE.

This file is the command line only (argparse and main); the work is done by the
``cdse_dem`` package, imported lazily so that ``--help`` and ``--version`` stay instant.
"""

import argparse
import sys

from cdse_dem import RELEASE_DATE, __version__

VERSION_LINE = f"DEM Downloader Version: {__version__} Release Date: {RELEASE_DATE}."

EPILOG = """\
precedence:
  --reset is handled first. --config (bare: configuration/configuration.xml) overrides
  --collection, --delivery, --r, --m, --o, --i and --t. --t wins over --i. With neither,
  configuration/input_tiles.txt is read.

environment:
  CDSE_USERNAME, CDSE_PASSWORD (CDSE_TOTP)  credentials for scripts and CI
  CDSE_KEY_PASSPHRASE                      encrypts the stored private key
  CDSE_TOKEN_URL, CDSE_CATALOGUE_URL, CDSE_DOWNLOAD_URL
                                           service addresses (default: the real CDSE)
  CDSE_DEM_HOME                            folder holding configuration/, auxiliary/,
                                           credentials/ and output_dir/ (default: this tool's)

exit status:
  0 all done; 1 some tiles or geocells failed; 2 usage, configuration or credential
  error (nothing attempted); 3 stopped by the time budget (a re-run resumes);
  130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with the guide's version line on top and one-line errors."""

    def format_help(self) -> str:
        return f"{VERSION_LINE}\n\n{super().format_help()}"

    def error(self, message: str) -> None:  # type: ignore[override]
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
    from cdse_dem.options import MAX_WORKERS

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
    from cdse_dem.options import COLLECTIONS, COVERAGES, DEFAULT_COVERAGE, DELIVERIES, MODELS, RESOLUTIONS
    from cdse_dem.transfer import Transfer

    parser = _Parser(
        prog="cdse_copernicus_dem_downloader.py",
        description="Download the Copernicus DEM geocells (DGED or DTED, 30 m or 90 m) that Sen2Cor needs\n"
                    "for Sentinel-2 tiles or SAFE products, from the Copernicus Data Space Ecosystem.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--config", nargs="?", const="", metavar="CONFIG",
        help="set the path to the Config file. If blank, read the parameters from the "
             "configuration/configuration.xml")
    add("--r", "-r", "--resolution", dest="resolution", type=int, choices=RESOLUTIONS,
        help="set the (r)esolution of the DEM: 30 or 90 (m) (default 90)")
    add("--m", "-m", "--model", dest="model", type=str.upper, choices=MODELS,
        help="set the (m)odel of the DEM: DGED (GeoTIFF, read by Sen2Cor) or DTED (default DGED)")
    add("-d", "--delivery", "--delivery_id", dest="delivery", choices=DELIVERIES,
        help="set the CCM delivery of the DEM (default 2024_1, the newest)")
    add("--collection", type=str.upper, choices=COLLECTIONS,
        help="set the CDSE collection: CCM (where CDSE serves the DEM today; default) or COP-DEM")
    add("--o", "-o", "--output", dest="output", metavar="DIR",
        help="set the (o)utput directory for storing the DEM. If blank, store into the Tool's output_dir")
    add("--i", "-i", "--input", dest="input", metavar="FILE",
        help="set the path for the (i)nput file containing the tiles list. If blank, read from the "
             "Tool's configuration/input_tiles.txt")
    add("--t", "-t", "--tile", dest="tile", action="append", metavar="TILE",
        help="specify a required MGRS (t)ile, e.g. 32UMA, or Product (SAFE) name; repeatable")
    add("--reset", nargs="?", const=True, default=False, metavar="RESET",
        help="reset credentials: remove this OS user's stored entry, then ask for new ones on a terminal")
    add("--yes", action="store_true", help="with --reset: do not ask for confirmation")
    add("--dry-run", action="store_true",
        help="plan only: tiles, geocells and products; downloads nothing and needs no credentials")
    add("--coverage", type=str.lower, choices=COVERAGES, default=DEFAULT_COVERAGE,
        help="which geocells a tile gets: sen2cor (default), every cell Sen2Cor asks for (the lat/lon "
             "rectangle around the tile's corners) and those the tile overlaps; footprint, only those the "
             "tile overlaps (the reference tool's set, for processors other than Sen2Cor)")
    add("--keep-existing", action="store_true",
        help="keep DEM files already present even when they came from another delivery or collection "
             "than this run's (they are then not compared with the catalogue)")
    add("--workers", type=_workers, default=4, metavar="N",
        help="parallel downloads (default 4, the CDSE per-account limit; at most 16)")
    add("--transfer", choices=[t.value for t in Transfer], default=Transfer.AUTO.value,
        help="how each DEM is fetched: auto (default) the DEM file alone through CDSE's Nodes API, "
             "the whole product zip when that fails; nodes: Nodes only (a failure fails the geocell); "
             "zip: whole zips only")
    add("--max-minutes", type=_minutes, default=60.0, metavar="M",
        help="stop starting downloads after M minutes (default 60, the token refresh window); "
             "0: no limit, log in again when the window closes")
    add("--kml", metavar="PATH",
        help="the Sentinel-2 tiling KML (default: auxiliary/ under its official name; "
             "without it footprints are computed from the tile ids)")
    add("--summary-json", metavar="PATH", help="write the run's summary as JSON, for pipelines")
    add("--kml-report", metavar="PATH",
        help="write a KML of the tile footprints and geocells coloured by status")
    add("--check", action="store_true",
        help="download nothing: say for each tile whether Sen2Cor will find a complete DEM in the output "
             "folder (exit 0: all ready, 1: some not); needs no credentials")
    add("--sen2cor-missing-list", metavar="FILE",
        help="with --check: Sen2Cor's aux_data/CopernicusDEM_<90|30>_TIFF_missing_tiles.list, to name open-sea "
             "cells it would not skip")
    add("--gipp", metavar="FILE",
        help="set DEM_Directory and DEM_Reference in this Sen2Cor L2A_GIPP.xml once the folder is complete "
             "(nothing else in it changes; the original is kept as FILE.bak)")
    add("--log-file", metavar="PATH", help="also write the log to this file")
    add("-v", "--verbose", action="store_true", help="add debug lines to the log")
    add("-q", "--quiet", action="store_true", help="log only warnings and errors")
    add("--version", action="version", version=VERSION_LINE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cdse_dem.app import run
    from cdse_dem.errors import EXIT_INTERRUPTED

    status = run(args)
    if status == EXIT_INTERRUPTED and argv is None:
        _end_now(status)
    return status


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
