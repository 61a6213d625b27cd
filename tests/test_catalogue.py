"""Catalogue queries, product records and the choice among products: the pure core."""

import json
import time

import pytest
import shapely

from cdse_dem.catalogue import Product, Rect, SearchArea, choose, dataset_filter, intersects, parse_product
from cdse_dem.grid import Geocell
from tests.helpers import product_filter


def test_ccm_search_is_the_real_query():
    area = SearchArea((Rect(south=49, west=7, north=50, east=8),))
    assert area.filter_text(dataset_filter("CCM", 90, "DGED", "2024_1")) == (
        "Collection/Name eq 'CCM' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'dataset' "
        "and att/OData.CSC.StringAttribute/Value eq 'COP-DEM_GLO-90-DGED/2024_1') and "
        "OData.CSC.Intersects(area=geography'SRID=4326;POLYGON((8 49,8 50,7 50,7 49,8 49))')")


@pytest.mark.parametrize("resolution, model, product_type", [
    (30, "DGED", "DGE_30"), (90, "DGED", "DGE_90"), (30, "DTED", "DTE_30"), (90, "DTED", "DTE_90")])
def test_cop_dem_filter_uses_product_type(resolution, model, product_type):
    assert dataset_filter("COP-DEM", resolution, model, "2024_1") == (
        "Collection/Name eq 'COP-DEM' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' "
        f"and att/OData.CSC.StringAttribute/Value eq '{product_type}')")


def test_an_area_is_written_as_cdse_documents_it():
    """No space after a comma or before a parenthesis (each costs 3 characters of URL), at most 6 decimals."""
    polygon = shapely.Polygon([(-179.5, -16.8), (180, -16.8), (180, -16.2), (7.123456789, -16.2), (-179.5, -16.8)])
    assert intersects(polygon) == ("OData.CSC.Intersects(area=geography'SRID=4326;"
                                   "POLYGON((-179.5 -16.8,180 -16.8,180 -16.2,7.123457 -16.2,-179.5 -16.8))')")


def record(**over):
    base = {
        "@odata.mediaContentType": "application/octet-stream",
        "Id": "2d5696bc-0c5e-5be4-911a-a033ee0bb32a",
        "Name": "DEM1_SAR_DGE_90_20110109T053019_20140821T053111_ADS_000000_4Mlj.DEM",
        "ContentLength": 13102345,
        "ModificationDate": "2024-10-01T10:00:00.000000Z",
        "Online": True,
        "S3Path": "/eodata/CCM/COP-DEM_GLO-90-DGED/SAR_DGE_90_A407/x",
        "Checksum": [{"Value": "d41d8cd98f00b204e9800998ecf8427e", "Algorithm": "MD5", "ChecksumDate": "x"},
                     {"Value": "af13", "Algorithm": "BLAKE3", "ChecksumDate": "x"}],
        "Footprint": "geography'SRID=4326;POLYGON ((7 50, 8 50, 8 51, 7 51, 7 50))'",
        "Attributes": [
            {"@odata.type": "#OData.CSC.StringAttribute", "Name": "gridId", "Value": "N50_E007", "ValueType": "String"},
            {"@odata.type": "#OData.CSC.StringAttribute", "Name": "dataset", "Value": "COP-DEM_GLO-90-DGED/2023_1",
             "ValueType": "String"}],
    }
    base.update(over)
    return base


def test_parse_product_takes_geocell_from_grid_id_and_checksums():
    product = parse_product(record())
    assert product.geocell == Geocell(50, 7)
    assert product.md5 == "d41d8cd98f00b204e9800998ecf8427e" and product.blake3 == "af13"
    assert product.delivery == "2023_1" and product.content_length == 13102345


def test_parse_product_without_grid_id_uses_the_footprint():
    product = parse_product(record(Attributes=[], Checksum=[], ContentLength=0,
                                   Footprint="geography'SRID=4326;POLYGON ((-180 -85, -179 -85, -179 -84, "
                                             "-180 -84, -180 -85))'"))
    assert product.geocell == Geocell(-85, -180)
    assert product.md5 is None and product.content_length is None and product.delivery is None


def make(cell, pid, delivery="2024_1", modified="2024-01-01T00:00:00.000000Z"):
    return Product(pid, "n", cell, 1, None, None, delivery, modified, "", "", True)


def test_choose_drops_touching_neighbours_and_picks_one_per_cell_deterministically():
    a, b, c = Geocell(50, 7), Geocell(50, 8), Geocell(51, 7)
    products = [
        make(a, "id-1", "2023_1", "2025-01-01T00:00:00.000000Z"),
        make(a, "id-2", "2024_1", "2024-01-01T00:00:00.000000Z"),  # newest delivery wins
        make(b, "id-3", modified="2024-01-01T00:00:00.000000Z"),
        make(b, "id-4", modified="2024-06-01T00:00:00.000000Z"),  # then newest ModificationDate
        make(c, "id-5"),  # a neighbour: not wanted
    ]
    for order in (products, products[::-1]):
        chosen = choose(order, [a, b])
        assert {cell: p.id for cell, p in chosen.items()} == {a: "id-2", b: "id-4"}
    same = [make(a, "id-b"), make(a, "id-a")]
    assert choose(same, [a])[a].id == choose(same[::-1], [a])[a].id == "id-b"


class _Reply:
    """A 200 answer as the catalogue reads it: streamed (its size is capped as it is read)."""

    status_code = 200

    def __init__(self, body):
        self.body, self.headers = body, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def iter_content(self, chunk_size=1):
        yield json.dumps(self.body).encode()


class _PagedHttp:
    """Pages of one record each; each page's nextLink is made by ``next_link(n)``."""

    def __init__(self, next_link, pages=3):
        self.next_link, self.pages, self.urls = next_link, pages, []

    def get(self, url, timeout=None, stream=False):
        self.urls.append(url)
        n = len(self.urls)
        body = {"value": [record(Id=f"id-{n}")]}
        if n < self.pages:
            body["@odata.nextLink"] = self.next_link(n)
        return _Reply(body)


def test_search_is_ordered_and_follows_pages_on_the_catalogue():
    from cdse_dem.catalogue import Catalogue

    base = "https://catalogue.dataspace.copernicus.eu/odata/v1"
    http = _PagedHttp(lambda n: f"{base}/Products?%24filter=x&%24orderby=ContentDate%2FStart+asc&%24skip={n * 1000}")
    assert [r["Id"] for page in Catalogue(base, http).pages("x") for r in page] == ["id-1", "id-2", "id-3"]
    assert "&$orderby=ContentDate%2FStart%20asc&" in http.urls[0]


def test_a_next_page_on_another_host_is_not_followed():
    from cdse_dem.catalogue import Catalogue
    from cdse_dem.errors import ServiceError

    http = _PagedHttp(lambda n: "https://elsewhere.example/odata/v1/Products?$skip=1000")
    with pytest.raises(ServiceError, match="elsewhere"):
        list(Catalogue("https://catalogue.dataspace.copernicus.eu/odata/v1", http).pages("x"))
    assert len(http.urls) == 1


def test_a_search_past_the_skip_limit_asks_for_a_split():
    from cdse_dem.catalogue import MAX_SKIP, Catalogue, TooManyResults

    base = "http://127.0.0.1:1/odata/v1"
    http = _PagedHttp(lambda n: f"{base}/Products?$top=1000&$skip={n * 1000}", pages=100)
    with pytest.raises(TooManyResults):
        list(Catalogue(base, http).pages("x"))
    assert len(http.urls) == MAX_SKIP // 1000 + 1  # skip 0 .. 10,000, and no request beyond


def test_product_without_grid_id_or_footprint_takes_the_cell_from_eop_identifier():
    rec = record(Footprint="", Attributes=[
        {"Name": "eopIdentifier", "Value": "urn:eop:DLR:CDEM90:Copernicus_DSM_30_S26_00_E112_00:V2957"}])
    assert parse_product(rec).geocell == Geocell(-26, 112)


# --- retries, against the simulator (the waits injected: none is sat out) -------------------------

@pytest.fixture
def small_sim(make_sim, tmp_path_factory):
    """``make_sim`` with a two-cell product list (indexing the real lists is slow)."""
    cells = tmp_path_factory.mktemp("cells")
    for name in ("copdem_glo30_cells.txt", "copdem_glo90_cells.txt"):
        (cells / name).write_text("N50_E007\nN50_E008\n")
    return lambda **overrides: make_sim(cells_dir=cells, **overrides)


def _searcher(sim, **options):
    from cdse_dem.catalogue import Catalogue
    from cdse_dem.http import Endpoints, new_http_session

    http = new_http_session(endpoints=Endpoints(sim.token_url, sim.catalogue_url, sim.download_url))
    return Catalogue(sim.catalogue_url, http, **options)


def _searches(sim) -> list:
    return [r for r in sim.request_log() if r.path.endswith("/Products")]


AREA = "POLYGON((7 49,8 49,8 50,7 50,7 49))"


BACKOFF = [0.0, 1.0, 2.0, 4.0, 8.0]  # urllib3's (factor 0.5) before tries 2..6, each up to 0.5 s longer
INSIDE_N50_E007 = "POLYGON((7.2 50.2,7.8 50.2,7.8 50.8,7.2 50.8,7.2 50.2))"


def test_a_catalogue_that_never_answers_json_is_one_error_after_six_tries(small_sim, caplog):
    import logging

    from cdse_dem.errors import ServiceError
    from simulator import Faults

    sim = small_sim(faults=Faults(catalogue_garbage_rate=1.0))
    waits = []
    with caplog.at_level(logging.WARNING, logger="cdse_dem"), pytest.raises(ServiceError) as info:
        list(_searcher(sim, sleep=waits.append).pages(product_filter("CCM", 90, "DGED", "2024_1", AREA)))
    assert str(info.value) == ("CDSE catalogue gave an answer that is not JSON after 6 tries"
                               f" ({sim.catalogue_url}/Products)")
    assert [r.fault for r in _searches(sim)] == ["garbage"] * 6
    assert len(waits) == 5
    for wait, backoff in zip(waits, BACKOFF, strict=True):
        assert backoff <= wait <= backoff + 0.5
    assert [r.getMessage() for r in caplog.records] == [
        f"CDSE catalogue gave an answer that is not JSON; retrying in {wait:.1f} s" for wait in waits]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_catalogue_error_is_retried_waiting_as_asked_then_answers(small_sim, caplog, status):
    import logging

    from simulator import Faults

    sim = small_sim(faults=Faults(catalogue_error_first=2, catalogue_error_status=status, retry_after=3))
    waits = []
    with caplog.at_level(logging.WARNING, logger="cdse_dem"):
        records = [r for page in _searcher(sim, sleep=waits.append).pages(
            product_filter("CCM", 90, "DGED", "2024_1", INSIDE_N50_E007)) for r in page]
    assert [parse_product(r).geocell for r in records] == [Geocell(50, 7)]
    assert [r.status for r in _searches(sim)] == [status, status, 200]
    if status == 503:  # the simulator's catalogue sends Retry-After with a 503 only: 3 s, longer than the backoff
        assert waits == [3.0, 3.0]
    else:  # the backoff: none before the second try, 1 s (and up to 0.5 s of jitter) before the third
        assert waits[0] == 0.0 and 1.0 <= waits[1] <= 1.5
    assert [r.getMessage() for r in caplog.records] == [
        f"CDSE catalogue gave HTTP {status}; retrying in {wait:.1f} s" for wait in waits]


def test_a_catalogue_that_stays_in_error_names_the_last_status(small_sim):
    from cdse_dem.errors import ServiceError
    from simulator import Faults

    sim = small_sim(faults=Faults(catalogue_error_rate=1.0, retry_after=0))
    with pytest.raises(ServiceError) as info:
        list(_searcher(sim, sleep=lambda seconds: None).pages(product_filter("CCM", 90, "DGED", "2024_1", AREA)))
    assert str(info.value) == f"CDSE catalogue gave HTTP 503 after 6 tries ({sim.catalogue_url}/Products)"
    assert len(_searches(sim)) == 6


def test_a_stop_during_a_retry_wait_ends_the_search_with_no_further_request(small_sim):
    import threading

    from cdse_dem.catalogue import SearchCancelled
    from simulator import Faults

    sim = small_sim(faults=Faults(catalogue_error_rate=1.0, retry_after=50))  # a wait no test could sit out
    stop = threading.Event()

    def stop_once_refused():
        while not _searches(sim):
            stop.wait(0.005)
        stop.set()

    threading.Thread(target=stop_once_refused, daemon=True).start()
    with pytest.raises(SearchCancelled):
        list(_searcher(sim, stop=stop).pages(product_filter("CCM", 90, "DGED", "2024_1", AREA)))
    assert len(_searches(sim)) == 1


def test_retry_after_is_read_in_seconds_or_as_a_date_capped_at_a_minute_and_ignored_when_unreadable():
    from email.utils import formatdate

    from cdse_dem.http import catalogue_retry

    class Answer:
        def __init__(self, value):
            self.headers = {"Retry-After": value}

    retry = catalogue_retry()
    assert retry.get_retry_after(Answer("2.5")) == 2.5
    assert retry.get_retry_after(Answer("3600")) == 60.0
    assert retry.get_retry_after(Answer(formatdate(time.time() + 3600, usegmt=True))) == 60.0
    assert retry.get_retry_after(Answer(formatdate(time.time() - 3600, usegmt=True))) == 0.0
    assert retry.get_retry_after(Answer("soon")) is None
