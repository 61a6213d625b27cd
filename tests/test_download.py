"""Downloading product zips from the local CDSE simulator, with its faults switched on.

The session is the real CdseSession, the product the real catalogue record of one geocell;
what the server served is fetched independently with plain ``requests`` and compared byte for
byte. The simulator runs in this process, so its request log shares ``time.monotonic``.
"""

import dataclasses
import hashlib
import itertools
import threading
import time
from pathlib import Path

import pytest
import requests

from cdse_dem.catalogue import Catalogue, Rect, SearchArea, dataset_filter, parse_product
from cdse_dem.credentials import Credentials
from cdse_dem.dem_folder import extract_dem
from cdse_dem.errors import AccessDenied, BudgetExhausted
from cdse_dem.http import Backoff, Endpoints
from cdse_dem.session import CdseSession
from cdse_dem.transfer import DownloadCancelled, DownloadFailed, download_product
from simulator import Faults, User

DEMO = Credentials("demo@example.com", "demo")
NOCCM = Credentials("noccm@example.com", "noccm")
QUICK = Backoff(attempts=5, base=0.01, cap=0.05)
DEM_90 = "Copernicus_DSM_30_N50_00_E007_00_DEM.tif"


@pytest.fixture
def make_sim(make_sim, tmp_path_factory):
    """The shared fixture with a two-cell product list (indexing the real lists is slow)."""
    cells = tmp_path_factory.mktemp("cells")
    for name in ("copdem_glo30_cells.txt", "copdem_glo90_cells.txt"):
        (cells / name).write_text("N50_E007\nN50_E008\n")

    def _make(**overrides):
        overrides.setdefault("cells_dir", cells)
        overrides.setdefault("duplicate_cells", 0)
        return make_sim(**overrides)

    return _make


@pytest.fixture
def dest(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


class Client:
    """What a run holds: endpoints, one HTTP pool, one logged-in session."""

    def __init__(self, sim, credentials=DEMO, **session_options):
        self.sim = sim
        self.endpoints = Endpoints(token_url=sim.token_url, catalogue_url=sim.catalogue_url,
                                   download_url=sim.download_url)
        self.http = requests.Session()
        self.session = CdseSession(credentials, self.endpoints, http=self.http, **session_options)
        self.session.login()

    def product(self, collection="CCM"):
        """The catalogue's 90 m DGED product of geocell N50_E007."""
        cell = SearchArea((Rect(south=50, west=7, north=51, east=8),))
        filter_text = cell.filter_text(dataset_filter(collection, 90, "DGED", "2024_1"))
        records = [r for page in Catalogue(self.sim.catalogue_url, self.http).pages(filter_text) for r in page]
        products = [p for p in map(parse_product, records) if p and p.geocell.grid_id == "N50_E007"]
        assert len(products) == 1
        return products[0]

    def download(self, product, dest, **options):
        options.setdefault("backoff", QUICK)
        return download_product(product, dest, self.session, self.http, self.endpoints, **options)

    def served(self, product) -> bytes:
        """The zip as the download host serves it, fetched with plain requests."""
        reply = requests.get(self.endpoints.product_url(product.id), timeout=30,
                             headers={"Authorization": f"Bearer {self.session.access_token()}"})
        assert reply.status_code == 200
        return reply.content


def downloads(sim) -> list:
    return [r for r in sim.request_log() if r.server == "download"]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_download_is_the_served_zip_verified_and_never_under_a_final_name(make_sim, dest):
    client = Client(make_sim())
    product = client.product()
    reported = []

    result = client.download(product, dest, on_bytes=reported.append)

    served = client.served(product)
    data = result.zip_path.read_bytes()
    assert data == served
    assert hashlib.md5(data).hexdigest() == product.md5
    assert (result.product_id, result.bytes, result.attempts) == (product.id, len(served), 1)
    assert sum(reported) == len(served) and max(reported) <= 1024 * 1024
    # the zip waits for extraction under a hidden temporary name, never as a "product.zip"
    assert result.zip_path.parent == dest and leftovers(dest) == [result.zip_path.name]
    assert result.zip_path.name.startswith(".") and result.zip_path.name.endswith(".cdse-tmp")
    [get] = downloads(client.sim)[:1]
    assert (get.status, get.user, get.bytes_sent) == (200, "demo@example.com", len(served))

    dem = extract_dem(result.zip_path, dest, expected_name=DEM_90)
    assert dem == dest / DEM_90 and dem.stat().st_size > 0


@pytest.mark.parametrize("checksums", ["md5+blake3", "md5", "blake3"])
def test_a_corrupted_body_is_fetched_again(make_sim, dest, checksums):
    """Either catalogue checksum alone catches one altered byte in a body of the right length."""
    client = Client(make_sim(faults=Faults(corrupt_first=1)))
    product = client.product()
    assert product.md5 and product.blake3
    product = dataclasses.replace(product, md5=product.md5 if "md5" in checksums else None,
                                  blake3=product.blake3 if "blake3" in checksums else None)
    reported = []

    result = client.download(product, dest, on_bytes=reported.append)

    assert result.zip_path.read_bytes() == client.served(product)
    assert result.attempts == 2
    assert [(r.status, r.fault) for r in downloads(client.sim)][:2] == [(200, "corrupt"), (200, None)]
    assert sum(reported) == result.bytes  # the bad try's bytes were taken back
    assert leftovers(dest) == [result.zip_path.name]


def test_dropped_connections_are_retried(make_sim, dest):
    client = Client(make_sim(faults=Faults(drop_first=2)))
    product = client.product()

    result = client.download(product, dest)

    assert result.zip_path.read_bytes() == client.served(product)
    assert result.attempts == 3
    gets = downloads(client.sim)
    assert [r.fault for r in gets][:3] == ["drop", "drop", None]
    assert all(0 < r.bytes_sent < result.bytes for r in gets[:2])
    assert leftovers(dest) == [result.zip_path.name]


def test_a_429_is_retried_no_sooner_than_retry_after(make_sim, dest):
    client = Client(make_sim(faults=Faults(storm_first=2, retry_after=0.4)))
    product = client.product()

    result = client.download(product, dest)

    assert result.zip_path.read_bytes() == client.served(product)
    gets = downloads(client.sim)[:3]
    assert [(r.status, r.fault) for r in gets] == [(429, "storm429"), (429, "storm429"), (200, None)]
    for before, after in itertools.pairwise(gets):
        assert after.started - before.finished >= 0.4  # the backoff alone would wait 0.05 s at most


def test_a_burst_of_5xx_is_retried(make_sim, dest):
    client = Client(make_sim(faults=Faults(error_first=3, retry_after=0)))
    product = client.product()

    result = client.download(product, dest)

    assert result.zip_path.read_bytes() == client.served(product)
    statuses = [r.status for r in downloads(client.sim)][:4]
    assert all(s >= 500 for s in statuses[:3]) and statuses[3] == 200
    assert result.attempts == 4


def test_failures_beyond_the_retry_bound_fail_the_product_and_leave_nothing(make_sim, dest):
    client = Client(make_sim(faults=Faults(drop_first=10)))
    product = client.product()
    reported = []

    with pytest.raises(DownloadFailed, match="failed after 3 tries: connection dropped") as err:
        client.download(product, dest, backoff=Backoff(attempts=3, base=0.01), on_bytes=reported.append)

    assert product.id in str(err.value)
    assert len(downloads(client.sim)) == 3
    assert leftovers(dest) == []
    assert sum(reported) == 0


def test_no_ccm_access_stops_with_what_to_do(make_sim, dest):
    client = Client(make_sim(users=[User("noccm@example.com", "noccm", ccm=False)]), NOCCM)
    product = client.product("CCM")

    with pytest.raises(AccessDenied) as err:
        client.download(product, dest)

    message = str(err.value)
    assert "DAT-ZIP-608" in message and "\n" not in message
    assert "not registered for Copernicus Contributing Missions (CCM) data" in message
    assert "CDSE profile" in message and "request access" in message
    assert "--collection COP-DEM" in message
    assert [r.status for r in downloads(client.sim)] == [403]  # not retried
    assert leftovers(dest) == []  # the error body was not saved

    # the advice works: the same account may fetch the COP-DEM collection
    cop = client.download(client.product("COP-DEM"), dest)
    assert cop.zip_path.stat().st_size == cop.bytes > 0


def test_an_expired_token_is_refreshed_once_and_the_download_retried(make_sim, dest):
    sim = make_sim(access_lifetime=1.0)
    frozen = [1000.0]  # the session believes its token fresh; the server knows better
    client = Client(sim, clock=lambda: frozen[0])
    product = client.product()
    time.sleep(1.2)

    result = client.download(product, dest)

    gets = downloads(sim)
    assert [r.status for r in gets] == [401, 200]
    assert result.attempts == 2
    assert len([r for r in sim.request_log() if r.grant_type == "refresh_token"]) == 1
    assert len([r for r in sim.request_log() if r.grant_type == "password"]) == 1
    assert result.zip_path.read_bytes() == client.served(product)


def test_a_stop_cancels_a_stalled_body_promptly_and_removes_the_temporary(make_sim, dest):
    sim = make_sim(faults=Faults(slow_first=1, slow_seconds=60))
    client = Client(sim)
    product = client.product()
    stop = threading.Event()
    outcome = []

    def run():
        try:
            outcome.append(client.download(product, dest, stop=stop))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while not list(dest.glob("*.cdse-tmp")) and time.monotonic() < deadline:
        time.sleep(0.02)  # wait for the headers: then the body stalls for 60 s
    assert list(dest.glob("*.cdse-tmp"))  # a temporary is being written
    assert [(r.status, r.fault) for r in downloads(sim)] == [(200, "slow")]
    stop.set()
    worker.join(timeout=5)

    assert not worker.is_alive()  # long before the 60 s stall would have ended
    assert len(outcome) == 1 and isinstance(outcome[0], DownloadCancelled)
    assert leftovers(dest) == []
    assert len(downloads(sim)) == 1  # not retried


def test_a_stop_during_a_backoff_wait_cancels_without_another_request(make_sim, dest):
    sim = make_sim(faults=Faults(error_first=1, retry_after=0))
    client = Client(sim)
    product = client.product()
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()

    with pytest.raises(DownloadCancelled):
        client.download(product, dest, stop=stop, backoff=Backoff(attempts=5, base=60, cap=60, jitter=0))

    assert len(downloads(sim)) == 1
    assert leftovers(dest) == []


def test_no_new_download_starts_once_the_budget_is_spent(make_sim, dest):
    clock = [1000.0]
    client = Client(make_sim(), clock=lambda: clock[0], max_minutes=1)
    product = client.product()
    clock[0] += 61

    with pytest.raises(BudgetExhausted):
        client.download(product, dest)

    assert downloads(client.sim) == []
    assert leftovers(dest) == []


def test_an_unknown_product_fails_at_once_with_the_servers_code(make_sim, dest):
    client = Client(make_sim())
    product = client.product()
    ghost = dataclasses.replace(product, id="00000000-0000-0000-0000-000000000000")

    with pytest.raises(DownloadFailed, match="HTTP 404 DAT-ZIP-111"):
        client.download(ghost, dest)

    assert [r.status for r in downloads(client.sim)] == [404]
    assert leftovers(dest) == []


def test_a_redirect_is_not_followed_so_the_token_stays_on_the_download_host(make_sim, dest):
    """Pointed at the catalogue host (which answers 301 to the download host), nothing is followed."""
    client = Client(make_sim())
    product = client.product()
    via_catalogue = Endpoints(token_url=client.sim.token_url, catalogue_url=client.sim.catalogue_url,
                              download_url=client.sim.catalogue_url)

    with pytest.raises(DownloadFailed, match="redirected"):
        download_product(product, dest, client.session, client.http, via_catalogue, backoff=QUICK)

    assert downloads(client.sim) == []
    [value] = [r for r in client.sim.request_log() if r.path.endswith("/$value")]
    assert value.status == 301
    assert leftovers(dest) == []


def test_a_length_other_than_the_catalogues_is_never_accepted(make_sim, dest):
    client = Client(make_sim())
    product = client.product()
    stale = dataclasses.replace(product, content_length=product.content_length + 1, md5=None, blake3=None)

    with pytest.raises(DownloadFailed, match="announces"):
        client.download(stale, dest, backoff=Backoff(attempts=2, base=0.01))

    assert len(downloads(client.sim)) == 2
    assert leftovers(dest) == []
