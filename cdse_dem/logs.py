"""The log: its set-up for the command line, and secrets scrubbed from every record and output.

Keeping the secrets we hold out of everything we show or store.

A server may quote back what it was sent: an error page echoing the ``Authorization``
header, a login form repeated in an ``error_description``. Such text is only ever shown
after :func:`scrub` has replaced every secret of this run (password, access and refresh
tokens) in it, in the spellings a server would quote it in: as sent, URL-encoded (the login
form) and JSON-escaped. Secrets are registered as soon as the tool holds them; the log
handlers (below), the ``cdse_dem`` loggers themselves (:func:`scrub_our_loggers`: a
Python caller's own handlers get clean records too) and the summary pass every line through
:func:`scrub` as a backstop, and the code that reads server text scrubs it before cutting it
short (a token cut in the middle would no longer be recognised). Names we show on purpose (the
user name) are kept whole even when a short password happens to be part of them (``demo`` in
``demo@example.com``).

The registry is shared by the process: runs in several threads at once register their
secrets side by side, and they are dropped only when the last run open ends
(:func:`run_scope`), never while another run may still show them.

The command line's log: lines in the reference tool's format, so users' log scrapers keep working.

``08/22/2024 08:30:30 AM | INFO <message>`` on stderr; the level is coloured only when
stderr is a terminal. ``-v`` adds debug lines, ``-q`` keeps warnings and errors.

Only the command line calls :func:`setup_logging`: the library itself adds no handler but a
``NullHandler`` (see job.py), and its records propagate to whatever a Python caller set up.
"""

import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, quote_plus

MASK = "[secret]"
MIN_SECRET = 4  # shorter strings would mask ordinary words; no password or token of CDSE is this short

_lock = threading.Lock()
_secrets: set[str] = set()
_public: set[str] = set()
_open_runs = 0  # runs (and command lines) under way in this process: see run_scope


def remember(*secrets: str | None) -> None:
    """Register secrets held by this run (empty or None values are ignored)."""
    spellings = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET:
            continue
        spellings.update({secret, quote_plus(secret), quote(secret, safe=""), json.dumps(secret)[1:-1]})
    with _lock:
        _secrets.update(spellings)


def shown(*names: str | None) -> None:
    """Register strings shown on purpose (the user name): never masked, whatever secret is inside."""
    with _lock:
        _public.update(name for name in names if name)


def forget_all() -> None:
    """Drop every registered secret (tests start each one clean)."""
    with _lock:
        _secrets.clear()
        _public.clear()


@contextmanager
def run_scope() -> Iterator[None]:
    """One run under way: the secrets registered meanwhile are forgotten once no run is left.

    Never cleared at the start of a run (another thread's run may be showing its own secrets
    at that moment), and not per run either (two runs of one account share the password).
    """
    global _open_runs
    with _lock:
        _open_runs += 1
    try:
        yield
    finally:
        with _lock:
            _open_runs -= 1
            if _open_runs == 0:
                _secrets.clear()
                _public.clear()


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``[secret]``, longest first."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
        public = sorted((p for p in _public if p not in _secrets), key=len, reverse=True)
    if public:  # odd pieces are the public names, kept as they are
        pieces = re.split("(" + "|".join(map(re.escape, public)) + ")", text)
        return "".join(piece if i % 2 else _mask(piece, secrets) for i, piece in enumerate(pieces))
    return _mask(text, secrets)


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class ScrubFilter(logging.Filter):
    """Every record is scrubbed of the run's secrets before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def scrub_our_loggers() -> None:
    """A :class:`ScrubFilter` on each ``cdse_dem`` logger made so far (once each).

    A logger's filters see only the records logged on it, not those of its children, so
    each one needs its own; modules make theirs when imported, before a run logs anything.
    """
    names = ["cdse_dem", *(name for name in list(logging.root.manager.loggerDict) if name.startswith("cdse_dem."))]
    with _filters_lock:  # two runs starting at once add one filter each, not two
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, ScrubFilter) for f in logger.filters):
                logger.addFilter(ScrubFilter())


_filters_lock = threading.Lock()


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
