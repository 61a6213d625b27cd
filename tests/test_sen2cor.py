"""Sen2Cor's rectangle: the rule on its own, named tiles, and the command line against the simulator.

Expected cells are written out by hand from each tile's four UTM corners (in lon/lat, as in
the KML's LL_WKT, quoted beside each case) and sen2cor.md's rule: every bound floored as
``int(v) if v > 0 else int(v) - 1``, every (lat, lon) pair; across ±180° the columns
``range(-180, int(lonMin)) + range(int(lonMax), 180)``. The all-tiles check is in
test_kml_all_tiles.py.
"""

import json

import pytest

from cdse_dem.grid import Geocell, computed_footprints, geocells_of_each, parse_grid_id
from cdse_dem.sen2cor import cells_with_reasons, rectangle_cells, sen2cor_cells, sen2cor_floor
from cdse_dem.settings import Coverage
from tests.helpers import check_consistent, cli_env, dem_files, downloads, run_cli


def ids(cells) -> list[str]:
    return sorted(c.grid_id for c in cells)


def cells(*grid_ids: str) -> list[Geocell]:
    return sorted(parse_grid_id(g) for g in grid_ids)


@pytest.mark.parametrize("value, floored", [
    (0.5, 0), (37.0, 37), (37.9, 37),  # positive: truncated
    (-0.5, -1), (-37.2, -38),  # negative: one below the truncation, as math.floor
    (-37.0, -38), (0.0, -1),  # Sen2Cor's quirk: a negative whole number or 0 goes one lower than math.floor
])
def test_sen2cor_floors_bounds_its_own_way(value, floored):
    assert sen2cor_floor(value) == floored


def test_a_corner_on_a_negative_whole_degree_adds_a_row_and_a_column():
    # corners spanning lon 10.2..11.0 and lat -37.0..-36.1: math.floor would give 2 x 1 cells
    rect = rectangle_cells([10.2, 11.0, 11.0, 10.2], [-36.1, -36.1, -37.0, -37.0])
    assert ids(rect) == ["S37_E010", "S37_E011", "S38_E010", "S38_E011"]


def test_across_the_antimeridian_the_columns_are_taken_as_sen2cor_takes_them():
    # lonMin = -179.7 (most negative), lonMax = 179.5 (most positive): columns -180 and 179 only;
    # 178 (corner 178.2) and -179 (corner -178.4) are missed, as Sen2Cor misses them
    rect = rectangle_cells([178.2, 179.5, -179.7, -178.4], [10.2, 10.9, 10.9, 10.2])
    assert ids(rect) == ["N10_E179", "N10_W180"]


def test_cells_that_cannot_exist_are_left_out():
    # a corner exactly on -180° floors to column -181, which no geocell has
    assert ids(rectangle_cells([-180.0, -179.5, -179.5, -180.0], [50.5, 50.5, 50.2, 50.2])) == [
        "N50_W180"]
    # exactly on +180°: column 180, none either
    assert ids(rectangle_cells([179.2, 180.0, 180.0, 179.2], [50.5, 50.5, 50.2, 50.2])) == ["N50_E179"]
    # a latitude bound beyond the poles' last row
    assert ids(rectangle_cells([5.5, 5.6, 5.6, 5.5], [89.5, 89.5, 90.0, 90.0])) == ["N89_E005"]


# tile: (corners UL, UR, LR, LL in lon/lat from the KML, rounded), cells its true area overlaps,
# cells only Sen2Cor's rectangle adds
NAMED = {
    # lon 149.584..150.862 → 149..150; lat -38.016..-36.998 → -39..-37 (int(-36.998) - 1)
    "56HKD": ("149.6287 -36.9981, 150.8615 -37.0268, 150.8331 -38.0158, 149.5840 -37.9861",
              ["S39_E150", "S38_E149", "S38_E150", "S37_E149"], ["S37_E150", "S39_E149"]),
    # lon 18.998..20.105 → 18..20; lat 25.215..26.217 → 25..26
    "34RCP": ("18.9983 26.2060, 20.0971 26.2171, 20.1045 25.2257, 19.0148 25.2151",
              ["N25_E019", "N25_E020", "N26_E018", "N26_E019", "N26_E020"], ["N25_E018"]),
    # lon -175.024..-172.714 → -176..-173; lat 62.981..64.013 → 62..64
    "01VFL": ("-174.9543 64.0128, -172.7138 63.9638, -172.8586 62.9811, -175.0236 63.0279",
              ["N62_W174", "N62_W173", "N63_W176", "N63_W175", "N63_W174", "N63_W173", "N64_W175"],
              ["N62_W176", "N62_W175", "N64_W176", "N64_W174", "N64_W173"]),
    # band C. lon -171.002..-161.919 → -172..-162; lat -83.836..-82.785 → -84..-83
    "02CNN": ("-171.0014 -82.8524, -163.1464 -82.7854, -161.9188 -83.7583, -171.0017 -83.8360",
              [f"S84_W{w}" for w in range(162, 173)] + [f"S83_W{w}" for w in range(163, 173)], ["S83_W162"]),
    # across ±180°: lonMin -179.988 → range(-180, -179); lonMax 179.991 → range(179, 180); lat 21..22.
    # The true cells of column 178 are outside Sen2Cor's rectangle: still planned, as footprint
    "60QYK": ("178.9452 22.5953, -179.9877 22.5788, 179.9914 21.5882, 178.9316 21.6038",
              ["N21_E178", "N21_E179", "N22_W180", "N22_E178", "N22_E179"], ["N21_W180"]),
}
SEN2COR_RECTANGLE_60QYK = ["N21_E179", "N21_W180", "N22_E179", "N22_W180"]


@pytest.mark.parametrize("tile", NAMED)
def test_named_tiles_plan_sen2cor_s_cells_and_their_true_cells_with_reasons(tile):
    _, footprint, sen2cor = NAMED[tile]
    true = geocells_of_each(f.parts for f in computed_footprints([tile]))
    assert ids(true[0]) == sorted(footprint)
    (planned,) = cells_with_reasons([tile], true)
    assert list(planned) == sorted(planned)
    assert {c.grid_id: str(r) for c, r in planned.items()} == {
        **dict.fromkeys(footprint, "footprint"), **dict.fromkeys(sen2cor, "sen2cor")}
    (footprint_only,) = cells_with_reasons([tile], true, Coverage.FOOTPRINT)
    assert {c.grid_id: str(r) for c, r in footprint_only.items()} == dict.fromkeys(footprint, "footprint")


def test_60QYK_rectangle_misses_the_western_column_of_the_tile():
    assert ids(sen2cor_cells(["60QYK"])[0]) == SEN2COR_RECTANGLE_60QYK


@pytest.mark.parametrize("tile", NAMED)
def test_named_rectangles_from_the_quoted_corners(tile):
    corners, footprint, sen2cor = NAMED[tile]
    lonlat = [tuple(map(float, p.split())) for p in corners.split(",")]
    expected = SEN2COR_RECTANGLE_60QYK if tile == "60QYK" else sorted(footprint + sen2cor)
    assert ids(rectangle_cells([p[0] for p in lonlat], [p[1] for p in lonlat])) == sorted(expected)
    assert ids(sen2cor_cells([tile])[0]) == sorted(expected)


def test_help_names_the_coverage_option():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--coverage {sen2cor,footprint}" in result.stdout


def test_an_unknown_coverage_is_one_line_and_exit_2():
    result = run_cli("--coverage", "all", "--t", "56HKD", "--dry-run")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("cdse_copernicus_dem_downloader.py: error: argument --coverage: invalid choice: 'all' ")
    assert "sen2cor" in line and "footprint" in line  # quoted or not, by Python version


def by_tile(summary: dict) -> dict[str, dict[str, dict]]:
    return {t["tile"]: {c["grid_id"]: c for c in t["geocells"]} for t in summary["tiles"]}


def dry_run(sim, tmp_path, *args: str):
    """A ``--dry-run`` of the real command line: its result and its summary JSON."""
    summary_path = tmp_path / "plan.json"
    result = run_cli("--dry-run", *args, "--o", tmp_path / "dem", "--summary-json", summary_path, env=sim.env)
    assert result.returncode == 0, result.output
    return result, json.loads(summary_path.read_text())


def test_dry_run_lists_sen2cor_s_cells_with_their_reason(make_sim, shared_data, tool_home, tmp_path):
    # shared_data: the real cell lists, in which S37_E150 is land and S39_E149 sea
    sim = make_sim(cells_dir=shared_data)
    result, summary = dry_run(sim, tmp_path, "--t", "56HKD", "--t", "56HKE")
    block = result.stdout.split("56HKE (footprint")[0]
    lines = {line.split()[0]: line.split() for line in block.splitlines() if line.startswith("  ")}
    assert lines["S37_E150"][2] == "planned" and lines["S37_E150"][-1] == "sen2cor"
    assert lines["S39_E149"][2] == "sea" and lines["S39_E149"][-1] == "sen2cor"
    assert lines["S38_E149"][-1] == "footprint"
    assert "56HKD (footprint: computed): 6 geocells" in result.stdout

    tiles = by_tile(summary)
    assert {g: c["reason"] for g, c in tiles["56HKD"].items()} == {
        "S39_E149": "sen2cor", "S39_E150": "footprint", "S38_E149": "footprint", "S38_E150": "footprint",
        "S37_E149": "footprint", "S37_E150": "sen2cor"}
    # S37_E150: only in 56HKD's rectangle, but 56HKE's true area overlaps it; planned once
    assert tiles["56HKE"]["S37_E150"]["reason"] == "footprint"
    assert tiles["56HKE"]["S37_E150"]["product_id"] == tiles["56HKD"]["S37_E150"]["product_id"] is not None
    assert summary["totals"]["geocells"] == len(set(tiles["56HKD"]) | set(tiles["56HKE"])) == 6
    assert downloads(sim) == []


def test_footprint_coverage_keeps_the_reference_tool_s_set(make_sim, shared_data, tool_home, tmp_path):
    sim = make_sim(cells_dir=shared_data)
    result, summary = dry_run(sim, tmp_path, "--coverage", "footprint", "--t", "56HKD")
    cells_56hkd = by_tile(summary)["56HKD"]
    assert sorted(cells_56hkd) == ["S37_E149", "S38_E149", "S38_E150", "S39_E150"]
    assert {c["reason"] for c in cells_56hkd.values()} == {"footprint"}
    assert "S37_E150" not in result.stdout


def test_a_run_downloads_the_cells_only_sen2cor_asks_for(make_sim, shared_data, tool_home, tmp_path):
    sim = make_sim(cells_dir=shared_data)
    out, summary_path = tmp_path / "dem", tmp_path / "run.json"
    result = run_cli("--t", "56HKD", "--t", "01VFL", "--o", out, "--summary-json", summary_path,
                     env=cli_env(sim))
    assert result.returncode == 0, result.output
    files = dem_files(out)
    assert sorted(files) == sorted(f"Copernicus_DSM_30_{g}_DEM.tif" for g in (
        "S37_00_E149_00", "S37_00_E150_00", "S38_00_E149_00", "S38_00_E150_00",  # S39: open sea
        # 01VFL: its one land cell, and three more that only Sen2Cor's rectangle holds; these lie
        # beyond the footprint's search area, so the tool searched them on their own
        "N64_00_W173_00", "N64_00_W174_00", "N64_00_W175_00", "N64_00_W176_00"))
    check_consistent(out, sim)  # each file is the DEM inside the zip the simulator serves
    tiles = by_tile(json.loads(summary_path.read_text()))
    assert {g: (c["status"], c["reason"]) for g, c in tiles["01VFL"].items() if g.startswith("N64")} == {
        "N64_W173": ("downloaded", "sen2cor"), "N64_W174": ("downloaded", "sen2cor"),
        "N64_W175": ("downloaded", "footprint"), "N64_W176": ("downloaded", "sen2cor")}
    cells_56hkd = tiles["56HKD"]
    assert (cells_56hkd["S37_E150"]["status"], cells_56hkd["S37_E150"]["reason"]) == ("downloaded", "sen2cor")
    # S39_E149 is open sea: no product on CDSE, nothing to download, reported as such
    assert (cells_56hkd["S39_E149"]["status"], cells_56hkd["S39_E149"]["reason"]) == ("sea", "sen2cor")
