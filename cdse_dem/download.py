"""Downloading one product zip, verified as it arrives, retried when the network misbehaves.

The bytes come straight from the download host (the catalogue's redirect would strip the
token, and a token must never reach any other host), in 1 MiB chunks written to a temporary
file in the destination folder while MD5 (and BLAKE3 when the catalogue gives it) and the
length are computed on the fly: memory stays flat whatever the size, and a product is never
read twice. A body that is short, long or altered is thrown away and fetched again from zero
(CDSE serves no ``Range``). Only a 200 answer is ever written: an error body never becomes a
"zip". Failures that another try can cure (dropped connections, timeouts, 429, 5xx, a bad
checksum) are retried with the shared :class:`~cdse_dem.retry.Backoff`; those it cannot (no
CCM access, a refused token, 404) end at once with one line saying what to do.

The same loop (:func:`fetch_file`, :func:`get_json`) serves the single files and listings of
the Nodes API (:mod:`cdse_dem.nodes`), with a length but no checksum to verify as bytes arrive.

A ``stop`` event aborts promptly even in the middle of a stalled body: a small watcher shuts
the socket down, which wakes the blocked read at once (checking between 1 MiB chunks alone
would wait for the next chunk, or for the read timeout).
"""

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cdse_dem.errors import EXIT_INTERRUPTED, AccessDenied, BudgetExhausted, DemError
from cdse_dem.fsutil import create_temp_in, raise_if_disk_full, remove_quietly
from cdse_dem.retry import Backoff, retry_after, wait_for

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024
MAX_JSON_BYTES = 4 * 1024 * 1024  # a Nodes listing is a few kB; more is not a listing
_WATCH_INTERVAL = 0.2  # seconds; how late the stop watcher may notice a stop
# Retry-After is honoured up to this (as the session does): an absurd value must not park a
# worker past the run's budget; coming back early only costs another 429, and tries are bounded.

CCM_DENIED = (
    "CDSE refuses this account the CCM data (403 DAT-ZIP-608): enable Copernicus Contributing "
    "Missions (CCM) access and accept the CCM licence on your CDSE profile "
    "(https://dataspace.copernicus.eu), or try --collection COP-DEM"
)
AUDIENCE_DENIED = (
    "CDSE refuses this access token for downloads (401 DAT-ZIP-609, token audience not allowed): "
    "use the credentials of a CDSE account, not those of a Sentinel Hub client"
)


class DownloadFailed(DemError):
    """One product could not be downloaded (after retries, or refused for good); others may go on."""


class DownloadCancelled(DemError):
    """The run was asked to stop (Ctrl-C) while this product was being fetched."""

    exit_status = EXIT_INTERRUPTED


@dataclass
class DownloadResult:
    product_id: str
    zip_path: Path  # a verified zip under a temporary name in dest_dir: the caller extracts then deletes it
    bytes: int
    attempts: int  # requests made, the one that succeeded included
    seconds: float


class _Retry(Exception):
    """A failure another try may cure; ``wait`` is the least the server asked us to wait."""

    def __init__(self, problem: str, wait: float | None = None):
        super().__init__(problem)
        self.problem, self.wait = problem, wait


class _TokenRefused(Exception):
    """A 401 other than DAT-ZIP-609: the token may have expired; refresh and try again once."""


def download_product(product, dest_dir: Path, session, http, endpoints, *,
                     backoff: Backoff | None = None, on_bytes: Callable[[int], None] | None = None,
                     stop: threading.Event | None = None,
                     timeout: tuple[float, float] = (10, 60), slot=None) -> DownloadResult:
    """Fetch ``product``'s zip into ``dest_dir`` (verified) and say where it is.

    ``on_bytes`` is told of every chunk written; when a try fails after some bytes, it gets
    one negative call taking them back, so a progress total stays true across retries.
    Raises AccessDenied (no CCM access, token audience), BudgetExhausted (no time left to
    start), DownloadCancelled (``stop`` set), DiskFull, or DownloadFailed; the temporary
    file is removed in every such case.
    """
    label = f"{product.name} ({product.id})" if product.name else product.id
    expect = Expected(product.content_length, product.md5, product.blake3)
    fetched = fetch_file(endpoints.product_url(product.id), Path(dest_dir), f"{product.id}.zip", session, http,
                         endpoints, label=label, expect=expect, backoff=backoff, on_bytes=on_bytes, stop=stop,
                         timeout=timeout, slot=slot)
    return DownloadResult(product.id, fetched.path, fetched.bytes, fetched.attempts, fetched.seconds)


@dataclass(frozen=True)
class Expected:
    """What a body must be, as far as it is known before it arrives: length and digests."""

    length: int | None = None
    md5: str | None = None
    blake3: str | None = None


@dataclass
class Fetched:
    path: Path  # under a temporary name in the destination folder: the caller renames or deletes it
    bytes: int
    attempts: int  # requests made, the one that succeeded included
    seconds: float
    request_seconds: float = 0.0  # the request that succeeded, from its slot to its last byte


def fetch_file(url: str, dest_dir: Path, final_name: str, session, http, endpoints, *, label: str,
               expect: Expected | None = None, backoff: Backoff | None = None,
               on_bytes: Callable[[int], None] | None = None, stop: threading.Event | None = None,
               timeout: tuple[float, float] = (10, 60), first: bool = True, durable: bool = False,
               slot=None) -> Fetched:
    """Stream ``url`` from the download host into a temporary for ``final_name`` in ``dest_dir``.

    The one download loop of the tool (whole zips and single node files): the token, its
    refresh on a 401, retries with backoff, ``stop``, progress and the length and digests of
    ``expect`` checked as bytes arrive. ``first`` (the first request for a geocell) makes a
    spent time budget refuse to start; ``durable`` fsyncs the file (it is to be renamed into
    place, not unpacked); ``slot`` (a semaphore of the account's connections) is held for each
    request, never during the waits between tries. Raises as :func:`download_product` does.
    """
    expect = expect or Expected()

    def receive(reply, label):
        return _receive(reply, expect, Path(dest_dir), final_name, on_bytes, stop, label, durable)

    began = time.monotonic()
    (path, size), attempts, request = _with_retries(url, session, http, endpoints, receive, label=label,
                                                    backoff=backoff, stop=stop, timeout=timeout, first=first,
                                                    slot=slot)
    return Fetched(path, size, attempts, time.monotonic() - began, request)


def get_json(url: str, session, http, endpoints, *, label: str, backoff: Backoff | None = None,
             stop: threading.Event | None = None, timeout: tuple[float, float] = (10, 60),
             first: bool = False, max_bytes: int = MAX_JSON_BYTES, slot=None):
    """A small JSON answer of the download host (a Nodes listing), with the same token,
    retries and stop handling as a download, and how long its request took (slot waits
    excluded). A body that is not JSON raises DownloadFailed."""
    def receive(reply, label):
        return _read_json(reply, max_bytes, stop, label)

    body, _, seconds = _with_retries(url, session, http, endpoints, receive, label=label, backoff=backoff,
                                     stop=stop, timeout=timeout, first=first, slot=slot)
    return body, seconds


def _with_retries(url, session, http, endpoints, receive, *, label, backoff, stop, timeout, first, slot=None):
    """Requests ``url`` until ``receive`` accepts a 200 answer.

    Returns its result, the requests made, and the seconds of the one that succeeded."""
    backoff = backoff or Backoff()
    if not endpoints.is_download_host(url):  # the token goes to the download host only
        raise DownloadFailed(f"refusing to send the access token to {_origin(url)} (not the download host)")
    delays = backoff.delays()
    requests_made = 0
    tries = 0  # failures counted against the backoff: a 401 refresh is not one
    after_refresh = False
    while True:
        _raise_if_stopped(stop, label)
        if first and requests_made == 0 and not session.may_start():
            raise BudgetExhausted(f"the time budget is spent: {label} not started")
        requests_made += 1
        try:
            with slot if slot is not None else nullcontext():
                _raise_if_stopped(stop, label)
                token = session.access_token()
                sent = time.monotonic()
                result = _attempt(url, token, http, receive, stop, timeout, label)
                seconds = time.monotonic() - sent
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
        return result, requests_made, seconds


def _attempt(url, token, http, receive, stop, timeout, label):
    """One GET: what ``receive`` makes of a 200 answer, else the exception that says what to do next."""
    import requests

    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    try:
        reply = http.get(url, headers=headers, stream=True, allow_redirects=False, timeout=timeout)
    except (requests.Timeout, requests.ConnectionError) as exc:
        _raise_if_stopped(stop, label)
        raise _Retry(f"no answer from the download host ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise DownloadFailed(f"cannot request {label}: {exc}") from None
    with reply:
        status = reply.status_code
        if status == 200:
            return receive(reply, label)
        code, message = _error_body(reply, stop, label)
        detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if 300 <= status < 400:
            where = _origin(reply.headers.get("Location") or "")
            raise DownloadFailed(f"the download host redirected {label} to {where or 'elsewhere'};"
                                 " not followed, so that the access token stays on the download host")
        if status == 401:
            if code == "DAT-ZIP-609":
                raise AccessDenied(AUDIENCE_DENIED)
            raise _TokenRefused(detail)
        if status == 403 and code == "DAT-ZIP-608":
            raise AccessDenied(CCM_DENIED)
        if status == 429 or status >= 500:
            raise _Retry(detail, retry_after(reply.headers))
        raise DownloadFailed(f"CDSE refused {label}: {detail}")


def _receive(reply, expect: Expected, dest_dir: Path, final_name: str, on_bytes, stop,
             label, durable: bool = False) -> tuple[Path, int]:
    """Stream a 200 body into a temporary file, checking length and checksums as bytes arrive."""
    import requests

    expected = expect.length
    announced = _int_or_none(reply.headers.get("Content-Length"))
    encoded = reply.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    if announced is not None and not encoded:
        if expected is not None and announced != expected:
            raise _Retry(f"the server announces {announced} bytes, {expected} are expected")
        expected = announced
    md5 = hashlib.md5(usedforsecurity=False) if expect.md5 else None
    b3 = _blake3() if expect.blake3 else None

    temp, handle = create_temp_in(dest_dir, final_name)
    received = reported = 0
    watcher = _StopWatcher(stop, reply) if stop is not None else None
    ok = False
    try:
        with handle:
            for chunk in reply.iter_content(CHUNK):
                if stop is not None and stop.is_set():
                    raise DownloadCancelled(f"download of {label} cancelled")
                handle.write(chunk)
                received += len(chunk)
                if md5 is not None:
                    md5.update(chunk)
                if b3 is not None:
                    b3.update(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                    reported += len(chunk)
                if expected is not None and received > expected:
                    raise _Retry(f"more than the {expected} bytes announced")
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if watcher is not None and watcher.fired:  # the body was cut short by us, whatever it looks like
            raise DownloadCancelled(f"download of {label} cancelled")
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
        raise _Retry(f"connection dropped during the body ({type(exc).__name__})") from None
    except OSError as exc:  # writing the temporary file
        _raise_if_stopped(stop, label)
        raise_if_disk_full(exc, dest_dir)
        raise DownloadFailed(f"cannot write {temp}: {exc.strerror or exc}") from exc
    finally:
        if watcher is not None:
            watcher.close()
        if not ok:
            remove_quietly(temp)
            if reported and on_bytes is not None:
                on_bytes(-reported)


def _read_json(reply, max_bytes: int, stop, label):
    """A whole, bounded JSON body; a cut one is retried, one that is not JSON is refused."""
    import json

    import requests

    watcher = _StopWatcher(stop, reply) if stop is not None else None
    raw = bytearray()
    try:
        for chunk in reply.iter_content(64 * 1024):
            raw += chunk
            if len(raw) > max_bytes:
                break
        if watcher is not None and watcher.fired:
            raise DownloadCancelled(f"download of {label} cancelled")
        announced = _int_or_none(reply.headers.get("Content-Length"))
        if announced is not None and len(raw) < announced:
            raise _Retry(f"connection dropped after {len(raw)} of {announced} bytes")
    except (requests.RequestException, ConnectionError, TimeoutError) as exc:
        _raise_if_stopped(stop, label)
        raise _Retry(f"connection dropped during the answer ({type(exc).__name__})") from None
    finally:
        if watcher is not None:
            watcher.close()
    if len(raw) > max_bytes:
        raise DownloadFailed(f"{label}: the answer is larger than {max_bytes:,} bytes")
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        text = " ".join(bytes(raw).decode("utf-8", "replace").split())[:80]
        raise DownloadFailed(f"{label}: the answer is not JSON ({text!r})") from None


def _error_body(reply, stop, label) -> tuple[str | None, str | None]:
    """The ``code`` and ``message`` of CDSE's JSON error body (read, bounded, never saved)."""
    import json

    import requests

    try:
        raw = reply.raw.read(_MAX_ERROR_BODY, decode_content=True) or b""
    except (requests.RequestException, OSError, ValueError):
        _raise_if_stopped(stop, label)
        return None, None
    try:
        body = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        text = " ".join(raw.decode("utf-8", "replace").split())[:200]
        return None, text or None
    if not isinstance(body, dict):
        return None, None
    code, message = body.get("code"), body.get("message") or body.get("detail")
    return (str(code) if code else None), (" ".join(str(message).split())[:300] if message else None)


class _StopWatcher:
    """Shuts the response's socket down when ``stop`` is set, waking a read blocked on a stalled body."""

    def __init__(self, stop: threading.Event, reply):
        self._stop, self._reply = stop, reply
        self._done = threading.Event()
        self._lock = threading.Lock()
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="download-stop-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            if self._stop.wait(_WATCH_INTERVAL):
                with self._lock:
                    if not self._done.is_set():
                        self.fired = True
                        _interrupt(self._reply)
                return

    def close(self) -> None:
        with self._lock:  # after this, the watcher can no longer touch the (maybe pooled) connection
            self._done.set()


def _interrupt(reply) -> None:
    connection = getattr(reply.raw, "connection", None) or getattr(reply.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _raise_if_stopped(stop: threading.Event | None, label: str) -> None:
    if stop is not None and stop.is_set():
        raise DownloadCancelled(f"download of {label} cancelled")


def _pause(seconds: float, stop: threading.Event | None, label: str) -> None:
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise DownloadCancelled(f"download of {label} cancelled")


def _blake3():
    from blake3 import blake3

    return blake3()


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url
