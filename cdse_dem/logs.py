"""Log lines in the reference tool's format, so users' log scrapers keep working.

``08/22/2024 08:30:30 AM | INFO <message>`` on stderr; the level is coloured only when
stderr is a terminal. ``-v`` adds debug lines, ``-q`` keeps warnings and errors.
"""

import logging
import sys
from pathlib import Path

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


class _Scrubbed(logging.Filter):
    """Every line is scrubbed of the run's secrets before any handler writes it (see redact.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from cdse_dem.redact import scrub

        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class _ColourFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        colour = _COLOURS.get(record.levelname)
        return f"{colour}{line}\033[0m" if colour else line


def setup_logging(verbose: bool = False, quiet: bool = False, log_file: Path | None = None) -> None:
    """Configure the ``cdse_dem`` loggers once per run (stderr, plus ``log_file`` when given)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("cdse_dem")
    root.handlers.clear()
    root.setLevel(logging.DEBUG if (verbose or log_file) else level)
    root.propagate = False

    stream = _ConsoleHandler(sys.stderr)
    colour = getattr(sys.stderr, "isatty", lambda: False)()
    stream.setFormatter((_ColourFormatter if colour else logging.Formatter)(LINE_FORMAT, DATE_FORMAT))
    stream.setLevel(level)
    stream.addFilter(_Scrubbed())
    root.addHandler(stream)

    if log_file is not None:
        # paths that are not UTF-8 are logged as the filesystem gave them, not a "Logging error"
        handler = logging.FileHandler(log_file, encoding="utf-8", errors="surrogateescape")
        handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        handler.addFilter(_Scrubbed())
        root.addHandler(handler)
