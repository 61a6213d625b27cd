"""Covering wanted geocells with few catalogue searches: the pure core, without a server."""

import random
from urllib.parse import parse_qs, urlsplit

import pytest

from cdse_dem.catalogue import (
    MAX_RECT_WIDTH,
    MAX_URL_LENGTH,
    Answer,
    Product,
    Rect,
    SearchArea,
    dataset_filter,
    plan_search_areas,
    rectangles,
)
from cdse_dem.grid import Geocell
from tests.hostile import product_id, record

REAL_CATALOGUE = "https://catalogue.dataspace.copernicus.eu/odata/v1"
CCM_90 = dataset_filter("CCM", 90, "DGED", "2024_1")


def block(south, west, north, east):
    return [Geocell(lat, lon) for lat in range(south, north) for lon in range(west, east)]


def covered(rects):
    cells = [cell for rect in rects for cell in rect.cells()]
    assert len(cells) == len(set(cells)), "a cell is covered twice"
    return set(cells)


def product(cell, pid="p"):
    return Product(id=f"{pid}-{cell.grid_id}", name="x.DEM", geocell=cell, content_length=1, md5=None, blake3=None,
                   delivery="2024_1", modification_date="2024-01-01", footprint_wkt="", s3_path="", online=True)


def test_a_block_of_cells_is_one_rectangle():
    assert rectangles(block(48, 2, 51, 7)) == [Rect(48, 2, 51, 7)]


def test_a_row_wider_than_the_limit_is_cut():
    rects = rectangles(block(10, -30, 11, 15))
    assert all(r.east - r.west <= MAX_RECT_WIDTH for r in rects)
    assert covered(rects) == set(block(10, -30, 11, 15)) and len(rects) == 3


def test_rectangles_cover_exactly_the_wanted_cells():
    rng = random.Random(7)
    wanted = set(rng.sample(block(-60, -180, 80, 180), 3000)) | set(block(40, -5, 55, 20))
    assert covered(rectangles(wanted)) == wanted


def test_holes_stay_out_of_the_rectangles():
    wanted = set(block(0, 0, 3, 3)) - {Geocell(1, 1)}
    rects = rectangles(wanted)
    assert covered(rects) == wanted and Geocell(1, 1) not in covered(rects)


def test_one_search_for_a_region_ordered_paged_by_1000():
    (area,) = plan_search_areas(block(43, -2, 56, 20), REAL_CATALOGUE, CCM_90)
    url = area.url(REAL_CATALOGUE, CCM_90)
    query = parse_qs(urlsplit(url).query)
    assert query["$orderby"] == ["ContentDate/Start asc"]
    assert query["$top"] == ["1000"] and query["$expand"] == ["Attributes"] and "$skip" not in query
    assert query["$filter"][0].startswith(
        "Collection/Name eq 'CCM' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'dataset' "
        "and att/OData.CSC.StringAttribute/Value eq 'COP-DEM_GLO-90-DGED/2024_1') and ")


def test_several_rectangles_are_an_or_of_intersects():
    area = SearchArea((Rect(0, 0, 1, 2), Rect(5, 5, 6, 6)))
    assert area.filter_text(CCM_90) == (
        CCM_90 + " and (OData.CSC.Intersects(area=geography'SRID=4326;POLYGON((2 0,2 1,0 1,0 0,2 0))') or "
        "OData.CSC.Intersects(area=geography'SRID=4326;POLYGON((6 5,6 6,5 6,5 5,6 5))'))")


def test_the_filter_is_in_the_catalogue_grammar():
    from simulator.odata_filter import parse_filter

    for area in plan_search_areas(random.Random(3).sample(block(-50, -170, 70, 170), 500), REAL_CATALOGUE, CCM_90):
        parse_filter(area.filter_text(CCM_90))  # raises on anything the grammar does not take


def test_scattered_cells_are_few_searches_with_short_urls_and_every_cell_once():
    wanted = set(random.Random(11).sample(block(-60, -180, 80, 180), 2000))
    areas = plan_search_areas(wanted, REAL_CATALOGUE, CCM_90)
    assert all(len(a.url(REAL_CATALOGUE, CCM_90)) <= MAX_URL_LENGTH for a in areas)
    assert covered([r for a in areas for r in a.rects]) == wanted
    assert len(areas) <= 2000 / 20  # many rectangles per search (single cells here: the worst case)


def test_a_search_reaches_a_bounded_number_of_cells():
    areas = plan_search_areas(block(-40, -180, 40, 180), REAL_CATALOGUE, CCM_90)
    for area in areas:
        reach = set().union(*(r.touched() for r in area.rects))
        assert len(reach) <= 2500
    assert covered([r for a in areas for r in a.rects]) == set(block(-40, -180, 40, 180))


def test_only_products_of_covered_cells_count():
    area = SearchArea((Rect(48, 2, 50, 4),))
    answer = Answer(area.cells)
    answer.add([record(49, 3), record(50, 3), record(47, 1)])  # inside, an edge neighbour, a corner neighbour
    assert list(answer.products) == [Geocell(49, 3)]
    assert answer.products[Geocell(49, 3)].id == product_id(49, 3)


def test_split_halves_cover_the_same_cells():
    one = SearchArea((Rect(10, 10, 14, 30),))
    first, second = one.split()
    assert first.cells | second.cells == one.cells and not first.cells & second.cells
    many = SearchArea(tuple(Rect(0, lon, 1, lon + 1) for lon in range(0, 10, 2)))
    first, second = many.split()
    assert first.cells | second.cells == many.cells and len(first.rects) == 2 and len(second.rects) == 3
    with pytest.raises(ValueError, match="N00_E000"):
        SearchArea((Rect(0, 0, 1, 1),)).split()


def test_antimeridian_and_pole_cells():
    wanted = {Geocell(65, 179), Geocell(65, -180), Geocell(89, 10)}
    areas = plan_search_areas(wanted, REAL_CATALOGUE, CCM_90)
    assert covered([r for a in areas for r in a.rects]) == wanted
    text = areas[0].filter_text(CCM_90)
    assert "POLYGON((180 65,180 66,179 66,179 65,180 65))" in text and "90" in text
