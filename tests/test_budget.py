"""The time budget: the refresh window stops new downloads and a new run resumes; ``--max-minutes 0``
logs in again instead.

In-process against the simulator, whose identity service shares a ``FakeClock`` with the session:
each download "takes" the seconds the test advances, so the window closes where the test says,
however loaded the machine. One end-to-end run of the command line checks ``--max-minutes 0``
(the window closing part-way through a real run is a row of test_fault_table.py).
"""

import logging

import pytest

from cdse_dem.catalogue import Catalogue, choose, parse_product
from cdse_dem.credentials import Credentials
from cdse_dem.errors import BudgetExhausted
from cdse_dem.grid import Geocell
from cdse_dem.http import Endpoints, new_http_session
from cdse_dem.session import Budget, CdseSession
from cdse_dem.transfer import download_product
from tests.helpers import FakeClock, cli_env, downloads, logins, product_filter, run_cli

CELLS = [Geocell(lat, lon) for lat in (49, 50) for lon in (7, 8, 9)]  # tile 32UMA's six
AREA = "POLYGON((7.1 49.1,9.9 49.1,9.9 50.9,7.1 50.9,7.1 49.1))"
DEMO = Credentials("demo@example.com", "demo")
PER_DOWNLOAD = 1.5  # seconds of token time each download takes


@pytest.fixture
def world(make_sim, tmp_path_factory):
    """A simulator of the six cells on a fake clock, with a 2 s token and a 6 s refresh window."""
    cells = tmp_path_factory.mktemp("cells")
    for name in ("copdem_glo30_cells.txt", "copdem_glo90_cells.txt"):
        (cells / name).write_text("".join(f"{c.grid_id}\n" for c in CELLS))
    clock = FakeClock()
    sim = make_sim(cells_dir=cells, duplicate_cells=0, access_lifetime=2, refresh_lifetime=6, clock=clock)
    endpoints = Endpoints(sim.token_url, sim.catalogue_url, sim.download_url)
    http = new_http_session(endpoints=endpoints)
    records = [r for page in Catalogue(sim.catalogue_url, http).pages(product_filter("CCM", 90, "DGED", "2024_1", AREA))
               for r in page]
    products = sorted(choose(map(parse_product, records), CELLS).values(), key=lambda p: p.geocell)
    assert [p.geocell for p in products] == CELLS
    yield sim, clock, endpoints, http, products
    http.close()


def fetch(world, session, todo, out):
    """Download ``todo`` in order as a run with one worker would: (downloaded, not started)."""
    _, clock, endpoints, http, _ = world
    done, left = [], []
    for product in todo:
        try:
            download_product(product, out, session, http, endpoints)
            done.append(product)
        except BudgetExhausted:
            left.append(product)
        clock.advance(PER_DOWNLOAD)
    return done, left


def test_the_refresh_window_stops_new_downloads_and_a_new_run_resumes(world, tmp_path, caplog):
    sim, clock, endpoints, http, products = world
    first = CdseSession(DEMO, endpoints, http=http, clock=clock)
    with caplog.at_level(logging.INFO, logger="cdse_dem"):
        done, left = fetch(world, first, products, tmp_path)
    # downloads at 0, 1.5, 3 and 4.5 s; at 6 s the window (6 s from the login) has closed
    assert [p.id for p in done] == [p.id for p in products[:4]]
    assert [p.id for p in left] == [p.id for p in products[4:]]
    assert first.budget.stop_reason == "the CDSE refresh window (from the login) is closing"
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("No new download")] == [
        "No new download starts: the CDSE refresh window (from the login) is closing"]
    first.logout()

    second = CdseSession(DEMO, endpoints, http=http, clock=clock)  # the next run
    again, still_left = fetch(world, second, left, tmp_path)
    assert [p.id for p in again] == [p.id for p in left] and still_left == []
    second.logout()
    assert sorted(r.path for r in downloads(sim)) == sorted(f"/odata/v1/Products({p.id})/$value" for p in products)
    assert len(logins(sim)) == 2  # one per run


def test_max_minutes_0_logs_in_again_when_the_window_closes(world, tmp_path):
    sim, clock, endpoints, http, products = world
    session = CdseSession(DEMO, endpoints, http=http, clock=clock, max_minutes=0)
    done, left = fetch(world, session, products, tmp_path)
    assert len(done) == 6 and left == []
    assert session.may_start() and session.budget.stop_reason is None
    assert len(logins(sim)) == 2  # 9 s of work, a 6 s window: a second login


def test_max_minutes_bounds_the_work_from_the_first_login():
    clock = FakeClock()
    budget = Budget(5, clock)
    assert budget.may_start(None) and not budget.out_of_time()  # nothing has started
    budget.start(clock())
    clock.advance(5 * 60 - 1)
    budget.start(clock())  # a later login does not restart the count
    assert budget.may_start(None) and not budget.out_of_time()
    clock.advance(2)
    assert not budget.may_start(None) and budget.out_of_time()
    assert budget.stop_reason == "the time budget of 5 minutes is spent"
    unlimited = Budget(0, clock)
    unlimited.start(clock())
    clock.advance(10**6)
    assert unlimited.logs_in_again and unlimited.may_start(None) and not unlimited.out_of_time()
    with pytest.raises(ValueError):
        Budget(-1)


def test_max_minutes_0_logs_in_again_end_to_end(make_sim, tool_home, tmp_path):
    # a 1.5 s window; six products of ~29 kB at 60 kB/s on one worker take 3 s at least
    sim = make_sim(access_lifetime=0.5, refresh_lifetime=1.5, bandwidth=60_000)
    out = tmp_path / "dem"
    result = run_cli("--t", "32UMA", "--o", out, "--workers", "1", "--max-minutes", "0", "--transfer", "zip",
                     env=cli_env(sim))
    assert result.returncode == 0, result.output
    assert len(list(out.glob("*_DEM.tif"))) == 6
    assert len(logins(sim)) >= 2
    assert "Logging in again: " in result.stderr
