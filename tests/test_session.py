"""The CDSE session against the local simulator: one login, timely refreshes, the budget, failures.

Lifetimes are short (access 2 s, refresh window 6 s, as CDSE's 600 s / 3600 s scaled down),
so the real expiry rules of the simulator are exercised, not a mock of them. The simulator runs
in this process: its request log and our code share ``time.monotonic``.
"""

import itertools
import logging
import threading
import time

import pytest
import requests

from cdse_dem.credentials import Credentials
from cdse_dem.endpoints import Endpoints
from cdse_dem.errors import AuthRejected, BudgetExhausted, CredentialError, ServiceError
from cdse_dem.retry import Backoff
from cdse_dem.session import CdseSession

FAST = {"access_lifetime": 2, "refresh_lifetime": 6}
DEMO = Credentials("demo@example.com", "demo")
QUICK_BACKOFF = Backoff(attempts=3, base=0.01, cap=0.05)
NO_PRODUCT = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def make_sim(make_sim, tmp_path_factory):
    """The shared fixture with a two-cell product list: the session tests need no catalogue,
    and indexing the full real lists would take longer than all of them together."""
    cells = tmp_path_factory.mktemp("cells")
    for name in ("copdem_glo30_cells.txt", "copdem_glo90_cells.txt"):
        (cells / name).write_text("N50_E007\nN50_E008\n")

    def _make(**overrides):
        overrides.setdefault("cells_dir", cells)
        return make_sim(**overrides)

    return _make


def endpoints(sim):
    return Endpoints(token_url=sim.token_url, catalogue_url=sim.catalogue_url, download_url=sim.download_url)


def grants(sim, kind, user=None):
    return [r for r in sim.request_log()
            if r.grant_type == kind and (user is None or r.user == user)]


def probe(sim, token):
    """What the download host says to ``token``: 404 (valid token, no such product) or 401."""
    reply = requests.get(f"{sim.download_url}/Products({NO_PRODUCT})/$value",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return reply.status_code


def sleep_until(moment):
    time.sleep(max(0.0, moment - time.monotonic()))


class FrozenClock:
    """A session clock that moves only when told: the session believes what it is shown."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_token_is_refreshed_before_it_expires(make_sim):
    sim = make_sim(**FAST)
    session = CdseSession(DEMO, endpoints(sim))
    session.login()
    first = session.access_token()
    [login] = grants(sim, "password")

    sleep_until(login.started + 1.0)
    assert session.access_token() == first  # 1 s left of 2: no refresh yet
    assert grants(sim, "refresh_token") == []

    sleep_until(login.started + 1.7)  # less than 20 % of the lifetime left
    second = session.access_token()
    [refresh] = grants(sim, "refresh_token")
    assert second != first
    assert login.started + 1.6 <= refresh.started < login.started + 2.0  # late, yet before it lapsed

    sleep_until(login.started + 2.3)
    assert probe(sim, first) == 401  # the first one has really expired by now...
    assert probe(sim, second) == 404  # ...and its successor is accepted
    session.close()


def test_one_login_and_one_refresh_at_a_time_for_many_threads(make_sim, caplog):
    sim = make_sim(**FAST)
    session = CdseSession(DEMO, endpoints(sim))
    caplog.set_level(logging.DEBUG)
    start = threading.Barrier(16)
    seen, errors = [], []

    def worker():
        start.wait()
        end = time.monotonic() + 3.5
        try:
            while time.monotonic() < end:
                seen.append(session.access_token())
                time.sleep(0.005)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    refreshes = grants(sim, "refresh_token")
    assert errors == []
    assert len(seen) > 1000
    assert len(grants(sim, "password")) == 1  # 16 threads raced for the first token
    assert 1 <= len(refreshes) <= 3  # at ~1.6 s and ~3.2 s, not once per thread
    assert len(set(seen)) == 1 + len(refreshes)  # every renewal was shared
    ordered = sorted(refreshes, key=lambda r: r.started)
    assert all(a.finished <= b.started for a, b in itertools.pairwise(ordered))
    assert all(r.status == 200 for r in refreshes)
    assert probe(sim, session.access_token()) == 404

    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("Getting access token") == 1
    assert messages.count("Token refreshed") == len(refreshes)
    assert "Token is still valid, within its 10 minutes period" in messages
    assert all(r.levelno <= logging.DEBUG for r in caplog.records if "still valid" in r.getMessage())
    for secret in {*seen, DEMO.password}:
        assert secret not in caplog.text


def test_refresh_window_bounds_the_default_budget_and_zero_logs_in_again(make_sim):
    from simulator import User

    sim = make_sim(users=[User("budget@example.com", "b-pass"), User("nolimit@example.com", "n-pass")],
                   **FAST)
    bounded = CdseSession(Credentials("budget@example.com", "b-pass"), endpoints(sim))
    unbounded = CdseSession(Credentials("nolimit@example.com", "n-pass"), endpoints(sim), max_minutes=0)
    traces = {}

    def drive(name, session):
        session.login()
        t0, trace = time.monotonic(), []
        while time.monotonic() - t0 < 7.5:
            may = session.may_start()
            try:
                token = session.access_token()
            except BudgetExhausted as exc:
                token = exc
            trace.append((time.monotonic() - t0, may, token))
            time.sleep(0.05)
        traces[name] = trace

    threads = [threading.Thread(target=drive, args=("bounded", bounded)),
               threading.Thread(target=drive, args=("unbounded", unbounded))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    trace = traces["bounded"]
    stop = next(t for t, may, _ in trace if not may)
    exhausted = next(t for t, _, token in trace if isinstance(token, BudgetExhausted))
    assert 4.0 <= stop <= 6.0  # the last refresh whose token outlives the window (~4.8 s)
    assert all(not may for t, may, _ in trace if t >= stop)  # no new start after that
    assert any(isinstance(token, str) for t, _, token in trace if stop < t < 5.8)  # in-flight work goes on
    assert 5.8 <= exhausted <= 6.6  # tokens end with the window
    assert bounded.stop_reason is not None
    assert len(grants(sim, "password", "budget@example.com")) == 1

    trace = traces["unbounded"]
    assert all(may and isinstance(token, str) for _, may, token in trace)
    assert len(grants(sim, "password", "nolimit@example.com")) == 2  # a new session per window
    assert probe(sim, unbounded.access_token()) == 404


def test_a_refresh_the_server_refuses_ends_the_budget_or_logs_in_again(make_sim):
    from simulator import User

    sim = make_sim(users=[User("budget@example.com", "b-pass"), User("nolimit@example.com", "n-pass")],
                   access_lifetime=0.5, refresh_lifetime=1.0)
    bounded = CdseSession(Credentials("budget@example.com", "b-pass"), endpoints(sim), clock=FrozenClock())
    unbounded = CdseSession(Credentials("nolimit@example.com", "n-pass"), endpoints(sim), max_minutes=0,
                            clock=FrozenClock())
    old_b, old_u = bounded.access_token(), unbounded.access_token()
    time.sleep(1.2)  # the server's refresh window closed; the sessions' clocks say it did not
    assert probe(sim, old_b) == 401

    with pytest.raises(BudgetExhausted, match="Token is not active"):
        bounded.token_rejected(old_b)
    assert bounded.may_start() is False

    new_u = unbounded.token_rejected(old_u)
    assert new_u != old_u and probe(sim, new_u) == 404
    assert unbounded.may_start() is True
    assert len(grants(sim, "password", "nolimit@example.com")) == 2
    assert len(grants(sim, "password", "budget@example.com")) == 1


def test_401_then_token_rejected_refreshes_once_for_every_worker(make_sim):
    sim = make_sim(access_lifetime=1, refresh_lifetime=60)
    session = CdseSession(DEMO, endpoints(sim), clock=FrozenClock())  # never renews by itself
    session.login()
    time.sleep(1.1)
    start = threading.Barrier(8)
    statuses, errors = [], []

    def download():
        start.wait()
        try:
            token = session.access_token()
            first = probe(sim, token)
            if first == 401:
                token = session.token_rejected(token)
            statuses.append((first, probe(sim, token), token))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=download) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert [(a, b) for a, b, _ in statuses] == [(401, 404)] * 8
    assert len({token for _, _, token in statuses}) == 1
    assert len(grants(sim, "refresh_token")) == 1
    assert len(grants(sim, "password")) == 1


def test_max_minutes_stops_new_starts(make_sim):
    sim = make_sim()
    clock = FrozenClock()
    session = CdseSession(DEMO, endpoints(sim), max_minutes=5, clock=clock)
    assert session.may_start() is True
    session.login()
    clock.now += 4.9 * 60
    assert session.may_start() is True
    clock.now += 0.2 * 60
    assert session.may_start() is False
    assert "5 minutes" in session.stop_reason


def test_wrong_password_is_rejected_in_one_line_without_retry(make_sim):
    sim = make_sim()
    session = CdseSession(Credentials("demo@example.com", "not-the-password"), endpoints(sim),
                          backoff=QUICK_BACKOFF)
    with pytest.raises(AuthRejected) as info:
        session.login()
    assert str(info.value) == "CDSE rejected the user name or password"
    assert isinstance(info.value, CredentialError) and info.value.exit_status == 2
    assert info.value.__cause__ is None and info.value.__suppress_context__
    [attempt] = [r for r in sim.request_log() if r.grant_type == "password"]
    assert attempt.status == 401


def test_totp_is_sent_for_two_factor_accounts(make_sim):
    from simulator import User, totp

    secret = "JBSWY3DPEHPK3PXP"
    sim = make_sim(users=[User("twofa@example.com", "pw", totp_secret=secret)])
    with pytest.raises(AuthRejected):
        CdseSession(Credentials("twofa@example.com", "pw"), endpoints(sim)).login()
    session = CdseSession(Credentials("twofa@example.com", "pw", totp=totp(secret)), endpoints(sim))
    assert probe(sim, session.access_token()) == 404


def test_identity_5xx_is_retried_then_a_clear_error(make_sim):
    from simulator import Faults

    sim = make_sim(faults=Faults(identity_error_first=100, retry_after=0.2))
    waits = []
    session = CdseSession(DEMO, endpoints(sim), backoff=QUICK_BACKOFF, sleep=waits.append)
    with pytest.raises(ServiceError) as info:
        session.login()
    host = sim.token_url.split("/")[2]
    assert str(info.value) == (f"The CDSE identity service at {host} did not answer usably "
                               "after 3 tries (HTTP 503)")
    assert [r.fault for r in sim.request_log()] == ["identity503"] * 3
    assert len(waits) == 2 and all(w >= 0.2 for w in waits)  # Retry-After honoured


def test_identity_5xx_then_recovery_logs_in(make_sim):
    from simulator import Faults

    sim = make_sim(faults=Faults(identity_error_first=2, retry_after=0))
    session = CdseSession(DEMO, endpoints(sim), backoff=QUICK_BACKOFF)
    assert probe(sim, session.access_token()) == 404
    assert [r.status for r in sim.request_log() if r.grant_type == "password"] == [503, 503, 200]


def test_unreachable_identity_names_the_host():
    closed = Endpoints(token_url="http://127.0.0.1:9/auth/realms/CDSE/protocol/openid-connect/token")
    session = CdseSession(DEMO, closed, backoff=QUICK_BACKOFF)
    with pytest.raises(ServiceError, match=r"identity service at 127\.0\.0\.1:9 .*3 tries \(cannot connect\)"):
        session.login()


class FakeReply:
    def __init__(self, status, body=None, text="", headers=None):
        self.status_code, self._body, self.text, self.headers = status, body, text, headers or {}

    def json(self):
        if self._body is None:
            raise ValueError("not JSON")
        return self._body


class FakeHttp:
    def __init__(self, *replies):
        self.replies, self.calls = list(replies), []

    def post(self, url, data, timeout, headers, allow_redirects=True):
        assert allow_redirects is False  # the form holds the password: never sent on to a redirect
        self.calls.append((url, dict(data), timeout))
        return self.replies.pop(0)


def test_a_reply_without_a_token_is_a_service_error_and_timeouts_are_set():
    http = FakeHttp(FakeReply(200, None, "<html>maintenance</html>"),
                    FakeReply(200, {"token_type": "Bearer"}))
    session = CdseSession(DEMO, Endpoints(), http=http, backoff=QUICK_BACKOFF)
    with pytest.raises(ServiceError, match=r"identity\.dataspace\.copernicus\.eu answered HTTP 200 without"):
        session.login()
    with pytest.raises(ServiceError, match="no access_token"):
        session.login()
    assert all(timeout for _, _, timeout in http.calls)
    form = http.calls[0][1]
    assert form == {"client_id": "cdse-public", "grant_type": "password", "username": "demo@example.com",
                    "password": "demo"}


def test_expires_in_is_read_from_the_reply():
    clock = FrozenClock()
    reply = {"access_token": "A1", "expires_in": 100, "refresh_token": "R1", "refresh_expires_in": 1000}
    http = FakeHttp(FakeReply(200, reply), FakeReply(200, {**reply, "access_token": "A2"}))
    session = CdseSession(DEMO, Endpoints(), http=http, clock=clock)
    assert session.access_token() == "A1"
    clock.now += 79.5  # 20.5 s left of 100: more than 20 %, keep it
    assert session.access_token() == "A1"
    clock.now += 1.0  # 19.5 s left: renew
    assert session.access_token() == "A2"
    assert http.calls[1][1] == {"client_id": "cdse-public", "grant_type": "refresh_token", "refresh_token": "R1"}


def test_a_refused_refresh_is_not_asked_again_and_the_valid_token_still_serves():
    clock = FrozenClock()
    reply = {"access_token": "A1", "expires_in": 100, "refresh_token": "R1", "refresh_expires_in": 1000}
    http = FakeHttp(FakeReply(200, reply),
                    FakeReply(400, {"error": "invalid_grant", "error_description": "Session not active"}))
    session = CdseSession(DEMO, Endpoints(), http=http, clock=clock)
    session.login()
    clock.now += 90
    assert session.access_token() == "A1"  # 10 s left: in-flight work goes on
    assert session.access_token() == "A1"
    assert session.may_start() is False
    assert "Session not active" in session.stop_reason
    clock.now += 11
    with pytest.raises(BudgetExhausted, match="Session not active"):
        session.access_token()
    assert len(http.calls) == 2  # one login, one refused refresh, nothing more


def test_too_many_sessions_is_not_called_a_wrong_password(make_sim):
    sim = make_sim(max_sessions=1)
    CdseSession(DEMO, endpoints(sim)).login()
    with pytest.raises(AuthRejected) as info:
        CdseSession(DEMO, endpoints(sim)).login()
    assert str(info.value) == "CDSE refused the login of demo@example.com: There are too many sessions"


def test_logout_ends_the_session_and_a_failed_logout_is_only_a_debug_line(make_sim, caplog):
    sim = make_sim()
    session = CdseSession(DEMO, endpoints(sim))
    session.login()
    assert sim.active_sessions("demo@example.com") == 1
    session.logout()
    session.logout()  # twice (abort after finish): one request only
    assert sim.active_sessions("demo@example.com") == 0
    assert [r.status for r in sim.request_log() if r.path.endswith("/logout")] == [204]

    unreachable = CdseSession(DEMO, endpoints(sim))
    unreachable.login()
    unreachable._token_url = "http://127.0.0.1:9/auth/realms/CDSE/protocol/openid-connect/token"
    with caplog.at_level(logging.DEBUG, logger="cdse_dem"):
        unreachable.logout()  # no exception
    assert [r.levelname for r in caplog.records if "Logout" in r.getMessage()] == ["DEBUG"]
    assert unreachable.logouts == 0


def test_a_second_login_with_two_factor_asks_a_fresh_code_or_stops_and_never_resends_one(make_sim, caplog):
    from simulator import User, totp

    secret = "JBSWY3DPEHPK3PXP"
    sim = make_sim(users=[User("twofa@example.com", "pw", totp_secret=secret)],
                   access_lifetime=0.5, refresh_lifetime=1.0)
    used = totp(secret)
    creds = Credentials("twofa@example.com", "pw", totp=used)

    silent = CdseSession(creds, endpoints(sim), max_minutes=0, clock=FrozenClock())  # no terminal
    old = silent.access_token()
    asked = []

    first = totp(secret, time.time() - 30)  # another run, another code (the previous step's)

    def ask():
        asked.append(1)
        return first if len(asked) == 1 else totp(secret, time.time() + 30)  # its used one first: refused

    typed = CdseSession(Credentials("twofa@example.com", "pw", totp=first), endpoints(sim), max_minutes=0,
                        clock=FrozenClock(), ask_totp=ask)
    old_typed = typed.access_token()
    time.sleep(1.2)  # both sessions' refresh windows closed on the server

    with pytest.raises(BudgetExhausted, match="fresh two-factor code"):
        silent.token_rejected(old)
    assert silent.may_start() is False and "two-factor" in silent.stop_reason

    new = typed.token_rejected(old_typed)
    assert probe(sim, new) == 404
    assert len(asked) == 2  # the used code typed again was not sent (the server would refuse it): asked again
    assert [r.status for r in grants(sim, "password", "twofa@example.com")] == [200, 200, 200]
