"""Every fault the simulator can inject, against the real command line: what the tool does about it.

One test per row of the table "When CDSE misbehaves" in docs/reliability.md. Each runs the whole
tool on tile 32UMA (6 geocells at 90 m, small products) against a simulator with one kind of fault,
and checks what a user would: the exit status, the files on disk byte for byte against the served DEM, the JSON, the
log lines, and in the simulator's request log what the tool really did (retries, waits, logins).
The module-level tests of each mechanism are in test_download.py, test_session.py and
test_catalogue.py; here it is the whole process.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from simulator import Faults, User
from tests.helpers import ENTRY, NO_RETRY_WAITS, Result, check_consistent, cli_env, dem_files, max_concurrent, run_cli

TILE = "32UMA"
CELLS = 6
RETRY_LINE = re.compile(r"\| WARNING Download of .+?: (?P<problem>.+); retrying in [\d.]+ s \(try \d+ of \d+\)$")


@dataclass
class Run:
    result: Result
    out: Path
    summary: dict | None
    log_file: str  # the text of --log-file
    records: list  # the simulator's request log of this run (before any check adds requests)

    @property
    def downloads(self) -> list:
        return [r for r in self.records if r.server == "download"]

    @property
    def logins(self) -> list:
        return [r for r in self.records if r.grant_type == "password"]


def run_tile(sim, tmp_path, *args, env=None, entry=ENTRY) -> Run:
    """The tool on TILE into a fresh folder, with --summary-json and --log-file.

    Whole zips (``--transfer zip``) unless ``args`` say otherwise: this table is the zip path's,
    checksums included; the Nodes path and its fallback are tested in test_nodes_transfer.py.
    ``entry``: the command line, or the same without the waits between identity and catalogue
    retries (where the backoff alone would take seconds)."""
    out, summary, log_file = tmp_path / "dem", tmp_path / "summary.json", tmp_path / "run.log"
    for old in (summary, log_file):
        old.unlink(missing_ok=True)
    sim.clear_log()
    transfer = () if "--transfer" in args else ("--transfer", "zip")
    result = run_cli("--t", TILE, "--o", out, "--summary-json", summary, "--log-file", log_file, *transfer, *args,
                     env=env or cli_env(sim), entry=entry)
    records = sim.request_log()
    assert "Traceback" not in result.output
    data = json.loads(summary.read_text()) if summary.exists() else None
    return Run(result, out, data, log_file.read_text() if log_file.exists() else "", records)


def retry_problems(text: str) -> list[str]:
    return [m["problem"] for m in map(RETRY_LINE.search, text.splitlines()) if m]


def error_messages(text: str) -> list[str]:
    """The messages of the ERROR lines of a log."""
    return [line.split("| ERROR ", 1)[1] for line in text.splitlines() if "| ERROR " in line]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A simulator without faults or bandwidth cap serving the same products (same seed, same zip cache)
    as every simulator of these tests: the quick source of the DEM bytes the tool must have written."""
    from simulator import SimulatorConfig, start_simulator

    with start_simulator(SimulatorConfig(cache_dir=tmp_path_factory.getbasetemp() / "sim-cache")) as sim:
        yield sim


def assert_whole(run: Run, reference):
    """Exit 0, the six DEMs on disk, byte-identical to those served, and the JSON naming exactly them."""
    assert run.result.returncode == 0, run.result.output
    assert len(check_consistent(run.out, reference)) == CELLS


def waits_after(run: Run, statuses) -> list[float]:
    """For each download answered with one of ``statuses``: the time until the next request for that product."""
    log = run.downloads
    gaps = []
    for i, record in enumerate(log):
        if record.status in statuses:
            following = next(r for r in log[i + 1:] if r.path == record.path)
            gaps.append(following.started - record.finished)
    return gaps


# --- download host ---------------------------------------------------------------------------

def test_dropped_connection_is_fetched_again_from_zero(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(drop_first=2))
    run = run_tile(sim, tmp_path)
    dropped = [r for r in run.downloads if r.fault == "drop"]
    assert len(dropped) == 2 and len(run.downloads) == CELLS + 2
    problems = retry_problems(run.result.stderr)
    assert len(problems) == 2 and all("connection dropped" in p for p in problems)
    assert retry_problems(run.log_file) == problems  # the --log-file has them too
    for record in dropped:  # the next try is a whole new GET (CDSE has no Range): the full body again
        again = [r for r in run.downloads if r.path == record.path and r.fault is None]
        assert again[0].status == 200 and again[0].bytes_sent > record.bytes_sent
    assert all(r.status != 501 for r in run.downloads)
    assert_whole(run, reference)


def test_a_burst_of_500_is_retried(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(error_first=3, error_statuses=(500,)))
    run = run_tile(sim, tmp_path)
    assert [r.status for r in run.downloads].count(500) == 3
    assert retry_problems(run.result.stderr) == ["HTTP 500: Internal Server Error"] * 3
    assert_whole(run, reference)


def test_a_burst_of_503_is_retried_no_sooner_than_retry_after(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(error_first=2, error_statuses=(503,), retry_after=1.5))
    run = run_tile(sim, tmp_path)
    assert retry_problems(run.result.stderr) == ["HTTP 503: Service Unavailable"] * 2
    gaps = waits_after(run, {503})
    assert len(gaps) == 2 and min(gaps) >= 1.5 - 0.05, gaps
    assert_whole(run, reference)


def test_a_429_storm_is_retried_no_sooner_than_retry_after(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(storm_first=4, retry_after=1))
    run = run_tile(sim, tmp_path)
    assert [r.fault for r in run.downloads].count("storm429") == 4
    problems = retry_problems(run.result.stderr)
    assert len(problems) == 4 and all(p.startswith("HTTP 429 DAT-ZIP-100: Max session number") for p in problems)
    gaps = waits_after(run, {429})
    assert len(gaps) == 4 and min(gaps) >= 1 - 0.05, gaps
    assert_whole(run, reference)


def test_more_workers_than_the_quota_get_429_and_are_retried(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(max_concurrent_downloads=2, bandwidth=100_000, faults=Faults(retry_after=0.5))
    run = run_tile(sim, tmp_path, "--workers", "4")
    quota = [r for r in run.downloads if r.status == 429]
    assert quota and all(r.fault is None for r in quota)  # the quota itself, not a storm
    assert max_concurrent([r for r in run.downloads if r.status == 200]) <= 2
    assert len(retry_problems(run.result.stderr)) == len(quota)
    assert_whole(run, reference)


def test_a_slow_first_byte_is_waited_for_not_retried(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(slow_first=1, slow_seconds=2))
    run = run_tile(sim, tmp_path)
    assert len(run.downloads) == CELLS  # no second request for the slow one
    slow = [r for r in run.downloads if r.fault == "slow"]
    assert len(slow) == 1 and slow[0].finished - slow[0].started >= 2
    assert retry_problems(run.result.stderr) == []
    assert_whole(run, reference)


def test_a_corrupt_body_is_fetched_again(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(corrupt_first=1))
    run = run_tile(sim, tmp_path)
    assert len(run.downloads) == CELLS + 1
    problems = retry_problems(run.result.stderr)
    assert len(problems) == 1
    assert re.fullmatch(r"MD5 mismatch \([0-9a-f]{32} received, [0-9a-f]{32} in the catalogue\)", problems[0])
    assert_whole(run, reference)


def test_an_access_token_that_expires_during_the_run_is_refreshed(make_sim, reference, tool_home, tmp_path):
    # a small product (~20 kB) takes ~0.7 s at 30 kB/s; 2 workers: 3 rounds outlive the 1 s token
    sim = make_sim(access_lifetime=1, bandwidth=30_000)
    run = run_tile(sim, tmp_path, "--workers", "2")
    assert len(run.logins) == 1
    assert [r for r in run.records if r.grant_type == "refresh_token"]
    assert [r.status for r in run.downloads] == [200] * CELLS  # refreshed in time: no download refused
    assert_whole(run, reference)


def test_no_ccm_access_stops_with_what_to_do_and_cop_dem_works(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(users=[User("noccm@example.com", "no-ccm-Pass-77", ccm=False)])
    env = dict(sim.env, CDSE_USERNAME="noccm@example.com", CDSE_PASSWORD="no-ccm-Pass-77")
    run = run_tile(sim, tmp_path, env=env)
    assert run.result.returncode == 1
    message = ("CDSE refuses the download (403 DAT-ZIP-608): this account is not registered for Copernicus "
               "Contributing Missions (CCM) data. Request CCM access once on your CDSE profile "
               "(https://dataspace.copernicus.eu: sign in, open your profile, request access to Copernicus "
               "Contributing Missions data) and run again when it is granted; or try --collection COP-DEM")
    assert error_messages(run.result.stderr) == [message]
    assert all(r.status == 403 for r in run.downloads) and len(run.downloads) <= 4  # stopped at once
    assert dem_files(run.out) == {}
    assert run.summary["exit_status"] == 1 and run.summary["totals"]["downloaded"] == 0
    # the advice works: COP-DEM needs no CCM access
    again = run_tile(sim, tmp_path, "--collection", "COP-DEM", env=env)
    assert again.result.returncode == 0, again.result.output
    assert len(dem_files(again.out)) == CELLS


# --- catalogue ------------------------------------------------------------------------------

def test_a_catalogue_search_that_hangs_then_closes_is_retried(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(catalogue_hang_first=1, catalogue_hang_seconds=1))
    run = run_tile(sim, tmp_path)
    assert re.search(r"\| WARNING CDSE catalogue gave no answer \(\w+\); retrying in [\d.]+ s$", run.result.stderr,
                     re.MULTILINE)
    assert [r.fault for r in run.records if r.path.endswith("/Products")] == ["hang", None]
    assert_whole(run, reference)


def test_a_catalogue_page_that_is_not_json_is_retried(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(catalogue_garbage_first=1))
    run = run_tile(sim, tmp_path)
    assert re.search(r"\| WARNING CDSE catalogue gave an answer that is not JSON; retrying in [\d.]+ s$",
                     run.result.stderr, re.MULTILINE)
    assert_whole(run, reference)


@pytest.mark.parametrize("status", [500, 503])
def test_a_catalogue_5xx_is_retried(make_sim, reference, tool_home, tmp_path, status):
    sim = make_sim(faults=Faults(catalogue_error_first=2, catalogue_error_status=status, retry_after=0.5))
    run = run_tile(sim, tmp_path)
    lines = re.findall(rf"\| WARNING CDSE catalogue gave HTTP {status}; retrying in [\d.]+ s$", run.result.stderr,
                       re.MULTILINE)
    assert len(lines) == 2
    assert_whole(run, reference)


# --- identity -------------------------------------------------------------------------------

def test_an_identity_5xx_is_retried_then_one_login(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(identity_error_first=2, retry_after=0))
    run = run_tile(sim, tmp_path, entry=NO_RETRY_WAITS)  # the waits: test_session.py
    assert [r.status for r in run.logins] == [503, 503, 200]
    host = sim.token_url.split("/")[2]
    assert len(re.findall(rf"\| WARNING Identity service at {re.escape(host)}: HTTP 503; trying again in [\d.]+ s$",
                          run.result.stderr, re.MULTILINE)) == 2
    assert_whole(run, reference)


def test_an_identity_service_that_stays_down_is_one_clear_line(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(faults=Faults(identity_error_rate=1.0, retry_after=0.1))
    run = run_tile(sim, tmp_path, entry=NO_RETRY_WAITS)  # the waits and their lengths: test_session.py
    assert run.result.returncode == 1
    host = sim.token_url.split("/")[2]
    assert error_messages(run.result.stderr) == [
        f"The CDSE identity service at {host} did not answer usably after 6 tries (HTTP 503)"]
    assert len(run.logins) == 6
    assert run.downloads == [] and dem_files(run.out) == {}


def test_too_many_sessions_is_said_as_such(make_sim, reference, tool_home, tmp_path):
    sim = make_sim(max_sessions=0)
    run = run_tile(sim, tmp_path)
    assert run.result.returncode == 2
    assert error_messages(run.result.stderr) == [
        "CDSE refused the login of demo@example.com: There are too many sessions"]
    assert run.downloads == []


def test_a_wrong_password_is_exit_2_without_retry(make_sim, reference, tool_home, tmp_path):
    sim = make_sim()
    run = run_tile(sim, tmp_path, env=cli_env(sim, CDSE_PASSWORD="not-the-Password-42"))
    assert run.result.returncode == 2
    assert error_messages(run.result.stderr) == ["CDSE rejected the user name or password"]
    assert len(run.logins) == 1 and run.downloads == []
    assert "not-the-Password-42" not in run.result.output + run.log_file


def test_a_refresh_window_that_closes_stops_new_downloads_and_a_rerun_resumes(make_sim, reference, tool_home, tmp_path):
    # window 3 s, token 1 s, ~1 s per product (~20 kB) on 1 worker: the window closes part-way through
    sim = make_sim(access_lifetime=1, refresh_lifetime=3, bandwidth=20_000)
    run = run_tile(sim, tmp_path, "--workers", "1")
    assert run.result.returncode == 3, run.result.output
    totals = run.summary["totals"]
    assert 0 < totals["downloaded"] < CELLS and totals["planned"] == CELLS - totals["downloaded"]
    assert "Left for the next run" in run.result.stdout
    check_consistent(run.out)
    # the next run, against the reference (the same products, served at full speed); --max-minutes 0 is
    # test_budget.py's
    again = run_tile(reference, tmp_path, "--workers", "1")
    assert again.result.returncode == 0, again.result.output
    assert again.summary["totals"]["present"] == totals["downloaded"]
    assert len(again.downloads) == CELLS - totals["downloaded"]
    assert len(check_consistent(again.out, reference)) == CELLS


def test_the_catalogue_redirect_is_never_followed(make_sim, reference, tool_home, tmp_path):
    """CDSE's catalogue answers $value with a 301 to the download host: the tool goes there directly."""
    sim = make_sim()
    run = run_tile(sim, tmp_path)
    assert [r for r in run.records if r.server == "catalogue" and r.path.endswith("$value")] == []
    assert len(run.downloads) == CELLS
    assert_whole(run, reference)
    answer = requests.get(f"{sim.catalogue_url}/Products(x)/$value", allow_redirects=False, timeout=10)
    assert answer.status_code == 301  # the simulator does redirect, so the first check can fail
