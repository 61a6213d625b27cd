"""The command line's log: lines in the reference tool's format, so users' log scrapers keep working.

``08/22/2024 08:30:30 AM | INFO <message>`` on stderr; the level is coloured only when
stderr is a terminal. ``-v`` adds debug lines, ``-q`` keeps warnings and errors.

Only the command line calls :func:`setup_logging`: the library itself adds no handler but a
``NullHandler`` (see job.py), and its records propagate to whatever a Python caller set up.
"""

import logging
import sys
from pathlib import Path

from cdse_dem.redact import ScrubFilter

DATE_FORMAT = "%m/%d/%Y %I:%M:%S %p"
LINE_FORMAT = "%(asctime)s | %(levelname)s %(message)s"
_COLOURS = {"DEBUG": "\033[2m", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}


class _ConsoleHandler(logging.StreamHandler):
    """stderr, or, while a progress bar is shown, the bar's own writer (so lines and bar don't mix)."""

    writer = None  # set by progress_writer()

    def emit(self, record: logging.LogRecord) -> None:
        writer = _ConsoleHandler.writer
        if writer is None:
            super().emit(record)
            return
        try:
            writer(self.format(record))
        except Exception:  # logging must never break the run
            self.handleError(record)


def progress_writer(writer) -> None:
    """Print console log lines with ``writer`` (e.g. ``tqdm.write``) from now on; None: plain stderr."""
    _ConsoleHandler.writer = writer


class _ColourFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        colour = _COLOURS.get(record.levelname)
        return f"{colour}{line}\033[0m" if colour else line


def setup_logging(verbose: bool = False, quiet: bool = False, log_file: Path | None = None) -> None:
    """Configure the ``cdse_dem`` loggers for this process (stderr, plus ``log_file`` when given).

    The handlers sit on the ``cdse_dem`` logger, not on the root: other libraries' debug lines
    (urllib3's) stay out of ``-v``. Records still propagate (to nothing, in the command line).
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("cdse_dem")
    root.handlers.clear()
    root.setLevel(logging.DEBUG if (verbose or log_file) else level)

    stream = _ConsoleHandler(sys.stderr)
    colour = getattr(sys.stderr, "isatty", lambda: False)()
    stream.setFormatter((_ColourFormatter if colour else logging.Formatter)(LINE_FORMAT, DATE_FORMAT))
    stream.setLevel(level)
    stream.addFilter(ScrubFilter())
    root.addHandler(stream)

    if log_file is not None:
        # paths that are not UTF-8 are logged as the filesystem gave them, not a "Logging error"
        handler = logging.FileHandler(log_file, encoding="utf-8", errors="surrogateescape")
        handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        handler.addFilter(ScrubFilter())
        root.addHandler(handler)
