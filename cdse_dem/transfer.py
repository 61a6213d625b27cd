"""Moving a product's bytes: connection slots, the resilient transfer, the Nodes API or the whole zip.

The connections a run may have open on the download host at once: its own, and its account's.

Every request there (a zip, a node file, a Nodes listing: CDSE's quota counts them alike) is
made holding one :class:`ConnectionSlot`, for that request only, never during the waits between
tries. Holding one is two things, taken in this order: one of the run's ``--workers`` (an
in-process semaphore, so that this run's listings and downloads together stay within it),
then, when a :class:`~cdse_dem.fsutil.SlotPool` is given, one of the account's slots on this
machine, so that all runs of one account together stay within its connections. A stop while
waiting for either ends the wait within one poll (``locks.POLL_SECONDS``).

Downloading one product zip, verified as it arrives, retried when the network misbehaves.

The bytes come straight from the download host (the catalogue's redirect would strip the
token, and a token must never reach any other host: :class:`~cdse_dem.http.DownloadToken`
adds it for CDSE's download hosts only, and a redirect is followed only between them), in
1 MiB chunks written to a temporary file in the destination folder while MD5 (and BLAKE3 when
the catalogue gives it) and the length are computed on the fly: memory stays flat whatever the
size, and a product is never read twice. A body that is short, long or altered is thrown away
and fetched again from zero (CDSE serves no ``Range``). Only a 200 answer is ever written: an
error body never becomes a "zip". Failures that another try can cure (dropped connections,
timeouts, 429, 5xx, a bad checksum) are retried with :class:`~cdse_dem.http.Backoff`; those
it cannot (no CCM access, a refused token, 404) end at once with one line saying what to do.

The same loop (:func:`fetch_file`, :func:`get_json`) serves the single files and listings of
the Nodes API (below), with a length but no checksum to verify as bytes arrive;
each request holds one of the account's connection slots (``slot``), never the waits between.

A ``stop`` event aborts promptly even in the middle of a stalled body: a small watcher shuts
the socket down, which wakes the blocked read at once (checking between chunks alone
would wait for the next chunk, or for the read timeout). The same watcher abandons a body
that trickles (slower than ``STALL_FLOOR`` over ``STALL_WINDOW``) or falls silent for
``STALL_SILENCE``: a read timeout alone is reset by every byte, so a server sending one
byte every few seconds would hold a worker for hours. A stalled transfer is retried; a
product that stalls ``MAX_STALLS`` times fails. Past ``--max-minutes`` the watcher also ends
transfers still running (the geocell is left for the next run).

The DEM layer alone, through CDSE's Nodes API: less than half the bytes of the product zip.

A product's files are a tree of nodes on the download host (cdse-api.md, section 4), of one
shape in both collections: a root folder, then ``<cell>/DEM/<cell>_DEM.tif`` (``.dt1``/``.dt2``
for DTED). Only the root's name must be read, so a product costs two requests: the listing of
its root (``Products(<Id>)/Nodes``), then the file addressed by its path of names,
``Products(<Id>)/Nodes(<root>)/Nodes(<cell>)/Nodes(DEM)/Nodes(<file>)/$value`` (the form CDSE
documents), its length told by the answer. One request where the record names the root: a
``COP-DEM`` product's root is its Name (recorded), which its S3Path ends in; a ``CCM``
product's root is not recorded, and nothing in its record names it reliably (its S3Path ends
in the Name without ``.DEM``), so it is listed (:func:`root_named_by_record`).

The listing is the look-ahead (:meth:`NodeClient.locate_dem`), made while earlier files move;
the file is the download (:meth:`NodeClient.fetch_dem`). Only when a path of names answers 404
is the tree walked level by level, each level through the ``Nodes.uri`` the one above gives
(each must stay on the download host, since the token goes with it), and what the walk finds
is kept for the run, said once: the file at the very names that answered 404 means the host
does not serve paths of names (the rest of the run walks); under another root than the
record's, that records do not name roots here (the rest of the run lists them).

A node file has no checksum: its length (the walk's listing's ``ContentLength``, else the
answer's ``Content-Length``) is checked as bytes arrive, and the whole file against the DEM
integrity check (:mod:`cdse_dem.dem_folder`) before it is renamed into place. Every failure
here is a :class:`NodesFailed`, which a run in ``auto`` mode answers by fetching the
product's zip instead (the choice below).

How a run fetches each DEM: the file alone through the Nodes API, or the whole product zip.

``auto`` (the default) tries Nodes first and falls back to the zip (MD5 verified) for a
product whose Nodes transfer failed; once a few products have failed that way the Nodes API
is plainly not working for this run (withdrawn, broken, refused), and the rest of the run
goes straight to zips. Either way the log says it in one line, not one per product: the
switch when it happens, else how many products fell back, at the end of the run. ``nodes``
never falls back (a failure fails the geocell); ``zip`` never tries Nodes.

``auto`` also switches when Nodes is plainly the slower way here. Before a byte moves, a
product waits on Nodes for the requests of the path in use (its root's listing, none, or a
walk's four, each holding one of the account's connections: CDSE is reported slow to answer
Nodes requests) and for its file's first byte; it saves the zip's other layers. Once a few
products have come through Nodes, that wait is set against the seconds their spared bytes
would have taken at the rate their files came; a wait more than half as long again means
whole zips finish sooner (GLO-90 with 0.3 s a Nodes request: 0.7 s of waiting to spare 0.3 s
of transfer at 20 MB/s), and the rest of the run uses them.
"""

import hashlib
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import requests
from blake3 import blake3
from urllib3.exceptions import HTTPError, ReadTimeoutError

from cdse_dem.dem_folder import DEM_SUFFIXES, MAX_DEM_BYTES, dem_problem
from cdse_dem.errors import AccessDenied, BudgetExhausted, DemError, Interrupted
from cdse_dem.fsutil import (
    POLL_SECONDS,
    SlotPool,
    create_temp_in,
    parse_json,
    raise_if_disk_full,
    remove_quietly,
    replace_into_place,
)
from cdse_dem.grid import Geocell
from cdse_dem.http import Backoff, DownloadToken, retry_after, shut, wait_for
from cdse_dem.http import origin_text as _origin
from cdse_dem.logs import scrub
from cdse_dem.settings import Transfer

log = logging.getLogger(__name__)


_STOPPED = "stopped while waiting for a download connection"


class Silence:
    """How long the download host has been asked and not answered: the seconds during which a
    request of the run was in flight since the host last answered anything (a status line, a
    byte). Time with nothing in flight (a wait between tries, or for a slot) is nobody's silence.

    A host that accepts connections and never answers makes each request wait for its read
    timeout, and each try its next; this is what sees that the whole host, not one transfer,
    has gone quiet. Shared by a run's threads.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._in_flight = 0
        self._silent = 0.0  # seconds of silence before the current stretch of requests in flight
        self._since: float | None = None  # the start of that stretch, or of the silence within it

    @contextmanager
    def asking(self) -> Iterator[None]:
        """The block is one request in flight."""
        with self._lock:
            if self._in_flight == 0:
                self._since = time.monotonic()
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._silent += time.monotonic() - self._since
                    self._since = None

    def heard(self) -> None:
        """The host answered something: its silence starts again from nothing."""
        with self._lock:
            self._silent = 0.0
            if self._since is not None:
                self._since = time.monotonic()

    def seconds(self) -> float:
        with self._lock:
            return self._silent + (time.monotonic() - self._since if self._since is not None else 0.0)


def acquire_unless_stopped(sem: threading.Semaphore, stop: threading.Event | None) -> bool:
    """Take ``sem``, however long it takes, unless ``stop`` is set meanwhile (False, not taken):
    polled every ``POLL_SECONDS``, so that a stop ends the wait within one poll."""
    while not sem.acquire(timeout=POLL_SECONDS):
        if stop is not None and stop.is_set():
            return False
    return True


class ConnectionSlot:
    """``with slot:`` holds one connection for the block; shared by every thread of a run.

    Not re-entrant within one thread (a thread makes one request at a time). ``silence`` is
    how long the requests made in its slots have gone unanswered.
    """

    def __init__(self, workers: int, pool: SlotPool | None = None, *, stop: threading.Event | None = None):
        self.silence = Silence()
        self._own = threading.BoundedSemaphore(workers)
        self._pool = pool
        self._stop = stop
        self._held = threading.local()  # the account slot (a LockFile) this thread holds

    def __enter__(self) -> "ConnectionSlot":
        if not acquire_unless_stopped(self._own, self._stop):
            raise DownloadCancelled(_STOPPED)
        if self._pool is None:
            return self
        try:
            account = self._pool.acquire(stop=self._stop, on_wait=self._waiting)
        except BaseException:
            self._own.release()
            raise
        if account is None:  # stopped while waiting
            self._own.release()
            raise DownloadCancelled(_STOPPED)
        self._held.account = account
        return self

    def __exit__(self, *exc_info) -> None:
        account, self._held.account = getattr(self._held, "account", None), None
        try:
            if account is not None:
                account.release()
        finally:
            self._own.release()

    def _waiting(self, seconds: float) -> None:
        """Every account slot is held by other runs: a debug line at first, then an INFO line each
        minute of waiting (the pool says when: once for the run, however many of its threads wait)."""
        if seconds == 0:
            log.debug("Every download connection of the account is in use (other runs): waiting for one")
            return
        log.info("Still waiting for a download connection after %d s: the %d this CDSE account may have on this "
                 "machine are all held by other runs (slot locks in %s)", round(seconds), self._pool.count,
                 self._pool.folder)


CHUNK = 1024 * 1024  # bytes a read returns at most (each returns what has arrived: see _chunks)
# A transfer slower than 10 kB/s over 30 s, or silent for 30 s, is abandoned and tried again: the
# largest product (a 30 m zip, ~100 MB) would take hours at that pace, and a healthy CDSE link
# gives MB/s; 30 s rides out a congested moment without holding a worker (a quarter of the quota).
STALL_FLOOR = 10_000  # bytes per second
STALL_WINDOW = 30.0  # seconds over which the floor is measured
STALL_SILENCE = 30.0  # seconds without a byte (also the read timeout of the request itself)
MAX_STALLS = 3  # a product that stalls this often fails: the server is not going to send it
_MAX_ERROR_BODY = 64 * 1024
MAX_JSON_BYTES = 4 * 1024 * 1024  # a Nodes listing is a few kB; more is not a listing
_WATCH_INTERVAL = 0.2  # seconds; how late the stop watcher may notice a stop
MAX_REDIRECTS = 3  # between CDSE's own download hosts; more is a loop
# Answers that mean this tool built a wrong request (CDSE's documented download errors).
OWN_BUG_CODES = {(400, "DAT-ZIP-104"): "malformed OData request path", (422, "DAT-ZIP-111"): "malformed product UUID"}
# Retry-After is honoured up to this (as the session does): an absurd value must not park a
# worker past the run's budget; coming back early only costs another 429, and tries are bounded.

CCM_DENIED = (
    "CDSE refuses the download (403 DAT-ZIP-608): this account is not registered for Copernicus "
    "Contributing Missions (CCM) data. Request CCM access once on your CDSE profile "
    "(https://dataspace.copernicus.eu: sign in, open your profile, request access to Copernicus "
    "Contributing Missions data) and run again when it is granted; or try --collection COP-DEM"
)
AUDIENCE_DENIED = (
    "CDSE refuses this access token for downloads (401 DAT-ZIP-609, token audience not allowed): "
    "use the credentials of a CDSE account, not those of a Sentinel Hub client"
)


class DownloadFailed(DemError):
    """One product could not be downloaded (after retries, or refused for good); others may go on."""


class NotFound(DownloadFailed):
    """404: nothing at that address (a product withdrawn, a node path the host does not serve)."""


class DownloadCancelled(Interrupted):
    """The run was asked to stop (Ctrl-C, the ``stop`` event) while this product was being fetched."""


@dataclass
class DownloadResult:
    product_id: str
    zip_path: Path  # a verified zip under a temporary name in dest_dir: the caller extracts then deletes it
    bytes: int
    attempts: int  # requests made, the one that succeeded included
    seconds: float


@dataclass(frozen=True)
class StallLimits:
    """When a transfer counts as stalled (the defaults are the named constants above)."""

    floor: float = STALL_FLOOR
    window: float = STALL_WINDOW
    silence: float = STALL_SILENCE
    max_stalls: int = MAX_STALLS


class StallMeter:
    """Bytes over time of one transfer: says when it is too slow or silent (clock given, so testable)."""

    def __init__(self, limits: StallLimits, now: float):
        self.limits = limits
        self.start = self.last_byte = now
        self.total = 0
        self._samples: deque[tuple[float, int]] = deque([(now, 0)])

    def add(self, count: int, now: float) -> None:
        self.total += count
        self.last_byte = now
        self._samples.append((now, self.total))

    def stalled(self, now: float) -> str | None:
        """Why this transfer should be abandoned now, or None."""
        limits = self.limits
        if now - self.last_byte >= limits.silence:
            return f"no byte for {limits.silence:g} s"
        if now - self.start < limits.window:
            return None
        horizon = now - limits.window
        while len(self._samples) > 1 and self._samples[1][0] <= horizon:
            self._samples.popleft()
        if self.total - self._samples[0][1] < limits.floor * limits.window:
            return f"slower than {limits.floor / 1000:g} kB/s over {limits.window:g} s"
        return None


class _Retry(Exception):
    """A failure another try may cure; ``wait`` is the least the server asked us to wait."""

    def __init__(self, problem: str, wait: float | None = None):
        super().__init__(problem)
        self.problem, self.wait = problem, wait


class _Redirect(Exception):
    """A 3xx to another CDSE download host: follow it, token and all."""

    def __init__(self, location: str):
        super().__init__(location)
        self.location = location


class _Stalled(_Retry):
    """The transfer trickled or fell silent: retried, but only ``max_stalls`` times in all."""


class _TokenRefused(Exception):
    """A 401 other than DAT-ZIP-609: the token may have expired; refresh and try again once."""


def download_product(product, dest_dir: Path, session, http, endpoints, *,
                     backoff: Backoff | None = None, on_bytes: Callable[[int], None] | None = None,
                     stop: threading.Event | None = None, stall: StallLimits | None = None,
                     timeout: tuple[float, float] | None = None,
                     clock: Callable[[], float] = time.monotonic, slot=None,
                     max_bytes: int | None = None) -> DownloadResult:
    """Fetch ``product``'s zip into ``dest_dir`` (verified) and say where it is.

    ``on_bytes`` is told of every chunk written; when a try fails after some bytes, it gets
    one negative call taking them back, so a progress total stays true across retries.
    ``max_bytes``: the most such a product can be; one announced larger is refused before
    its first byte, a body running past it is cut. Raises AccessDenied (no CCM access, token
    audience), BudgetExhausted (no time left to start), DownloadCancelled (``stop`` set),
    DiskFull, or DownloadFailed; the temporary file is removed in every such case.
    """
    label = f"{product.name} ({product.id})" if product.name else product.id
    refuse_oversize(product.content_length, max_bytes, label, "a DEM product")
    expect = Expected(product.content_length, product.md5, product.blake3, max_bytes)
    fetched = fetch_file(endpoints.product_url(product.id), Path(dest_dir), f"{product.id}.zip", session, http,
                         endpoints, label=label, expect=expect, backoff=backoff, on_bytes=on_bytes, stop=stop,
                         stall=stall, timeout=timeout, clock=clock, slot=slot)
    return DownloadResult(product.id, fetched.path, fetched.bytes, fetched.attempts, fetched.seconds)


@dataclass(frozen=True)
class Expected:
    """What a body must be, as far as it is known before it arrives: length and digests, and
    ``limit``, the most such a file can be whatever is announced (a DEM, a product), and ``what``
    it is, in the words of a refusal."""

    length: int | None = None
    md5: str | None = None
    blake3: str | None = None
    limit: int | None = None
    what: str = "such a file"


def refuse_oversize(length: int | None, limit: int | None, label: str, what: str) -> None:
    """A file announced (by the catalogue, a listing or the server) larger than ``what`` can be is
    refused before its first byte: DownloadFailed, never retried. ``limit`` None: no bound known."""
    if length is not None and limit is not None and length > limit:
        raise DownloadFailed(f"{label} is announced at {length:,} bytes, more than {what} can be ({limit:,}): refused")


@dataclass
class Fetched:
    path: Path  # under a temporary name in the destination folder: the caller renames or deletes it
    bytes: int
    attempts: int  # requests made, the one that succeeded included
    seconds: float
    request_seconds: float = 0.0  # the request that succeeded, from its slot to its last byte
    first_byte_seconds: float = 0.0  # the same request, from its slot to its answer's headers


def fetch_file(url: str, dest_dir: Path, final_name: str, session, http, endpoints, *, label: str,
               expect: Expected | None = None, backoff: Backoff | None = None,
               on_bytes: Callable[[int], None] | None = None, stop: threading.Event | None = None,
               stall: StallLimits | None = None, timeout: tuple[float, float] | None = None,
               clock: Callable[[], float] = time.monotonic, first: bool = True, durable: bool = False,
               slot=None, on_length: Callable[[int], None] | None = None) -> Fetched:
    """Stream ``url`` from the download host into a temporary for ``final_name`` in ``dest_dir``.

    The one download loop of the tool (whole zips and single node files): the token, its
    refresh on a 401, redirects between CDSE's download hosts, retries with backoff, stalls,
    ``stop``, the time budget, progress and the length and digests of ``expect`` checked as
    bytes arrive. ``first`` (the first request for a geocell) makes a spent time budget refuse
    to start; ``durable`` fsyncs the file (it is to be renamed into place, not unpacked);
    ``slot`` (a context manager taking one of the account's connections) is held for each
    request, never during the waits between tries. ``on_length`` is told the length a body is
    to have, before its first byte (``expect``'s, else the server's ``Content-Length``), on
    every try. Raises as :func:`download_product` does (404: :class:`NotFound`).
    """
    expect = expect or Expected()

    def receive(reply, watch, label):
        return _receive(reply, expect, Path(dest_dir), final_name, on_bytes, watch, label, durable, on_length)

    began = time.monotonic()
    (path, size), attempts, request, first_byte = _with_retries(
        url, session, http, endpoints, receive, label=label, backoff=backoff, stop=stop, stall=stall,
        timeout=timeout, clock=clock, first=first, slot=slot)
    return Fetched(path, size, attempts, time.monotonic() - began, request, first_byte)


def get_json(url: str, session, http, endpoints, *, label: str, backoff: Backoff | None = None,
             stop: threading.Event | None = None, stall: StallLimits | None = None,
             timeout: tuple[float, float] | None = None, clock: Callable[[], float] = time.monotonic,
             first: bool = False, max_bytes: int = MAX_JSON_BYTES, slot=None):
    """A small JSON answer of the download host (a Nodes listing), with the same token,
    redirects, retries, stall and stop handling as a download, and how long its request took
    (slot waits excluded). A body that is not JSON raises DownloadFailed."""
    def receive(reply, watch, label):
        return _read_json(reply, max_bytes, watch, label)

    body, _, seconds, _ = _with_retries(url, session, http, endpoints, receive, label=label, backoff=backoff,
                                        stop=stop, stall=stall, timeout=timeout, clock=clock, first=first,
                                        slot=slot)
    return body, seconds


def _with_retries(url, session, http, endpoints, receive, *, label, backoff, stop, stall, timeout, clock, first,
                  slot=None):
    """Requests ``url`` until ``receive`` accepts a 200 answer.

    Returns its result, the requests made, and the seconds of the one that succeeded: to its
    last byte, and to its answer's headers."""
    backoff = backoff or Backoff()
    stall = stall or StallLimits()
    timeout = timeout or (10.0, stall.silence)
    auth = DownloadToken(endpoints.token_hosts)
    if not auth.allows(url):  # the token goes to CDSE's download hosts only
        raise DownloadFailed(f"refusing to send the access token to {_origin(url)} (not a CDSE download host)")
    delays = backoff.delays()
    requests_made = 0
    tries = 0  # failures counted against the backoff: a 401 refresh is not one
    stalls = 0
    after_refresh = False
    redirects = 0
    silence = getattr(slot, "silence", None) or Silence()  # without a run's slots: this transfer's own
    watch = _Watch(stop, stall, clock, getattr(session, "out_of_time", None), silence.heard)
    while True:
        _raise_if_stopped(stop, label)
        if first and requests_made == 0 and not session.may_start():
            raise BudgetExhausted(f"the time budget is spent: {label} not started")
        requests_made += 1
        token = None
        try:
            with slot if slot is not None else nullcontext():
                _raise_if_stopped(stop, label)
                token = session.access_token()
                sent = time.monotonic()
                with silence.asking():
                    result, answered = _attempt(url, auth.bearing(token), http, receive, watch, timeout, label)
                seconds = time.monotonic() - sent
        except _Redirect as redirect:
            redirects += 1
            if redirects > MAX_REDIRECTS:
                raise DownloadFailed(f"the download hosts redirected {label} more than {MAX_REDIRECTS} times") from None
            url = redirect.location
            continue
        except _TokenRefused as refused:
            if after_refresh:
                raise AccessDenied(
                    f"CDSE refused a freshly refreshed access token for {label} ({refused})"
                ) from None
            log.info("The access token was refused (%s); refreshing it", refused)
            session.token_rejected(token)
            after_refresh = True
            continue
        except _Retry as failure:
            after_refresh = False
            tries += 1
            if isinstance(failure, _Stalled):
                stalls += 1
                if stalls >= stall.max_stalls:
                    raise DownloadFailed(f"download of {label} stalled {stalls} times ({failure.problem});"
                                         " given up") from None
            delay = next(delays, None)
            if delay is None:
                raise DownloadFailed(
                    f"download of {label} failed after {tries} tries: {failure.problem}"
                ) from None
            delay = wait_for(delay, failure.wait)
            log.warning("Download of %s: %s; retrying in %.1f s (try %d of %d)",
                        label, failure.problem, delay, tries + 1, backoff.attempts)
            _pause(delay, stop, label)
            continue
        return result, requests_made, seconds, answered - sent


def _attempt(url, auth: DownloadToken, http, receive, watch, timeout, label):
    """One GET: what ``receive`` makes of a 200 answer and when its headers came, else the exception
    that says what to do next."""

    try:
        reply = http.get(url, auth=auth, headers={"Accept-Encoding": "identity"}, stream=True,
                         allow_redirects=False, timeout=timeout)
    except (requests.Timeout, requests.ConnectionError) as exc:
        _raise_if_stopped(watch.stop, label)  # the run cut the connection: a stop, or the end of its time
        if watch.out_of_time is not None and watch.out_of_time():
            raise BudgetExhausted(f"the time budget is spent: {label} abandoned, left for the next run") from None
        if isinstance(exc, requests.ReadTimeout):
            raise _Stalled(f"no answer for {watch.limits.silence:g} s") from None
        raise _Retry(f"no answer from the download host ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise DownloadFailed(f"cannot request {label}: {exc}") from None
    answered = time.monotonic()
    watch.on_answer()
    with reply:
        status = reply.status_code
        if status == 200:
            return receive(reply, watch, label), answered
        code, message, trace = _error_body(reply, watch.stop, label)
        detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if 300 <= status < 400:
            location = urljoin(url, reply.headers.get("Location") or "")
            if reply.headers.get("Location") and auth.allows(location):
                raise _Redirect(location)
            where = _origin(reply.headers.get("Location") or "")
            raise DownloadFailed(f"the download host redirected {label} to {where or 'elsewhere'};"
                                 " not followed, so that the access token stays on CDSE's download hosts")
        if (status, code) in OWN_BUG_CODES:
            raise DownloadFailed(
                f"CDSE rejected the request for {label} as a {OWN_BUG_CODES[status, code]} ({detail}): a bug of"
                f" this tool, please report it with the trace id {trace or '(none given)'}")
        if status == 401:
            if code == "DAT-ZIP-609":
                raise AccessDenied(AUDIENCE_DENIED)
            raise _TokenRefused(detail)
        if status == 403 and code == "DAT-ZIP-608":
            raise AccessDenied(CCM_DENIED)
        if status == 429 or status >= 500:
            raise _Retry(detail, retry_after(reply.headers))
        if status == 404:
            raise NotFound(f"CDSE refused {label}: {detail}")
        raise DownloadFailed(f"CDSE refused {label}: {detail}")


def _receive(reply, expect: Expected, dest_dir: Path, final_name: str, on_bytes, watch,
             label, durable: bool = False, on_length: Callable[[int], None] | None = None) -> tuple[Path, int]:
    """Stream a 200 body into a temporary file, checking length and checksums as bytes arrive."""

    expected, limit = expect.length, expect.limit
    announced = _int_or_none(reply.headers.get("Content-Length"))
    encoded = reply.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    if announced is not None and not encoded:
        refuse_oversize(announced, limit, label, expect.what)
        if expected is not None and announced != expected:
            raise _Retry(f"the server announces {announced} bytes, {expected} are expected")
        expected = announced
    if expected is not None and on_length is not None:
        on_length(expected)
    md5 = hashlib.md5(usedforsecurity=False) if expect.md5 else None
    b3 = _blake3() if expect.blake3 else None

    temp, handle = create_temp_in(dest_dir, final_name)
    received = reported = 0
    stop = watch.stop
    watcher = _Watcher(watch, reply)
    ok = False
    try:
        with handle:
            for chunk in _chunks(reply):
                watcher.took(len(chunk))
                watcher.raise_if_fired(label)
                if limit is not None and received + len(chunk) > limit:  # not a byte past it is written
                    raise DownloadFailed(f"{label}: the body runs past {limit:,} bytes, more than {expect.what}"
                                         " can be: refused")
                if expected is not None and received + len(chunk) > expected:
                    raise _Retry(f"more than the {expected} bytes announced")
                handle.write(chunk)
                received += len(chunk)
                if md5 is not None:
                    md5.update(chunk)
                if b3 is not None:
                    b3.update(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                    reported += len(chunk)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        watcher.raise_if_fired(label)  # the body was cut short by us, whatever it looks like
        if expected is not None and received != expected:
            _raise_if_stopped(stop, label)
            raise _Retry(f"connection dropped after {received} of {expected} bytes")
        if md5 is not None and md5.hexdigest() != expect.md5.strip().lower():
            raise _Retry(f"MD5 mismatch ({md5.hexdigest()} received, {expect.md5} in the catalogue)")
        if b3 is not None and b3.hexdigest() != expect.blake3.strip().lower():
            raise _Retry(f"BLAKE3 mismatch ({b3.hexdigest()} received, {expect.blake3} in the catalogue)")
        ok = True
        return temp, received
    except (requests.RequestException, ConnectionError, TimeoutError) as exc:
        # ChunkedEncodingError and friends: the body ended early (or the watcher cut it).
        _raise_if_stopped(stop, label)
        watcher.raise_if_fired(label)
        if _is_read_timeout(exc):
            raise _Stalled(f"transfer stalled: no byte for {watcher.meter.limits.silence:g} s") from None
        raise _Retry(f"connection dropped during the body ({type(exc).__name__})") from None
    except OSError as exc:  # writing the temporary file
        _raise_if_stopped(stop, label)
        raise_if_disk_full(exc, dest_dir)
        raise DownloadFailed(f"cannot write {temp}: {exc.strerror or exc}") from exc
    finally:
        watcher.close()
        if not ok:
            remove_quietly(temp)
            if reported and on_bytes is not None:
                on_bytes(-reported)


def _read_json(reply, max_bytes: int, watch, label):
    """A whole, bounded JSON body, watched as a download is; a cut one is retried, one that is
    not JSON is refused (its text scrubbed of our secrets)."""


    too_large = DownloadFailed(f"{label}: the answer is larger than {max_bytes:,} bytes (not a listing)")
    announced = _int_or_none(reply.headers.get("Content-Length"))
    if announced is not None and announced > max_bytes:
        raise too_large  # said before a byte is read, and not asked again
    watcher = _Watcher(watch, reply)
    raw = bytearray()
    try:
        for chunk in _chunks(reply):
            watcher.took(len(chunk))
            watcher.raise_if_fired(label)
            raw += chunk
            if len(raw) > max_bytes:
                raise too_large
        watcher.raise_if_fired(label)  # the body was cut short by us, whatever it looks like
        if announced is not None and len(raw) < announced:
            _raise_if_stopped(watch.stop, label)
            raise _Retry(f"connection dropped after {len(raw)} of {announced} bytes")
    except (requests.RequestException, ConnectionError, TimeoutError) as exc:
        _raise_if_stopped(watch.stop, label)
        watcher.raise_if_fired(label)
        if _is_read_timeout(exc):
            raise _Stalled(f"transfer stalled: no byte for {watcher.meter.limits.silence:g} s") from None
        raise _Retry(f"connection dropped during the answer ({type(exc).__name__})") from None
    finally:
        watcher.close()
    try:
        return parse_json(bytes(raw).decode("utf-8"))
    except ValueError:  # not UTF-8, not JSON, or nested too deep to parse
        text = " ".join(scrub(bytes(raw).decode("utf-8", "replace")).split())[:80]
        raise DownloadFailed(f"{label}: the answer is not JSON ({text!r})") from None


def _chunks(reply):
    """The body as it arrives: each read returns what the socket has (up to CHUNK), not a full CHUNK.

    ``iter_content`` blocks until a whole chunk is in, so a trickling body would look silent to
    the stall watcher; ``read1`` lets it count every byte. urllib3's errors are raised as
    requests' ConnectionError, as ``iter_content`` would.
    """

    if not hasattr(reply.raw, "read1"):  # urllib3 < 2.1: whole chunks only
        yield from reply.iter_content(CHUNK)
        return
    while True:
        try:
            data = reply.raw.read1(CHUNK, decode_content=True)
        except HTTPError as exc:
            raise requests.ConnectionError(exc) from None
        if not data:
            return
        yield data


def _error_body(reply, stop, label) -> tuple[str | None, str | None, str | None]:
    """The ``code``, ``message`` and ``trace-id`` of CDSE's JSON error body (read, bounded, scrubbed of
    our secrets, never saved)."""


    try:
        raw = reply.raw.read(_MAX_ERROR_BODY, decode_content=True) or b""
    except (requests.RequestException, OSError, ValueError):
        _raise_if_stopped(stop, label)
        return None, None, None
    text = scrub(raw.decode("utf-8", "replace"))  # before it is cut: a server may quote our token back
    try:
        body = parse_json(text)
    except ValueError:
        text = " ".join(text.split())[:200]
        return None, text or None, None
    if not isinstance(body, dict):
        return None, None, None
    code, message, trace = body.get("code"), body.get("message") or body.get("detail"), body.get("trace-id")
    return ((str(code)[:100] if code else None), (" ".join(str(message).split())[:300] if message else None),
            (str(trace)[:64] if trace else None))


@dataclass
class _Watch:
    """What a transfer is watched for: a stop, a stall, the end of the time budget."""

    stop: threading.Event | None
    limits: StallLimits
    clock: Callable[[], float]
    out_of_time: Callable[[], bool] | None
    on_answer: Callable[[], None]  # told whenever the host answers something


class _Watcher:
    """Shuts the response's socket down when the run stops, the body stalls or the budget ends:
    this wakes a read blocked on a stalled body at once."""

    def __init__(self, watch: _Watch, reply):
        self._watch, self._reply = watch, reply
        self.meter = StallMeter(watch.limits, watch.clock())
        self._done = threading.Event()
        self._lock = threading.Lock()
        self.fired: str | None = None  # "stop", "stall" or "budget"
        self.reason = ""
        self._interval = min(_WATCH_INTERVAL, watch.limits.silence / 4)
        self._thread = threading.Thread(target=self._run, name="download-watch", daemon=True)
        self._thread.start()

    def took(self, count: int) -> None:
        """``count`` bytes arrived."""
        self.meter.add(count, self._watch.clock())
        self._watch.on_answer()

    def _why(self) -> tuple[str, str] | None:
        watch = self._watch
        if watch.stop is not None and watch.stop.is_set():
            return "stop", "cancelled"
        reason = self.meter.stalled(watch.clock())
        if reason is not None:
            return "stall", reason
        if watch.out_of_time is not None and watch.out_of_time():
            return "budget", "the time budget is spent"
        return None

    def _run(self) -> None:
        stop = self._watch.stop
        while not self._done.is_set():
            if stop is not None:
                stop.wait(self._interval)
            else:
                self._done.wait(self._interval)
            why = self._why()
            if why is not None:
                with self._lock:
                    if not self._done.is_set():
                        self.fired, self.reason = why
                        _interrupt(self._reply)
                return

    def raise_if_fired(self, label: str) -> None:
        """The exception that says why the watcher cut this transfer short, if it did."""
        if self.fired is None and self._watch.stop is not None and self._watch.stop.is_set():
            self.fired = "stop"
        if self.fired == "stop":
            raise DownloadCancelled(f"download of {label} cancelled")
        if self.fired == "stall":
            raise _Stalled(f"transfer stalled: {self.reason}")
        if self.fired == "budget":
            raise BudgetExhausted(f"the time budget is spent: {label} abandoned, left for the next run")

    def close(self) -> None:
        with self._lock:  # after this, the watcher can no longer touch the (maybe pooled) connection
            self._done.set()


def _interrupt(reply) -> None:
    connection = getattr(reply.raw, "connection", None) or getattr(reply.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        shut(sock)


def _is_read_timeout(exc: BaseException) -> bool:
    """requests wraps a read timeout in the middle of a body as a ConnectionError."""

    return any(isinstance(e, (ReadTimeoutError, TimeoutError)) for e in (exc, *exc.args))


def _raise_if_stopped(stop: threading.Event | None, label: str) -> None:
    if stop is not None and stop.is_set():
        raise DownloadCancelled(f"download of {label} cancelled")


def _pause(seconds: float, stop: threading.Event | None, label: str) -> None:
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise DownloadCancelled(f"download of {label} cancelled")


def _blake3():

    return blake3()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# A node file that arrives whole (its length right) but fails the integrity check is fetched
# once more; failing twice, it is not a transfer accident: the product goes the zip way.
CHECK_TRIES = 2
_NODES = "/Nodes"
_VALUE = "/$value"
DEM_FOLDER = "DEM"
# A name this tool puts into a path itself must need no escaping (CDSE's product names never do).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")


class NodesFailed(DownloadFailed):
    """The Nodes API did not give this product's DEM layer whole; its zip may still."""


@dataclass(frozen=True)
class Node:
    """One entry of a Nodes listing."""

    name: str
    content_length: int  # bytes; 0 for a folder
    children: int
    uri: str  # the listing of this node's children: ``.../Nodes(<name>)/Nodes``

    @property
    def value_url(self) -> str:
        """The node's bytes: its uri with the last ``/Nodes`` replaced by ``/$value``."""
        return self.uri[: -len(_NODES)] + _VALUE


@dataclass(frozen=True)
class Located:
    """Where a product's DEM file is, found ahead of its download, and what finding it cost."""

    url: str  # the file's bytes: ``.../Nodes(<file>)/$value``
    names: tuple[str, ...]  # the path of names ``url`` addresses: root, cell, ``DEM``, file
    length: int | None  # from its folder's listing (a walk); None: its answer says
    listing_seconds: float  # the seconds of the listings' requests (none when the record names the root)
    root: Node | None = None  # the product's root, when listed: a walk starts below it
    walked: bool = False  # found level by level; else addressed by its path of names


@dataclass(frozen=True)
class NodeFile:
    path: Path  # under its final name, whole and checked
    bytes: int
    seconds: float  # the request that brought it, from its slot to its last byte
    first_byte_seconds: float  # the same request, from its slot to its answer's headers
    listing_seconds: float  # every listing the product cost, a walk after a 404 included


def parse_listing(body, where: str) -> list[Node]:
    """The nodes of one listing (``{"result": [...]}``); anything else is a NodesFailed."""
    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        raise NodesFailed(f"unexpected Nodes listing for {where} (no 'result' list)")
    nodes = []
    for item in body["result"]:
        node = _node(item)
        if node is None:
            raise NodesFailed(f"unexpected Nodes listing for {where}: an entry is not a node ({str(item)[:120]})")
        nodes.append(node)
    return nodes


def _node(item) -> Node | None:
    if not isinstance(item, dict):
        return None
    name, length, children = item.get("Name"), item.get("ContentLength"), item.get("ChildrenNumber", 0)
    uri = (item.get("Nodes") or {}).get("uri") if isinstance(item.get("Nodes"), dict) else None
    if not isinstance(name, str) or not name or not isinstance(uri, str) or not uri.endswith(_NODES):
        return None
    if not _is_count(length) or not _is_count(children):
        return None
    return Node(name, length, children, uri)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def dem_node_path(file_name: str) -> tuple[str, str, str]:
    """The names under the root that lead to a DEM file: (``<cell>``, ``DEM``, ``<cell>_DEM.tif``)."""
    suffix = next((s for s in DEM_SUFFIXES if file_name.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{file_name} is not named like a DEM layer")
    return file_name[: -len(suffix)], DEM_FOLDER, file_name


def root_named_by_record(product) -> str | None:
    """The name of ``product``'s root node where its catalogue record gives it; None: it must be listed.

    cdse-api.md records one root: a ``COP-DEM`` product's is its Name, ``.DEM`` included, which is
    also the last part of its S3Path (``/eodata/auxdata/CopDEM/<dataset>/<Name>``). A ``CCM``
    product's S3Path ends in the Name without ``.DEM`` (its zip's folder), and its root node is
    not recorded: nothing in its record names the root reliably. Hence the rule: the Name, where
    the S3Path ends in it.
    """
    name = product.name or ""
    if _PLAIN_NAME.fullmatch(name) and (product.s3_path or "").rstrip("/").rsplit("/", 1)[-1] == name:
        return name
    return None


def _path_of(names) -> str:
    return "".join(f"{_NODES}({name})" for name in names)


@dataclass
class NodeClient:
    """What every Nodes request of a run shares: the session, the HTTP pool, the hosts, the policy,
    and what the run has learnt of the host (a path of names it does not serve, a root the record
    does not name), so that each is found out once, not once a product."""

    session: object
    http: object
    endpoints: object
    backoff: Backoff | None = None
    stop: threading.Event | None = None
    timeout: tuple[float, float] | None = None  # None: the download loop's (its read timeout is the stall silence)
    stall: StallLimits | None = None
    slot: object = None  # the account's connections: CDSE counts a listing as one, as it does a download
    wanted: Callable[[], bool] | None = None  # False once the run has left Nodes: a walk under way stops
    direct: bool = True  # False once the host answered 404 to a file's path of names: every product is walked
    roots_from_records: bool = True  # False once a root the record named was not the host's: roots are listed
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def listing(self, uri: str, label: str, *, first: bool = False) -> tuple[list[Node], float]:
        """The nodes under ``uri``, and the seconds the request took."""
        try:
            body, seconds = get_json(uri, self.session, self.http, self.endpoints, label=label,
                                     backoff=self.backoff, stop=self.stop, stall=self.stall, timeout=self.timeout,
                                     first=first, slot=self.slot)
        except NodesFailed:
            raise
        except DownloadFailed as exc:  # 404 (Nodes off), 5xx after retries, a foreign host, not JSON
            raise NodesFailed(str(exc)) from None
        return parse_listing(body, label), seconds

    # -- the look-ahead: where the file is, found before a connection is free to fetch it --

    def locate_dem(self, product, file_name: str) -> Located:
        """Where ``product``'s DEM file is: its root (named by the record, else one listing), then the
        file addressed by its path of names, ``Products(<Id>)/Nodes(<root>)/Nodes(<cell>)/Nodes(DEM)/
        Nodes(<file>)/$value``; walked level by level instead once the run has found that path unserved.

        The first request is the geocell's first: past the time budget it raises BudgetExhausted.
        """
        label = _nodes_label(product, file_name)
        names = dem_node_path(file_name)
        root_name = root_named_by_record(product) if self.roots_from_records else None
        if root_name is not None and self.direct:
            base = f"{self.endpoints.download_url}/Products({product.id}){_NODES}({root_name})"
            return Located(base + _path_of(names) + _VALUE, (root_name, *names), None, 0.0)
        root, seconds = self._root(product, label, first=True)
        if self.direct:  # from the root's own uri, so that its name is spelled as the host spells it
            return Located(root.uri[: -len(_NODES)] + _path_of(names) + _VALUE, (root.name, *names), None,
                           seconds, root)
        return self._walk(root, file_name, label, seconds)

    def _root(self, product, label: str, *, first: bool) -> tuple[Node, float]:
        """The product's one root folder, from the listing of ``Products(<Id>)/Nodes``."""
        roots, seconds = self.listing(f"{self.endpoints.download_url}/Products({product.id}){_NODES}", label,
                                      first=first)
        folders = [n for n in roots if n.children > 0]
        if len(folders) != 1:
            names = ", ".join(n.name for n in roots) or "nothing"
            raise NodesFailed(f"unexpected Nodes root for {product.id}: {names}")
        return folders[0], seconds

    # -- the fallback walk: level by level, through the uri each level gives --

    def _walk(self, root: Node, file_name: str, label: str, spent: float) -> Located:
        """From ``root`` down to the DEM file, one listing a level, each reached through the
        ``Nodes.uri`` of the level above (which must stay on the download host: the token goes with it)."""
        node, names = root, [root.name]
        for name in dem_node_path(file_name):
            if self.wanted is not None and not self.wanted():
                raise NodesFailed("the run has left the Nodes API")
            nodes, seconds = self.listing(node.uri, label)
            node, spent = _child(nodes, name, node.name), spent + seconds
            names.append(node.name)
        if node.children or node.content_length <= 0:
            raise NodesFailed(f"the node {file_name} under {root.name} is not a file "
                              f"({node.content_length} bytes, {node.children} children)")
        return Located(node.value_url, tuple(names), node.content_length, spent, root, walked=True)

    def _walk_after_404(self, product, located: Located, file_name: str) -> Located:
        """The file's path of names answered 404: walk the tree, and learn from where the file is.

        Under another root than the record's: the records do not name roots here, and the rest
        of the run lists them. At the very names that answered 404: the host does not serve paths
        of names, and the rest of the run walks. Elsewhere (a name spelled otherwise): this product's own.
        """
        label = _nodes_label(product, file_name)
        root, spent = located.root, located.listing_seconds
        if root is None:
            root, seconds = self._root(product, label, first=False)
            spent += seconds
        found = self._walk(root, file_name, label, spent)
        if located.root is None and root.name != located.names[0]:
            if self._learnt("roots_from_records"):
                log.info("The Nodes API names the roots of products otherwise than their catalogue records (%s "
                         "is under %s, not %s): the rest of the run lists each product's root", file_name,
                         root.name, located.names[0])
        elif found.names == located.names:
            if self._learnt("direct"):
                log.info("The Nodes API does not serve a file by its path of names (HTTP 404 for %s, which the "
                         "listings of its folders hold): the rest of the run walks each product's folders",
                         file_name)
        else:
            log.debug("%s: the Nodes API holds it as %s", file_name, "/".join(found.names))
        return found

    def _learnt(self, flag: str) -> bool:
        """Turn ``flag`` off for the run; True for the one thread that did (it says so)."""
        with self._lock:
            was = getattr(self, flag)
            setattr(self, flag, False)
        return was

    # -- the file --

    def fetch_dem(self, product, located: Located, out_dir: Path, file_name: str, *, cell: Geocell,
                  resolution: int, on_bytes: Callable[[int], None] | None = None,
                  on_length: Callable[[int], None] | None = None) -> NodeFile:
        """``product``'s DEM file into ``out_dir`` as ``file_name``, checked whole.

        Addressed by its path of names, a 404 sends it the walk's way (:meth:`_walk_after_404`).
        """
        try:
            return self._fetch_checked(located, out_dir, file_name, cell, resolution, on_bytes, on_length)
        except NotFound as exc:
            if located.walked:
                raise NodesFailed(str(exc)) from None
            log.debug("%s: %s; walking its folders", file_name, exc)
        found = self._walk_after_404(product, located, file_name)
        try:
            return self._fetch_checked(found, out_dir, file_name, cell, resolution, on_bytes, on_length)
        except NotFound as exc:
            raise NodesFailed(str(exc)) from None

    def _fetch_checked(self, located: Located, out_dir: Path, file_name: str, cell: Geocell, resolution: int,
                       on_bytes, on_length) -> NodeFile:
        """Stream the file, then check it: its length first (as bytes arrive: the listing's, else the
        announced one), then the DEM integrity check; only then the rename. The name is ours, never
        the server's: nothing it says reaches the file system. Raises NotFound (404) as it comes."""
        suffix = Path(file_name).suffix
        label = f"{file_name} (Nodes)"
        limit, what = MAX_DEM_BYTES[resolution], f"a DEM at {resolution} m"
        problem = None
        for _ in range(CHECK_TRIES):
            try:
                refuse_oversize(located.length, limit, label, what)  # a walk's listing: before asking
                fetched = fetch_file(located.url, out_dir, file_name, self.session, self.http, self.endpoints,
                                     label=label, expect=Expected(length=located.length, limit=limit, what=what),
                                     backoff=self.backoff, on_bytes=on_bytes, stop=self.stop, stall=self.stall,
                                     timeout=self.timeout, first=False, durable=True, slot=self.slot,
                                     on_length=on_length)
            except (NodesFailed, NotFound):
                raise
            except DownloadFailed as exc:
                raise NodesFailed(str(exc)) from None
            try:
                problem = dem_problem(fetched.path, resolution=resolution, cell=cell, suffix=suffix)
                if problem is None:
                    final = Path(out_dir) / file_name
                    replace_into_place(fetched.path, final)
                    return NodeFile(final, fetched.bytes, fetched.request_seconds, fetched.first_byte_seconds,
                                    located.listing_seconds)
            except BaseException:
                remove_quietly(fetched.path)
                raise
            remove_quietly(fetched.path)
            if on_bytes is not None:
                on_bytes(-fetched.bytes)  # the progress total stays true across the re-fetch
            log.debug("%s failed its check (%s)", label, problem)
        raise NodesFailed(f"{file_name} from the Nodes API failed its check {CHECK_TRIES} times: {problem}")


def _nodes_label(product, file_name: str) -> str:
    return f"the Nodes of {file_name} ({product.id})"


def _child(nodes: list[Node], name: str, parent: str) -> Node:
    matches = [n for n in nodes if n.name == name] or [n for n in nodes if n.name.casefold() == name.casefold()]
    if len(matches) != 1:
        found = ", ".join(n.name for n in nodes[:12]) or "nothing"
        raise NodesFailed(f"no single node {name} under {parent} (found: {found})")
    return matches[0]


# Products whose Nodes transfer failed, after which the rest of the run uses zips (issue 15):
# one or two can be a product's own trouble; three in one run say the API itself is not usable.
FALLBACKS_BEFORE_SWITCH = 3
# Products fetched through Nodes before their cost is judged: one can be slow by accident, and
# every product located meanwhile is one more through the slower way.
SPEED_SAMPLES = 2
# How many times the spared transfer time a product's wait on Nodes must cost before zips are
# preferred: a margin, because a zip's own wait for its first byte is not known (taken as none,
# which favours zips), and the spared bytes also count against the account's monthly volume.
SLOWER_BY = 1.5


@dataclass(frozen=True)
class NodeSample:
    """What one product cost through Nodes, against the zip it spared."""

    zip_bytes: int
    dem_bytes: int
    listing_seconds: float  # its listings' requests: the root's, or none, or a walk's
    first_byte_seconds: float  # its file's request, to the answer's headers
    file_seconds: float  # its file's request, to the last byte


class TransferChoice:
    """The run's choice, shared by the download workers."""

    def __init__(self, mode: Transfer | str = Transfer.AUTO):
        self.mode = Transfer(mode)
        self._lock = threading.Lock()
        self.fallbacks = 0
        self.switched = False
        self._last = ""
        self._samples: list[NodeSample] = []

    def use_nodes(self) -> bool:
        """Whether the next product starts with the Nodes API."""
        return self.mode is Transfer.NODES or (self.mode is Transfer.AUTO and not self.switched)

    @property
    def falls_back(self) -> bool:
        """Whether a Nodes failure sends the product to its zip (else it fails the geocell)."""
        return self.mode is Transfer.AUTO

    def node_failed(self, file_name: str, why: str) -> None:
        """One product leaves Nodes for its zip; the third switches the rest of the run to zips."""
        with self._lock:
            self.fallbacks += 1
            switch = self.fallbacks >= FALLBACKS_BEFORE_SWITCH and not self.switched
            if switch:
                self.switched = True
            self._last = why
        log.debug("%s: Nodes API failed (%s); fetching the whole zip", file_name, why)
        if switch:
            log.warning("The Nodes API failed for %d products (last: %s); the rest of the run downloads "
                        "whole zips", self.fallbacks, why)

    def node_fetched(self, sample: NodeSample) -> None:
        """One product came through Nodes: after a few, judge whether whole zips are faster here."""
        if self.mode is not Transfer.AUTO or not sample.zip_bytes:
            return
        with self._lock:
            if self.switched:
                return
            self._samples.append(sample)
            if len(self._samples) < SPEED_SAMPLES:
                return
            waiting, spared = nodes_cost(self._samples)
            log.debug("Nodes: %.3f s of waiting a product, %.3f s of transfer spared", waiting, spared)
            if waiting <= SLOWER_BY * spared:
                return
            self.switched = True
        log.info("Whole zips are faster here: a product waits %.2f s on the Nodes API (its listing and its "
                 "file's first byte), more than %g times the %.2f s its smaller file saves; the rest of the run "
                 "downloads whole zips (--transfer nodes keeps the Nodes API)", waiting, SLOWER_BY, spared)

    def report(self) -> None:
        """At the end of a run: the one line about products that fell back, unless the switch said it."""
        with self._lock:
            fallbacks, switched, last = self.fallbacks, self.switched, self._last
        if fallbacks and not switched:
            log.info("%d product(s) were fetched as whole zips: the Nodes API failed for them (last: %s)",
                     fallbacks, last)


def nodes_cost(samples: list[NodeSample]) -> tuple[float, float]:
    """(seconds a product waits on Nodes, seconds of transfer its smaller file spares), on average.

    The wait is what the path in use costs before any byte moves: its listings (one, none, or a
    walk's four) and its file's time to first byte. The spared seconds are the zip's other
    layers at the rate the files' bytes came.
    """
    count = len(samples)
    waiting = sum(s.listing_seconds + s.first_byte_seconds for s in samples) / count
    streaming = sum(max(s.file_seconds - s.first_byte_seconds, 1e-3) for s in samples)
    rate = sum(s.dem_bytes for s in samples) / streaming
    spared = sum(max(s.zip_bytes - s.dem_bytes, 0) for s in samples) / count / rate
    return waiting, spared
