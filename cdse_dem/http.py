"""HTTP to CDSE: the three service addresses, the pooled session and its retries.

The three CDSE service addresses, real by default, overridable by environment.

CDSE's two download hosts (and the configured one, e.g. a local simulator) are the only
ones that ever receive the access token (``token_hosts``, used by ``http.DownloadToken``);
the token URL receives the credentials.

How long the download loop waits before trying CDSE again.

The identity and catalogue requests are retried by urllib3 (``http.ServiceRetry``); the download
keeps a loop of its own (checksums, token refresh and cancellation need it), which backs off in
the same spirit: exponential, capped, with jitter (many workers retrying in step would hit the
4-connection quota together), and ``Retry-After`` honoured when the server sends it, up to 60 s
(both loops read it with :func:`retry_after`).

One HTTP connection pool per run, shared by catalogue, identity and download calls.

A pool sized to the worker count lets every download worker keep its connection alive
between products (the reference tool opened a new session per file).

requests, left to itself, adds HTTP Basic from ``~/.netrc`` to every request made without
explicit auth, and again after every redirect: a ``default`` line for some other service
would replace the download's Bearer token and send that password to the catalogue, the
download host and any host a page links to. So our session does not trust the environment
(``trust_env = False``) and takes back from it only what a user sets on purpose: the proxies
(``HTTPS_PROXY``, ``NO_PROXY``, ...) and the CA bundle (``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE``). ``.netrc`` is read by our own code, for the identity host only
(credentials.py). Every request carries only the credentials we put there: the access token
is added by :class:`DownloadToken`, for CDSE's download hosts only.

Retries of the identity and catalogue requests are declared, not written: the session mounts
an adapter with a :class:`ServiceRetry` (urllib3's ``Retry``) on the token URL and on the
catalogue URL, which retries what a request can fail by (no connection, a timeout, 429,
5xx), waits as the server asks (``Retry-After``, capped) or backs off with jitter, and logs
one line per retry. What is wrong with a whole answer (a page that is not JSON) is the
caller's to judge. The download keeps a loop of its own (download.py): checksums, token
refresh and cancellation need it. The waits can be replaced (tests) and cut short by a stop
event, for the requests made inside :func:`retry_waits`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from copy import copy
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from requests.utils import get_environ_proxies
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationParseError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.poolmanager import pool_classes_by_scheme
from urllib3.util import parse_url
from urllib3.util.retry import RequestHistory, Retry

from cdse_dem import __version__
from cdse_dem.errors import Interrupted

DEFAULT_TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
DEFAULT_CATALOGUE_URL = "https://catalogue.dataspace.copernicus.eu/odata/v1"
# Where CDSE's documentation and its own browser download, and where the catalogue's 301 points.
DEFAULT_DOWNLOAD_URL = "https://download.dataspace.copernicus.eu/odata/v1"
# CDSE's download hosts: the only hosts, with the configured one, the token may go to.
CDSE_DOWNLOAD_HOSTS = ("https://download.dataspace.copernicus.eu", "https://zipper.dataspace.copernicus.eu")


@dataclass(frozen=True)
class Endpoints:
    token_url: str = DEFAULT_TOKEN_URL
    catalogue_url: str = DEFAULT_CATALOGUE_URL
    download_url: str = DEFAULT_DOWNLOAD_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Endpoints:
        env = os.environ if environ is None else environ
        return cls(
            token_url=env.get("CDSE_TOKEN_URL") or DEFAULT_TOKEN_URL,
            catalogue_url=(env.get("CDSE_CATALOGUE_URL") or DEFAULT_CATALOGUE_URL).rstrip("/"),
            download_url=(env.get("CDSE_DOWNLOAD_URL") or DEFAULT_DOWNLOAD_URL).rstrip("/"),
        )

    def product_url(self, product_id: str) -> str:
        """Where a product's bytes are fetched: the download host, never the catalogue."""
        return f"{self.download_url}/Products({product_id})/$value"

    @property
    def identity_host(self) -> str:
        """The identity service's host name: what stored and ``~/.netrc`` credentials are kept under."""
        return urlsplit(self.token_url).hostname or ""

    @property
    def token_hosts(self) -> tuple[str, ...]:
        """Where the access token may go: the configured download host and CDSE's two
        (``http.DownloadToken`` adds it for these hosts only)."""
        return (self.download_url, *CDSE_DOWNLOAD_HOSTS)


def origin_text(url: str) -> str:
    """``scheme://host:port`` of ``url``, to name a host in a message (never its path or query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"[:100] if parts.netloc else url[:100]


def origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of ``url``, the default port filled in, as the HTTP library will connect;
    None for a URL that names no host of ours.

    Python's ``urlsplit`` and urllib3 (which requests connects with) read some URLs differently:
    in ``http://OTHER\\@download.host/...`` the first sees the download host, the second connects
    to OTHER. So a URL with a backslash, userinfo (``user@``), a control character or a space,
    a malformed port, or a host the two parsers do not agree on, names no host at all here.
    """
    if not isinstance(url, str) or "\\" in url or any(c <= " " or c == "\x7f" for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
        connects_to = parse_url(url)
    except (ValueError, LocationParseError):
        return None
    host = (parts.hostname or "").lower()
    if "@" in parts.netloc or connects_to.auth is not None or (connects_to.host or "").strip("[]").lower() != host:
        return None
    return parts.scheme, host, port or {"http": 80, "https": 443}.get(parts.scheme)


def origins(urls: Iterable[str]) -> frozenset[tuple[str, str, int | None]]:
    """The origins of ``urls`` that name a host (:func:`origin`): the hosts a token may go to, or
    whose connections a stop cuts, compared as the HTTP library connects."""
    return frozenset(o for o in map(origin, urls) if o is not None and o[1])


MAX_RETRY_AFTER = 60.0  # honour Retry-After, but never stall a run on one absurd value


def wait_for(delay: float, server_wait: float | None) -> float:
    """The backoff ``delay``, or longer when the server asked for it (``Retry-After``), capped."""
    return max(delay, min(server_wait or 0.0, MAX_RETRY_AFTER))


@dataclass(frozen=True)
class Backoff:
    """``attempts`` tries in all; the wait before try n+1 is random in [base·2^n·(1-jitter), base·2^n], capped."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delays(self) -> Iterator[float]:
        """The waits between tries: ``attempts - 1`` of them."""
        for n in range(max(self.attempts - 1, 0)):
            ceiling = min(self.cap, self.base * (2**n))
            yield ceiling * (1 - self.jitter * self.rng.random())


def retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait (``Retry-After``: seconds or an HTTP date), if any."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


USER_AGENT = f"cdse-copernicus-dem-downloader/{__version__}"

# The retry policy of the identity and catalogue requests: 6 tries in all; waits of 0, 1, 2, 4
# and 8 s between them, each lengthened by up to 0.5 s at random (many workers retrying in step
# would hit CDSE together), or as long as ``Retry-After`` asks, up to 60 s.
ATTEMPTS = 6
BACKOFF_FACTOR = 0.5
BACKOFF_MAX = 30.0
BACKOFF_JITTER = 0.5
RETRY_STATUSES = frozenset({429, *range(500, 600)})

_identity_log = logging.getLogger("cdse_dem.session")
_catalogue_log = logging.getLogger("cdse_dem.catalogue")


class RetryCancelled(Interrupted):
    """The run was asked to stop while it waited to try a service again: no further request is sent."""


# --- waits ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Waits:
    sleep: Callable[[float], None] | None = None
    stop: threading.Event | None = None


_WAITS: ContextVar[_Waits | None] = ContextVar("cdse_dem_retry_waits", default=None)


@contextmanager
def retry_waits(*, sleep: Callable[[float], None] | None = None,
                stop: threading.Event | None = None) -> Iterator[None]:
    """The retry waits of the requests made in this block (in this thread): ``sleep(seconds)``
    instead of waiting (a test's fake), and ended by ``stop`` (RetryCancelled).

    requests gives no way to hand a request its own retry settings: the adapter's policy is
    shared by every thread, while a stop event belongs to one search or one login.
    """
    token = _WAITS.set(_Waits(sleep, stop))
    try:
        yield
    finally:
        _WAITS.reset(token)


def pause(seconds: float, stop: threading.Event | None) -> None:
    """Wait ``seconds``, less when ``stop`` is set meanwhile."""
    if stop is None:
        time.sleep(seconds)
    else:
        stop.wait(seconds)


# --- the retry policy ----------------------------------------------------------------------------

Announce = Callable[[RequestHistory, float], None]


class ServiceRetry(Retry):
    """urllib3's Retry, with what CDSE needs on top.

    - ``Retry-After`` is read as seconds (fractions too) or an HTTP date; one it cannot read is
      ignored (urllib3 would raise), and it is honoured up to ``retry_after_max`` (60 s: never stall
      a run on one absurd value) but never shortens the backoff;
    - ``announce(last, seconds)`` is told of every retry before its wait (the log line);
    - the wait is the ``sleep`` of :func:`retry_waits` around the request when it gives one
      (tests), else a wait that its ``stop`` event ends early: then RetryCancelled, and no
      further request. (The policy is the adapter's, shared by every thread of the run; the
      stop and the sleep belong to one search or one login, so they come with the request.)
    """

    def __init__(self, *args, announce: Announce | None = None, **kwargs) -> None:
        kwargs.setdefault("retry_after_max", MAX_RETRY_AFTER)
        super().__init__(*args, **kwargs)
        self.announce = announce

    def new(self, **kw) -> ServiceRetry:
        retry = super().new(**kw)
        retry.announce = self.announce
        return retry

    @property
    def tries(self) -> int:
        """Requests made so far by this state of the policy (1 before any retry)."""
        return len(self.history) + 1

    def get_retry_after(self, response) -> float | None:
        seconds = retry_after(response.headers)
        return None if seconds is None else min(seconds, float(self.retry_after_max))

    def sleep(self, response=None) -> None:
        seconds = self.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            seconds = max(seconds, self.get_retry_after(response) or 0.0)
        waits = _WAITS.get() or _Waits()
        self._raise_if_stopped(waits.stop)
        if self.announce is not None and self.history:
            self.announce(self.history[-1], seconds)
        if waits.sleep is not None:
            waits.sleep(seconds)
        else:
            pause(seconds, waits.stop)
        self._raise_if_stopped(waits.stop)

    @staticmethod
    def _raise_if_stopped(stop: threading.Event | None) -> None:
        if stop is not None and stop.is_set():
            raise RetryCancelled("stopped while waiting to try again")


def service_retry(methods: Iterable[str], announce: Announce | None = None) -> ServiceRetry:
    """The policy of one service: ``ATTEMPTS`` tries of ``methods`` requests in all.

    The last answer of a service that stays in error (429, 5xx) is handed back rather than
    raised (``raise_on_status=False``), so that the caller can say what it was.
    """
    return ServiceRetry(total=ATTEMPTS - 1, allowed_methods=frozenset(methods), status_forcelist=RETRY_STATUSES,
                        backoff_factor=BACKOFF_FACTOR, backoff_max=BACKOFF_MAX, backoff_jitter=BACKOFF_JITTER,
                        raise_on_status=False, announce=announce)


def identity_retry(token_url: str) -> ServiceRetry:
    """Token requests (POST) are retried: a grant only issues tokens, so trying it again is safe
    (a password grant whose answer was lost opens one more CDSE session at worst, which ends with
    its refresh window). The logout URL is not under this policy: a logout is never repeated."""
    host = urlsplit(token_url).netloc or token_url  # as the session's own messages name it

    def announce(last: RequestHistory, seconds: float) -> None:
        _identity_log.warning("Identity service at %s: %s; trying again in %.1f s", host, identity_problem(last),
                              seconds)

    return service_retry(("POST",), announce)


def catalogue_retry() -> ServiceRetry:
    """Catalogue searches (GET) are retried; a page that is not JSON is retried by the catalogue
    itself (catalogue.py), under this same policy."""
    def announce(last: RequestHistory, seconds: float) -> None:
        _catalogue_log.warning("CDSE catalogue gave %s; retrying in %.1f s", catalogue_problem(last), seconds)

    return service_retry(("GET",), announce)


def failure(exc: BaseException) -> BaseException:
    """The urllib3 error inside a requests exception (what a request failed by), else ``exc``."""
    inner = exc.args[0] if isinstance(exc, requests.RequestException) and exc.args else exc
    if isinstance(inner, MaxRetryError) and inner.reason is not None:
        return inner.reason
    return inner if isinstance(inner, BaseException) else exc


def gave_up(exc: BaseException) -> bool:
    """True when ``exc`` (a requests exception) ends a request whose retries are spent."""
    return bool(exc.args) and isinstance(exc.args[0], MaxRetryError)


def tries_of(reply) -> int:
    """Requests made for the answer ``reply`` (1 when the adapter retried nothing, or is not ours)."""
    retries = getattr(getattr(reply, "raw", None), "retries", None)
    return retries.tries if isinstance(retries, ServiceRetry) else 1


def is_timeout(error: BaseException) -> bool:
    """True for a connect or read timeout (not for a refused connection)."""
    if isinstance(error, NewConnectionError):  # a refused connection is a ConnectTimeoutError to urllib3
        return False
    return isinstance(error, (ReadTimeoutError, ConnectTimeoutError, requests.Timeout, TimeoutError))


def identity_problem(last: RequestHistory | BaseException) -> str:
    """What an identity request failed by, as the log and the final error say it."""
    if isinstance(last, RequestHistory):
        if last.error is None:
            return f"HTTP {last.status}"
        last = last.error
    return "timed out" if is_timeout(failure(last)) else "cannot connect"


def catalogue_problem(last: RequestHistory | BaseException) -> str:
    """What a catalogue request failed by, as the log and the final error say it."""
    if isinstance(last, RequestHistory):
        if last.error is None:
            return f"HTTP {last.status}"
        last = last.error
    if isinstance(last, BadAnswer):
        return str(last)
    error = failure(last)
    if is_timeout(error):
        name = "ConnectTimeout" if isinstance(error, ConnectTimeoutError) else "ReadTimeout"
    else:
        name = "ConnectionError"
    return f"no answer ({name})"


class BadAnswer(Exception):
    """A whole answer that is not what was asked for (a page that is not JSON): tried again."""


# --- the token -----------------------------------------------------------------------------------

class DownloadToken(AuthBase):
    """``Authorization: Bearer <token>`` on requests to CDSE's download hosts, and on no other.

    The hosts are CDSE's two download hosts and the configured one (``Endpoints.token_hosts``):
    a request to any other host goes without the header, removed if something had put it there.
    The download follows redirects itself, one request per hop through this auth (``allows``
    decides whether a hop is made at all), so a redirect between download hosts carries the
    token and none leaves them.
    """

    def __init__(self, hosts: Iterable[str], token: str = "") -> None:
        self.hosts = origins(hosts)
        self.token = token

    def bearing(self, token: str) -> DownloadToken:
        """The same hosts, with ``token`` (the session's current one, for one request)."""
        auth = copy(self)
        auth.token = token
        return auth

    def allows(self, url: str) -> bool:
        """True when ``url`` is on one of the hosts the token may go to (scheme, host and port)."""
        here = origin(url)
        return here is not None and here in self.hosts

    def __call__(self, request):
        if self.token and self.allows(request.url):
            request.headers["Authorization"] = f"Bearer {self.token}"
        else:
            request.headers.pop("Authorization", None)
        return request

    def __repr__(self) -> str:  # never the token
        return f"DownloadToken({sorted(f'{s}://{h}:{p}' for s, h, p in self.hosts)})"


# --- the session ---------------------------------------------------------------------------------

def shut(sock) -> None:
    """Shut a socket down both ways: a read blocked on it returns at once, in whichever thread.

    The plain socket's shutdown, also for TLS: ``SSLSocket.shutdown`` would first drop the TLS
    object that the blocked read is using, and that read would then fail in ways no caller
    expects instead of meeting the end of the stream.
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass  # closed already, or never connected


class _LendingPool:
    """A connection pool that knows the connections it has lent out, so that they can be cut."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lent: weakref.WeakSet = weakref.WeakSet()  # a connection dropped on error simply vanishes

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        self.lent.add(conn)
        return conn

    def _put_conn(self, conn) -> None:
        if conn is not None:
            self.lent.discard(conn)
        super()._put_conn(conn)

    def cut(self) -> None:
        for conn in list(self.lent):
            if getattr(conn, "sock", None) is not None:
                shut(conn.sock)


class _HTTPPool(_LendingPool, HTTPConnectionPool):
    pass


class _HTTPSPool(_LendingPool, HTTPSConnectionPool):
    pass


_LENDING_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    """requests' adapter, its pools able to :meth:`cut` the connections in use (a SOCKS proxy's are
    left as they are: their pools are of another kind)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _LENDING_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is pool_classes_by_scheme:  # an HTTP proxy: urllib3's own pools
            manager.pool_classes_by_scheme = _LENDING_POOLS
        return manager

    def cut(self, targets: frozenset) -> None:
        """Cut the connections in use of the pools whose origin is one of ``targets``."""
        for manager in (self.poolmanager, *self.proxy_manager.values()):
            for key in manager.pools.keys():
                pool = manager.pools.get(key)
                if isinstance(pool, _LendingPool) and (pool.scheme, (pool.host or "").lower(), pool.port) in targets:
                    pool.cut()


class NoNetrcSession(requests.Session):
    """A requests Session with the environment's proxies and CA bundle, never its ``.netrc``; its
    connections in use can be cut (:meth:`cut`)."""

    def __init__(self, pool_size: int = 4):
        super().__init__()
        self.trust_env = False
        self.pool_size = max(pool_size, 4)

    def cut(self, hosts: Iterable[str]) -> None:
        """Shut down the connection of every request under way to ``hosts`` (URLs of the hosts):
        each ends at once with a ConnectionError, however long its server has been silent. What
        ends a run now (a stop, the time budget) must not wait for a timeout."""
        targets = origins(hosts)
        for adapter in dict.fromkeys(self.adapters.values()):  # one adapter may serve several prefixes
            if isinstance(adapter, _Adapter):
                adapter.cut(targets)

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        proxies = dict(proxies or {})
        for scheme, proxy in get_environ_proxies(url, no_proxy=proxies.get("no_proxy")).items():
            proxies.setdefault(scheme, proxy)
        if verify is True or verify is None:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


def new_http_session(pool_size: int = 4, endpoints: Endpoints | None = None) -> NoNetrcSession:
    """A pooled session; with ``endpoints``, identity and catalogue requests are retried by their
    policies (mounted here, once: mounting on a session other threads use is not safe)."""
    session = NoNetrcSession(pool_size)
    session.headers["User-Agent"] = USER_AGENT
    adapter = _Adapter(pool_connections=4, pool_maxsize=session.pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if endpoints is not None:
        session.mount(f"{endpoints.catalogue_url}/", _Adapter(
            pool_connections=2, pool_maxsize=session.pool_size, max_retries=catalogue_retry()))
        session.mount(endpoints.token_url, _Adapter(
            pool_connections=1, pool_maxsize=4, max_retries=identity_retry(endpoints.token_url)))
    return session
