"""The CDSE session against the local simulator: one login, timely refreshes, the budget, failures.

Lifetimes are short (access 2 s, refresh window 6 s, as CDSE's 600 s / 3600 s scaled down),
so the real expiry rules of the simulator are exercised, not a mock of them. The simulator runs
in this process and its identity service shares a ``FakeClock`` with the session: lifetimes
pass when the test advances it, never by waiting, so no test here depends on the machine's speed.
Retries of the identity service wait through an injected ``sleep``.
"""

import itertools
import json
import logging
import threading
import time

import pytest
import requests

from cdse_dem.credentials import Credentials
from cdse_dem.errors import AuthRejected, BudgetExhausted, CredentialError, ServiceError
from cdse_dem.http import Endpoints, RetryCancelled
from cdse_dem.session import CdseSession
from tests.helpers import FakeClock

FAST = {"access_lifetime": 2, "refresh_lifetime": 6}
DEMO = Credentials("demo@example.com", "demo")
NO_PRODUCT = "00000000-0000-0000-0000-000000000000"
# urllib3's backoff (factor 0.5) before tries 2..6; each wait is up to 0.5 s longer (jitter)
BACKOFF = [0.0, 1.0, 2.0, 4.0, 8.0]


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


def test_token_is_refreshed_before_it_expires(make_sim):
    clock = FakeClock()
    sim = make_sim(clock=clock, **FAST)
    session = CdseSession(DEMO, endpoints(sim), clock=clock)
    session.login()
    first = session.access_token()

    clock.advance(1.0)
    assert session.access_token() == first  # 1 s left of 2: no refresh yet
    clock.advance(0.55)
    assert session.access_token() == first  # 0.45 s left: still more than 20 % of the lifetime
    assert grants(sim, "refresh_token") == []

    clock.advance(0.1)  # 0.35 s left: less than 20 %
    second = session.access_token()
    assert second != first
    assert len(grants(sim, "refresh_token")) == 1  # late, yet before the first one lapsed
    assert probe(sim, first) == 404

    clock.advance(0.65)
    assert probe(sim, first) == 401  # the first one has really expired by now...
    assert probe(sim, second) == 404  # ...and its successor is accepted
    session.close()


def test_one_login_and_one_refresh_at_a_time_for_many_threads(make_sim, caplog):
    clock = FakeClock()
    sim = make_sim(clock=clock, **FAST)
    session = CdseSession(DEMO, endpoints(sim), clock=clock)
    caplog.set_level(logging.DEBUG)
    start = threading.Barrier(17)
    done = threading.Event()
    seen, errors = [], []

    def worker():
        start.wait()
        try:
            while not done.is_set():
                seen.append(session.access_token())
                done.wait(0.001)
        except Exception as exc:  # surfaced by the assertions below
            errors.append(exc)

    def every_thread_asked_again():
        """Wait until the workers have asked for tokens 16 more times: a renewal the last step
        made due has been answered before the clock moves on."""
        target = len(seen) + 16
        while len(seen) < target and not errors and any(t.is_alive() for t in threads):
            done.wait(0.001)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    start.wait()
    every_thread_asked_again()
    for _ in range(35):  # 3.5 s of token time, in steps of 0.1 s
        clock.advance(0.1)
        every_thread_asked_again()
    done.set()
    for t in threads:
        t.join()

    refreshes = grants(sim, "refresh_token")
    assert errors == []
    assert len(grants(sim, "password")) == 1  # 16 threads raced for the first token
    assert len(refreshes) == 2  # at 1.6-1.7 s and 3.2-3.4 s, not once per thread
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

    clock = FakeClock()
    sim = make_sim(users=[User("budget@example.com", "b-pass"), User("nolimit@example.com", "n-pass")],
                   clock=clock, **FAST)
    bounded = CdseSession(Credentials("budget@example.com", "b-pass"), endpoints(sim), clock=clock)
    unbounded = CdseSession(Credentials("nolimit@example.com", "n-pass"), endpoints(sim), max_minutes=0,
                            clock=clock)
    traces = {"bounded": [], "unbounded": []}
    bounded.login()
    unbounded.login()
    for step in range(1, 151):  # 7.5 s after the logins, every 0.05 s
        clock.advance(0.05)
        for name, session in (("bounded", bounded), ("unbounded", unbounded)):
            may = session.may_start()
            try:
                token = session.access_token()
            except BudgetExhausted as exc:
                token = exc
            traces[name].append((step * 0.05, may, token))

    trace = traces["bounded"]
    stop = next(t for t, may, _ in trace if not may)
    exhausted = next(t for t, _, token in trace if isinstance(token, BudgetExhausted))
    assert 4.0 <= stop <= 6.0  # the last refresh whose token outlives the window (~4.8 s)
    assert all(not may for t, may, _ in trace if t >= stop)  # no new start after that
    assert any(isinstance(token, str) for t, _, token in trace if stop < t < 5.8)  # in-flight work goes on
    assert 5.8 <= exhausted <= 6.6  # tokens end with the window
    assert bounded.budget.stop_reason is not None
    assert len(grants(sim, "password", "budget@example.com")) == 1

    trace = traces["unbounded"]
    assert all(may and isinstance(token, str) for _, may, token in trace)
    assert len(grants(sim, "password", "nolimit@example.com")) == 2  # a new session per window
    assert probe(sim, unbounded.access_token()) == 404


def test_a_refresh_the_server_refuses_ends_the_budget_or_logs_in_again(make_sim):
    from simulator import User

    server_clock = FakeClock()
    sim = make_sim(users=[User("budget@example.com", "b-pass"), User("nolimit@example.com", "n-pass")],
                   access_lifetime=0.5, refresh_lifetime=1.0, clock=server_clock)
    bounded = CdseSession(Credentials("budget@example.com", "b-pass"), endpoints(sim), clock=FakeClock())
    unbounded = CdseSession(Credentials("nolimit@example.com", "n-pass"), endpoints(sim), max_minutes=0,
                            clock=FakeClock())
    old_b, old_u = bounded.access_token(), unbounded.access_token()
    server_clock.advance(1.2)  # the server's refresh window closed; the sessions' clocks say it did not
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
    server_clock = FakeClock()
    sim = make_sim(access_lifetime=1, refresh_lifetime=60, clock=server_clock)
    session = CdseSession(DEMO, endpoints(sim), clock=FakeClock())  # never renews by itself
    session.login()
    server_clock.advance(1.1)
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
    clock = FakeClock()
    session = CdseSession(DEMO, endpoints(sim), max_minutes=5, clock=clock)
    assert session.may_start() is True
    session.login()
    clock.advance(4.9 * 60)
    assert session.may_start() is True
    clock.advance(0.2 * 60)
    assert session.may_start() is False
    assert "5 minutes" in session.budget.stop_reason


def test_wrong_password_is_rejected_in_one_line_without_retry(make_sim):
    sim = make_sim()
    session = CdseSession(Credentials("demo@example.com", "not-the-password"), endpoints(sim))
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


def test_an_identity_service_that_stays_down_is_one_clear_error_after_six_tries(make_sim, caplog):
    from simulator import Faults

    sim = make_sim(faults=Faults(identity_error_rate=1.0, retry_after=0.2))
    waits = []
    session = CdseSession(DEMO, endpoints(sim), sleep=waits.append)
    with caplog.at_level(logging.WARNING, logger="cdse_dem"), pytest.raises(ServiceError) as info:
        session.login()
    host = sim.token_url.split("/")[2]
    assert str(info.value) == (f"The CDSE identity service at {host} did not answer usably "
                               "after 6 tries (HTTP 503)")
    assert [r.fault for r in sim.request_log()] == ["identity503"] * 6
    assert len(waits) == 5
    for wait, backoff in zip(waits, BACKOFF, strict=True):  # Retry-After honoured, the backoff when longer
        assert max(backoff, 0.2) <= wait <= max(backoff, 0.2) + 0.5
    assert [r.getMessage() for r in caplog.records] == [
        f"Identity service at {host}: HTTP 503; trying again in {wait:.1f} s" for wait in waits]


def test_identity_5xx_then_recovery_logs_in(make_sim):
    from simulator import Faults

    sim = make_sim(faults=Faults(identity_error_first=2, retry_after=0))
    session = CdseSession(DEMO, endpoints(sim), sleep=lambda seconds: None)
    assert probe(sim, session.access_token()) == 404
    assert [r.status for r in sim.request_log() if r.grant_type == "password"] == [503, 503, 200]


def test_a_retry_after_past_a_minute_is_waited_for_a_minute(make_sim):
    from simulator import Faults

    sim = make_sim(faults=Faults(identity_error_first=1, retry_after=3600))
    waits = []
    CdseSession(DEMO, endpoints(sim), sleep=waits.append).login()
    assert waits == [60.0]


def test_unreachable_identity_names_the_host():
    closed = Endpoints(token_url="http://127.0.0.1:9/auth/realms/CDSE/protocol/openid-connect/token")
    waits = []
    session = CdseSession(DEMO, closed, sleep=waits.append)
    with pytest.raises(ServiceError, match=r"identity service at 127\.0\.0\.1:9 .*6 tries \(cannot connect\)"):
        session.login()
    assert len(waits) == 5


def test_a_stop_ends_a_retry_wait_and_no_further_request_is_sent(make_sim):
    from simulator import Faults

    sim = make_sim(faults=Faults(identity_error_rate=1.0, retry_after=50))  # a wait no test could sit out
    stop = threading.Event()
    session = CdseSession(DEMO, endpoints(sim), stop=stop)

    def stop_once_refused():
        while not grants(sim, "password"):
            stop.wait(0.005)
        stop.set()

    threading.Thread(target=stop_once_refused, daemon=True).start()
    with pytest.raises(RetryCancelled) as info:
        session.login()
    assert info.value.exit_status == 130
    assert len(grants(sim, "password")) == 1


class FakeReply:
    def __init__(self, status, body=None, text="", headers=None):
        self.status_code, self.text, self.headers = status, text, headers or {}
        self.content = (json.dumps(body) if body is not None else text).encode()


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
    session = CdseSession(DEMO, Endpoints(), http=http)
    with pytest.raises(ServiceError, match=r"identity\.dataspace\.copernicus\.eu answered HTTP 200 without"):
        session.login()
    with pytest.raises(ServiceError, match="no access_token"):
        session.login()
    assert all(timeout for _, _, timeout in http.calls)
    form = http.calls[0][1]
    assert form == {"client_id": "cdse-public", "grant_type": "password", "username": "demo@example.com",
                    "password": "demo"}


def test_expires_in_is_read_from_the_reply():
    clock = FakeClock()
    reply = {"access_token": "A1", "expires_in": 100, "refresh_token": "R1", "refresh_expires_in": 1000}
    http = FakeHttp(FakeReply(200, reply), FakeReply(200, {**reply, "access_token": "A2"}))
    session = CdseSession(DEMO, Endpoints(), http=http, clock=clock)
    assert session.access_token() == "A1"
    clock.advance(79.5)  # 20.5 s left of 100: more than 20 %, keep it
    assert session.access_token() == "A1"
    clock.advance(1.0)  # 19.5 s left: renew
    assert session.access_token() == "A2"
    assert http.calls[1][1] == {"client_id": "cdse-public", "grant_type": "refresh_token", "refresh_token": "R1"}


def test_a_refused_refresh_is_not_asked_again_and_the_valid_token_still_serves():
    clock = FakeClock()
    reply = {"access_token": "A1", "expires_in": 100, "refresh_token": "R1", "refresh_expires_in": 1000}
    http = FakeHttp(FakeReply(200, reply),
                    FakeReply(400, {"error": "invalid_grant", "error_description": "Session not active"}))
    session = CdseSession(DEMO, Endpoints(), http=http, clock=clock)
    session.login()
    clock.advance(90)
    assert session.access_token() == "A1"  # 10 s left: in-flight work goes on
    assert session.access_token() == "A1"
    assert session.may_start() is False
    assert "Session not active" in session.budget.stop_reason
    clock.advance(11)
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
    server_clock = FakeClock()
    sim = make_sim(users=[User("twofa@example.com", "pw", totp_secret=secret)],
                   access_lifetime=0.5, refresh_lifetime=1.0, clock=server_clock)
    used = totp(secret)
    creds = Credentials("twofa@example.com", "pw", totp=used)

    silent = CdseSession(creds, endpoints(sim), max_minutes=0, clock=FakeClock())  # no terminal
    old = silent.access_token()
    asked = []

    first = totp(secret, time.time() - 30)  # another run, another code (the previous step's)

    def ask():
        asked.append(1)
        return first if len(asked) == 1 else totp(secret, time.time() + 30)  # its used one first: refused

    typed = CdseSession(Credentials("twofa@example.com", "pw", totp=first), endpoints(sim), max_minutes=0,
                        clock=FakeClock(), ask_totp=ask)
    old_typed = typed.access_token()
    server_clock.advance(1.2)  # both sessions' refresh windows closed on the server

    with pytest.raises(BudgetExhausted, match="fresh two-factor code"):
        silent.token_rejected(old)
    assert silent.may_start() is False and "two-factor" in silent.budget.stop_reason

    new = typed.token_rejected(old_typed)
    assert probe(sim, new) == 404
    assert len(asked) == 2  # the used code typed again was not sent (the server would refuse it): asked again
    assert [r.status for r in grants(sim, "password", "twofa@example.com")] == [200, 200, 200]
