"""Catalogue queries, product records and the choice among products: the pure core."""

import json

import pytest
import shapely

from cdse_dem.catalogue import Product, choose, dataset_filter, intersects, parse_product
from cdse_dem.geocells import Geocell
from cdse_dem.search_areas import Rect, SearchArea


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
    assert [r["Id"] for r in Catalogue(base, http).search("x")] == ["id-1", "id-2", "id-3"]
    assert "&$orderby=ContentDate%2FStart%20asc&" in http.urls[0]


def test_a_next_page_on_another_host_is_not_followed():
    from cdse_dem.catalogue import Catalogue
    from cdse_dem.errors import ServiceError

    http = _PagedHttp(lambda n: "https://elsewhere.example/odata/v1/Products?$skip=1000")
    with pytest.raises(ServiceError, match="elsewhere"):
        Catalogue("https://catalogue.dataspace.copernicus.eu/odata/v1", http).search("x")
    assert len(http.urls) == 1


def test_a_search_past_the_skip_limit_asks_for_a_split():
    from cdse_dem.catalogue import MAX_SKIP, Catalogue, TooManyResults

    base = "http://127.0.0.1:1/odata/v1"
    http = _PagedHttp(lambda n: f"{base}/Products?$top=1000&$skip={n * 1000}", pages=100)
    with pytest.raises(TooManyResults):
        Catalogue(base, http).search("x")
    assert len(http.urls) == MAX_SKIP // 1000 + 1  # skip 0 .. 10,000, and no request beyond


def test_product_without_grid_id_or_footprint_takes_the_cell_from_eop_identifier():
    rec = record(Footprint="", Attributes=[
        {"Name": "eopIdentifier", "Value": "urn:eop:DLR:CDEM90:Copernicus_DSM_30_S26_00_E112_00:V2957"}])
    assert parse_product(rec).geocell == Geocell(-26, 112)
