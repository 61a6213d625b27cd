"""Catalogue queries, product records and the choice among products: the pure core."""

import pytest

from cdse_dem.catalogue import Product, choose, parse_product, product_filter
from cdse_dem.geocells import Geocell

AREA = "POLYGON((7 49,8 49,8 50,7 50,7 49))"


def test_ccm_filter_is_the_real_query():
    assert product_filter("CCM", 90, "DGED", "2024_1", AREA) == (
        "Collection/Name eq 'CCM' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'dataset' "
        "and att/OData.CSC.StringAttribute/Value eq 'COP-DEM_GLO-90-DGED/2024_1') and "
        "OData.CSC.Intersects(area=geography'SRID=4326;POLYGON((7 49,8 49,8 50,7 50,7 49))')")


@pytest.mark.parametrize("resolution, model, product_type", [
    (30, "DGED", "DGE_30"), (90, "DGED", "DGE_90"), (30, "DTED", "DTE_30"), (90, "DTED", "DTE_90")])
def test_cop_dem_filter_uses_product_type(resolution, model, product_type):
    text = product_filter("COP-DEM", resolution, model, "2024_1", AREA)
    assert text.startswith("Collection/Name eq 'COP-DEM' and ")
    assert f"att/Name eq 'productType' and att/OData.CSC.StringAttribute/Value eq '{product_type}')" in text


def test_query_polygon_contains_the_tile_and_is_short():
    from shapely import wkt

    from cdse_dem.catalogue import area_wkt
    from cdse_dem.footprint import computed_footprint

    footprint = computed_footprint("32UMA")
    (query,) = footprint.query_parts()
    text = area_wkt(query)
    assert text.startswith("POLYGON((") and text.endswith("))")
    assert wkt.loads(text).contains(footprint.parts[0])
    assert len(text) < 400


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
