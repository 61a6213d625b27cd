"""The CDSE login shared by every download worker: one login, tokens renewed on time, a budget.

CDSE (Keycloak) gives an access token for ``expires_in`` seconds (600) and lets it be
refreshed for ``refresh_expires_in`` seconds after the login (3600). Each login opens a
session and an account may hold 100, so the tool logs in once per run, not per download.
The guide promises "at most 60 minutes of work", which the refresh window enforces by
itself; ``--max-minutes`` bounds the work too, and ``--max-minutes 0`` lifts both limits by
logging in again (with the same credentials) each time the refresh window closes. The rules of
that time budget are a small object of their own (:class:`Budget`), which the session feeds
with its tokens.

Token requests are retried by the HTTP session (``http.identity_retry``: 429, 5xx, no
connection, a timeout), one log line per retry; what is left here is one request and what its
answer means.

Every run that logged in logs out at its end (Keycloak's logout end point with the refresh
token), whatever the end, so a chain of short runs never piles up the account's sessions.
With two-factor login (``CDSE_TOTP``) a code is sent once only: a second login in the same
run asks for a fresh code on the terminal, or stops the run (budget) when there is none.

Thread safety: the current tokens live in one immutable record that is replaced, never
mutated, so a worker with a valid token reads it without a lock. Renewing takes the lock;
workers arriving meanwhile wait on it and reuse the new token, so one request to the
identity service is in flight however many workers ask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from cdse_dem.errors import AuthRejected, BudgetExhausted, ServiceError
from cdse_dem.fsutil import parse_json
from cdse_dem.http import (
    ATTEMPTS,
    RETRY_STATUSES,
    gave_up,
    identity_problem,
    new_http_session,
    origin_text,
    retry_waits,
    tries_of,
)
from cdse_dem.logs import remember, scrub

log = logging.getLogger(__name__)


CLIENT_ID = "cdse-public"
REJECTED_MESSAGE = "CDSE rejected the user name or password"
DEFAULT_TIMEOUT = (10.0, 30.0)  # (connect, read) seconds for every identity request
STILL_VALID_MESSAGE = "Token is still valid, within its 10 minutes period"
LOGOUT_TIMEOUT = (5.0, 5.0)  # a logout is a courtesy to the account: it must never hold a run's end up long
TOTP_NEEDED = ("a new login needs a fresh two-factor code, and the one in CDSE_TOTP was used already "
               "(no terminal to ask for another)")


def logout_url(token_url: str) -> str:
    """Keycloak's logout end point beside its token end point."""
    return token_url.rsplit("/token", 1)[0] + "/logout"


@dataclass(frozen=True)
class Tokens:
    """What one token reply grants, with lifetimes turned into deadlines on the session clock."""

    access: str
    access_expiry: float
    lifetime: float
    refresh: str | None
    refresh_expiry: float | None  # None: the identity service set no refresh window

    @property
    def margin(self) -> float:
        """How long before expiry to renew: 30 s of a 10-minute token, less of a short one."""
        return min(30.0, 0.2 * self.lifetime)

    def needs_renewal(self, now: float) -> bool:
        return self.access_expiry - now < self.margin

    def can_refresh(self, now: float) -> bool:
        if not self.refresh:
            return False
        return self.refresh_expiry is None or self.refresh_expiry - now > self.margin

    def window_closes_first(self, now: float) -> bool:
        """True when no refresh will follow this access token: the refresh window closes first."""
        return self.refresh_expiry is not None and self.refresh_expiry <= max(now, self.access_expiry)


def tokens_from_reply(reply: Any, sent_at: float) -> Tokens:
    """The ``Tokens`` in a token endpoint's JSON reply; ValueError names what is missing.

    Lifetimes count from when the request was sent, so that a slow reply errs on the early side.
    """
    if not isinstance(reply, dict):
        raise ValueError("the reply is not a JSON object")
    access = reply.get("access_token")
    if not isinstance(access, str) or not access:
        raise ValueError("the reply has no access_token")
    lifetime = _seconds(reply, "expires_in")
    if lifetime is None or lifetime <= 0:
        raise ValueError("the reply has no usable expires_in")
    refresh = reply.get("refresh_token") if isinstance(reply.get("refresh_token"), str) else None
    window = _seconds(reply, "refresh_expires_in")
    refresh_expiry = sent_at + window if window else None  # 0 or absent: no limit announced
    return Tokens(access, sent_at + lifetime, lifetime, refresh or None, refresh_expiry)


def _seconds(reply: dict, key: str) -> float | None:
    value = reply.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


class Budget:
    """How long a run may go on starting downloads (``--max-minutes``), from its first login.

    With ``max_minutes`` > 0 no new download starts once that many minutes have passed since
    the login, or once the CDSE refresh window closes before the current access token lapses
    (no refresh would follow it), whichever comes first; transfers still running stop at
    ``max_minutes`` (``out_of_time``). With 0 there is no limit: the session logs in again
    whenever the refresh window closes (``logs_in_again``). Once a reason to stop is known it
    stays, and ``may_start`` logs it once.
    """

    def __init__(self, max_minutes: float = 60, clock: Callable[[], float] = time.monotonic):
        if max_minutes < 0:
            raise ValueError("max_minutes must be >= 0")
        self.max_minutes = max_minutes
        self._clock = clock
        self.started: float | None = None
        self._reason: str | None = None
        self._logged = False

    @property
    def logs_in_again(self) -> bool:
        """``--max-minutes 0``: a closed refresh window means a new login, not the end of the run."""
        return self.max_minutes == 0

    def start(self, at: float) -> None:
        """The first login was sent at ``at``: the minutes count from there."""
        if self.started is None:
            self.started = at

    def may_start(self, tokens: Tokens | None) -> bool:
        """Whether a NEW download may start, given the session's current ``tokens``."""
        reason = self._reason
        if reason is None and self.max_minutes > 0:
            now = self._clock()
            if self.started is not None and now - self.started > self.max_minutes * 60:
                reason = f"the time budget of {self.max_minutes:g} minutes is spent"
            elif tokens is not None and tokens.window_closes_first(now):
                reason = "the CDSE refresh window (from the login) is closing"
        if reason is None:
            return True
        if not self._logged:
            self._logged = True
            log.info("No new download starts: %s", reason)
        self._reason = reason
        return False

    def out_of_time(self) -> bool:
        """True once ``max_minutes`` have passed since the login: transfers still running stop too."""
        if self.max_minutes <= 0 or self.started is None:
            return False
        return self._clock() - self.started > self.max_minutes * 60

    def end(self, reason: str) -> None:
        """No new download starts from now on, because of ``reason`` (``may_start`` says it)."""
        self._reason = reason

    def end_now(self, reason: str) -> None:
        """As ``end``, said at once as a warning, unless a reason was known already."""
        if self._reason is None:
            log.warning("No new download starts: %s", reason)
            self._reason, self._logged = reason, True

    @property
    def stop_reason(self) -> str | None:
        """Why no new download starts (for the run's final message), else None."""
        return self._reason


class _Refused(Exception):
    """The identity service answered 4xx to a grant: ``status``, ``error``, ``description``."""

    def __init__(self, status: int, error: str, description: str):
        super().__init__(f"HTTP {status} {error}: {description}".strip())
        self.status, self.error, self.description = status, error, description


class CdseSession:
    """One CDSE login for the whole run, shared by every download worker (thread-safe)."""

    def __init__(self, credentials, endpoints, *, http=None, max_minutes: float = 60,
                 clock: Callable[[], float] = time.monotonic,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
                 sleep: Callable[[float], None] | None = None, stop: threading.Event | None = None,
                 ask_totp: Callable[[], str] | None = None):
        """``http``: the run's HTTP session (``new_http_session(..., endpoints)``, whose identity
        adapter retries token requests); None: one of its own. ``sleep`` replaces the waits
        between those retries (tests); ``stop`` ends them (RetryCancelled)."""
        self.budget = Budget(max_minutes, clock)
        if http is None:
            http = new_http_session(endpoints=endpoints)
            self._owns_http = True
        else:
            self._owns_http = False
        self._http = http
        self._credentials = credentials
        self._token_url = endpoints.token_url
        self._host = urlsplit(self._token_url).netloc or self._token_url
        self._clock = clock
        self._timeout = timeout
        self._sleep = sleep
        self._stop = stop
        self._ask_totp = ask_totp  # a fresh two-factor code from the user; None: nobody to ask
        self._totp_used: set[str] = set()
        self._lock = threading.Lock()
        self._tokens: Tokens | None = None
        self._session_ended: str | None = None
        self.logins = 0
        self.refreshes = 0
        self.logouts = 0

    # --- the contract -------------------------------------------------------------------

    def login(self) -> None:
        """Log in (password grant) unless already done; starts the ``max_minutes`` clock."""
        with self._lock:
            if self._tokens is None:
                self._login_locked()

    def access_token(self) -> str:
        """A valid access token, renewed shortly before it expires; BudgetExhausted when it cannot be."""
        tokens = self._tokens
        if tokens is not None and not tokens.needs_renewal(self._clock()):
            log.debug(STILL_VALID_MESSAGE)
            return tokens.access
        with self._lock:
            tokens = self._tokens
            if tokens is None:
                self._login_locked()
            elif tokens.needs_renewal(self._clock()):
                self._renew_locked(tokens, rejected=False)
            return self._current().access

    def token_rejected(self, token: str) -> str:
        """After a 401 made with ``token``: renew once (shared by every worker that saw it), new token."""
        with self._lock:
            tokens = self._tokens
            if tokens is None:
                self._login_locked()
            elif tokens.access == token:
                self._renew_locked(tokens, rejected=True)
            elif tokens.needs_renewal(self._clock()):
                self._renew_locked(tokens, rejected=False)
            return self._current().access

    def may_start(self) -> bool:
        """Whether a NEW download may start: False once the time budget is spent (:class:`Budget`)."""
        return self.budget.may_start(self._tokens)

    def out_of_time(self) -> bool:
        """True once ``--max-minutes`` have passed since the login: transfers still running stop too."""
        return self.budget.out_of_time()

    def logout(self) -> None:
        """End the CDSE session (frees one of the account's 100); a failure is only a debug line."""
        with self._lock:
            tokens, self._tokens = self._tokens, None
        if tokens is None or not tokens.refresh:
            return
        form = {"client_id": CLIENT_ID, "refresh_token": tokens.refresh}
        try:
            resp = self._http.post(logout_url(self._token_url), data=form, timeout=LOGOUT_TIMEOUT)
        except Exception as exc:  # whatever happens here, the run's outcome stands
            log.debug("Logout from %s failed (%s)", self._host, type(exc).__name__)
            return
        if resp.status_code in (200, 204):
            self.logouts += 1
            log.debug("Logged out from %s", self._host)
        else:
            log.debug("Logout from %s answered HTTP %s", self._host, resp.status_code)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> CdseSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- inside the lock ----------------------------------------------------------------

    def _current(self) -> Tokens:
        assert self._tokens is not None
        return self._tokens

    def _login_locked(self) -> None:
        creds = self._credentials
        form = {"client_id": CLIENT_ID, "grant_type": "password",
                "username": creds.username, "password": creds.password}
        if creds.totp:
            form["totp"] = self._fresh_totp(creds.totp)
        log.info("Getting access token")
        sent_at = self._clock()
        try:
            reply = self._post(form)
        except _Refused as exc:
            if exc.status == 401 or exc.error == "invalid_grant":
                if exc.description in ("", "Invalid user credentials"):
                    raise AuthRejected(REJECTED_MESSAGE) from None
                # "Account disabled", "There are too many sessions": not a typo in the password
                raise AuthRejected(f"CDSE refused the login of {creds.username}: {exc.description}") from None
            raise self._service_error(f"refused the login: {exc}") from None
        self._tokens = self._parse(reply, sent_at)
        self._session_ended = None
        self.logins += 1
        self.budget.start(sent_at)

    def _fresh_totp(self, code: str) -> str:
        """A two-factor code never sent before in this run: the configured one, then typed ones."""
        while code in self._totp_used:
            if self._ask_totp is None:
                self.budget.end_now(TOTP_NEEDED)
                raise BudgetExhausted(f"{TOTP_NEEDED}; a new run with a fresh code resumes the work")
            code = self._ask_totp().strip()
        self._totp_used.add(code)
        return code

    def _refresh_locked(self, tokens: Tokens) -> None:
        form = {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": tokens.refresh or ""}
        sent_at = self._clock()
        reply = self._post(form)
        self._tokens = self._parse(reply, sent_at)
        self.refreshes += 1
        log.info("Token refreshed")

    def _renew_locked(self, tokens: Tokens, *, rejected: bool) -> None:
        """Refresh while the window is open; past it, log in again (no limit) or stop (budget).

        A stopped session still hands out its access token while it is valid, so downloads in
        flight can finish; only a token the server has rejected, or an expired one, ends them.
        """
        now = self._clock()
        reason = self._session_ended  # a refused refresh is not asked again for this session
        if reason is None and tokens.can_refresh(now):
            try:
                self._refresh_locked(tokens)
                return
            except _Refused as exc:
                if exc.status not in (400, 401):
                    raise self._service_error(f"refused to refresh the token: {exc}") from None
                reason = self._session_ended = (
                    f"CDSE ended the session ({exc.description or exc.error or exc.status})")
            except ServiceError:
                if rejected or tokens.access_expiry <= self._clock():
                    raise
                log.warning("Token not refreshed yet; the current one is still valid")
                return
        elif reason is None:
            reason = ("the CDSE refresh window has closed" if tokens.refresh
                      else "CDSE gave no refresh token")
        if self.budget.logs_in_again:
            log.info("Logging in again: %s", reason)
            self._login_locked()
            return
        self.budget.end(reason)
        if not rejected and tokens.access_expiry > self._clock():
            return
        raise BudgetExhausted(f"{reason}; no new download starts, a new run resumes the work")

    # --- HTTP -----------------------------------------------------------------------------

    def _post(self, form: dict[str, str]) -> Any:
        """POST ``form`` to the token URL: the parsed JSON of a 200, ``_Refused`` for a 4xx.

        Unreachable, timed out, 429 and 5xx are retried by the HTTP session's identity adapter;
        what reaches this point once they are spent is a ServiceError naming the identity host.
        Nothing of the form (password, refresh token) or of the reply ever reaches a log line
        or an exception.
        """
        try:
            with retry_waits(sleep=self._sleep, stop=self._stop):
                resp = self._http.post(self._token_url, data=form, timeout=self._timeout,
                                       headers={"Accept": "application/json"}, allow_redirects=False)
        except (requests.ConnectionError, requests.Timeout) as exc:
            tries = ATTEMPTS if gave_up(exc) else 1
            raise self._service_error(f"did not answer usably after {tries} tries ({identity_problem(exc)})") from None
        except requests.RequestException as exc:
            raise self._service_error(f"cannot be asked for a token ({type(exc).__name__})") from None
        status = resp.status_code
        if 300 <= status < 400:  # the form holds the password: it goes to the token URL only
            where = origin_text(resp.headers.get("Location") or "")
            raise self._service_error(f"redirected the login to {where or 'elsewhere'} (HTTP {status});"
                                      " not followed, so that the password goes nowhere else")
        if status == 200:
            try:
                return parse_json(resp.content)
            except ValueError:
                raise self._service_error("answered HTTP 200 without a JSON token") from None
        if status in RETRY_STATUSES:
            raise self._service_error(f"did not answer usably after {tries_of(resp)} tries (HTTP {status})")
        raise _Refused(status, *_error_of(resp))

    def _parse(self, reply: Any, sent_at: float) -> Tokens:

        try:
            tokens = tokens_from_reply(reply, sent_at)
        except ValueError as exc:
            raise self._service_error(f"answered something unusable: {exc}") from None
        remember(tokens.access, tokens.refresh)
        return tokens

    def _service_error(self, what: str) -> ServiceError:
        return ServiceError(f"The CDSE identity service at {self._host} {what}")


def _error_of(resp) -> tuple[str, str]:
    """Keycloak's ``error`` and ``error_description`` of a refusal, when the body has them
    (scrubbed of our secrets: a server may quote the login form back)."""

    try:
        body = parse_json(resp.content)
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error, description = body.get("error"), body.get("error_description")
    return (scrub(error)[:100] if isinstance(error, str) else "",
            scrub(description)[:300] if isinstance(description, str) else "")
