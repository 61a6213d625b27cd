"""The readiness verdict and Sen2Cor's missing-tiles list, without servers or files."""

import pytest

from cdse_dem.catalogue import Product
from cdse_dem.errors import UsageError
from cdse_dem.grid import Geocell
from cdse_dem.planning import TilePlan, apply_area, apply_other_datasets, cells_failed, start_plan
from cdse_dem.report import NOT_ON_LIST, parse_missing_list, report_lines, tile_readiness
from cdse_dem.tiles import Entry

LAND1, LAND2, SEA1 = Geocell(-38, 149), Geocell(-37, 149), Geocell(-39, 150)


def tile(name, cells):
    return TilePlan(Entry(name, "command line", None, tile=name), name, "computed", cells)


def name(cell):
    return cell.dem_file_name(90, "DGED")


def searched(cells, with_product):
    """A plan of one tile whose catalogue answer lists products for ``with_product`` only (no other
    dataset has the others: open sea)."""
    t = tile("56HKD", cells)
    plan = start_plan([t], name, lambda n: None)
    apply_area(plan, t.geocells, {c: Product(f"id-{c.grid_id}", "n", c, 10, None, None, "2024_1", "", "", "", True)
                                  for c in with_product})
    apply_other_datasets(plan, t.geocells, {})
    return plan, t


def test_every_file_whole_and_the_sea_cell_skipped_is_ready():
    plan, t = searched([LAND1, LAND2, SEA1], [LAND1, LAND2])
    verdict = tile_readiness(plan, t, {name(LAND1): None, name(LAND2): None})
    assert verdict.ready and (verdict.present, verdict.sea, verdict.missing) == (2, 1, ())


def test_a_missing_and_a_broken_file_are_named_with_their_reason_and_cdse_has_them():
    plan, t = searched([LAND1, LAND2, SEA1], [LAND1, LAND2])
    verdict = tile_readiness(plan, t, {name(LAND1): "truncated (100 bytes)"})
    assert not verdict.ready
    assert [(m.file_name, m.reason, m.on_cdse) for m in verdict.missing] == [
        ("Copernicus_DSM_30_S38_00_E149_00_DEM.tif", "truncated (100 bytes)", True),
        ("Copernicus_DSM_30_S37_00_E149_00_DEM.tif", "missing", True)]
    lines = report_lines([verdict], "/data/dem")
    assert lines[1] == "  56HKD  not ready (3 geocells: 0 present, 1 open sea, 2 missing)"
    assert "Copernicus_DSM_30_S38_00_E149_00_DEM.tif: truncated (100 bytes); on CDSE" in lines[2]
    assert lines[-1] == "  Total: 0 of 1 tiles ready"


def test_a_sea_cell_not_on_sen2cors_list_is_missing_and_one_on_it_is_not():
    plan, t = searched([LAND1, SEA1], [LAND1])
    whole = {name(LAND1): None}
    off_list = parse_missing_list("Copernicus_DSM_30_N00_00_W001_00_DEM.tif\n", "m.list", 90)
    verdict = tile_readiness(plan, t, whole, off_list)
    assert [(m.grid_id, m.reason, m.on_cdse) for m in verdict.missing] == [("S39_E150", NOT_ON_LIST, False)]
    on_list = parse_missing_list("Copernicus_DSM_30_S39_00_E150_00_DEM.tif\n", "m.list", 90)
    assert tile_readiness(plan, t, whole, on_list).ready


def test_a_failed_search_leaves_whether_cdse_has_the_file_unknown():
    t = tile("56HKD", [LAND1, SEA1])
    plan = start_plan([t], name, lambda n: None)
    cells_failed(plan, t.geocells, "CDSE catalogue gave HTTP 503 after 6 tries")
    verdict = tile_readiness(plan, t, {})
    assert [(m.grid_id, m.on_cdse) for m in verdict.missing] == [("S38_E149", None), ("S39_E150", None)]
    assert report_lines([verdict], "/d")[2].endswith(
        "missing; whether CDSE has it is unknown: the catalogue search failed (logged above)")
    assert verdict.to_dict()["missing"][0] == {"file": "Copernicus_DSM_30_S38_00_E149_00_DEM.tif",
                                                 "grid_id": "S38_E149", "reason": "missing", "on_cdse": None}


def test_the_missing_list_takes_sen2cors_lines_and_keeps_bare_names_apart():
    text = "Copernicus_DSM_30_S39_00_E150_00_DEM.tif\r\n\n  Copernicus_DSM_30_N00_00_W001_00  \n"
    parsed = parse_missing_list(text, "m.list", 90)
    assert parsed.cells == {SEA1}  # Sen2Cor matches up to ".tif": the bare name skips nothing
    assert parsed.unmatched == ("m.list:3",)


@pytest.mark.parametrize(("text", "message"), [
    ("Copernicus_DSM_30_S39_00_E150_00_DEM.tif\n# comment\n",
     "m.list:2: '# comment' is not a Copernicus DEM file name such as Copernicus_DSM_30_N00_00_W001_00_DEM.tif"),
    ("Copernicus_DSM_10_S39_00_E150_00_DEM.tif\n",
     "m.list:1: 'Copernicus_DSM_10_S39_00_E150_00_DEM.tif' is a 30 m cell, but the check is for 90 m "
     "(Sen2Cor's CopernicusDEM_90_TIFF_missing_tiles.list)"),
    ("\nCopernicus_DSM_30_S39_00_E150_00_DEM.dt1\n", "m.list:2: 'Copernicus_DSM_30_S39_00_E150_00_DEM.dt1' is not"),
])
def test_a_line_that_is_not_a_cell_is_a_file_line_error(text, message):
    with pytest.raises(UsageError) as caught:
        parse_missing_list(text, "m.list", 90)
    assert str(caught.value).startswith(message)
