"""Searching by area at the scale of a country and of a continent, against the simulator.

The simulator pages an unordered search in a new order at every request, as CDSE does, so a
client that pages without ``$orderby`` repeats some products and loses others: the 2,000-tile
test then finds land cells "at sea". Search counts are read from the simulator's request log.
The simulator's zips (it makes one per listed product, for its size and checksums) are kept in
the repository's ``.cache/simulator``, shared with the benchmarks, so only the first run ever
pays for making them.
"""

import json
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from cdse_dem.tiles import all_tile_ids
from tests.helpers import ROOT, cli_env, run_cli, whole_dem_bytes

CACHE = ROOT / ".cache" / "simulator"
DATASET = ("CCM", "2024_1", 90, "DGED")


def region(zones: range, bands: str) -> list[str]:
    return sorted(t for t in all_tile_ids() if int(t[:2]) in zones and t[2] in bands)


TILES_300 = region(range(31, 34), "TU") + region(range(34, 35), "T")[:27]  # central Europe
TILES_2000 = region(range(28, 40), "STUV")[:2000]  # Europe, the Mediterranean, the Atlantic edge


@pytest.fixture(scope="module")
def big_sim(tmp_path_factory):
    from simulator import SimulatorConfig, start_simulator

    cells = ROOT.parent / "shared" / "data"  # the real cell lists: thousands of land and sea cells
    if not (cells / "copdem_glo90_cells.txt").is_file():
        pytest.skip(f"the real cell lists in {cells} are absent (the built-in subset is too small for 2,000 tiles)")
    CACHE.mkdir(parents=True, exist_ok=True)
    sim = start_simulator(SimulatorConfig(cache_dir=CACHE, cells_dir=cells))
    yield sim
    sim.stop()


def tile_list(folder: Path, tiles: list[str]) -> Path:
    path = folder / "tiles.txt"
    path.write_text("\n".join(tiles) + "\n")
    return path


def searches(records) -> list[dict]:
    """The query of every catalogue search request (a page is a request)."""
    return [parse_qs(r.query) for r in records if r.server == "catalogue" and r.path.endswith("/Products")]


def dry_run(sim, tmp_path, tiles, *more):
    summary = tmp_path / "summary.json"
    result = run_cli("--i", tile_list(tmp_path, tiles), "--dry-run", "-q", "--summary-json", summary, *more,
                     env=cli_env(sim), timeout=600)
    assert result.returncode == 0, result.output[-3000:]
    return json.loads(summary.read_text())


def cells_of(summary) -> dict[str, dict]:
    return {c["grid_id"]: c for t in summary["tiles"] for c in t["geocells"]}


def test_2000_tiles_every_land_cell_has_its_product_and_every_sea_cell_is_sea(big_sim, tool_home, tmp_path):
    before = len(big_sim.request_log())
    summary = dry_run(big_sim, tmp_path, TILES_2000)
    asked = searches(big_sim.request_log()[before:])
    index = big_sim.services.catalogue.index
    land = sea = 0
    for grid_id, cell in cells_of(summary).items():
        lat = int(grid_id[1:3]) * (1 if grid_id[0] == "N" else -1)
        lon = int(grid_id[5:8]) * (1 if grid_id[4] == "E" else -1)
        products = index.products_in_cell((lat, lon), [DATASET])
        if products:  # newest ModificationDate, then Id, among a doubled cell's two (cdse-api.md §3)
            best = max(products, key=lambda p: (p.modification_date, p.id))
            assert (cell["status"], cell["product_id"]) == ("planned", best.id), grid_id
            land += 1
        else:
            assert (cell["status"], cell["product_id"]) == ("sea", None), grid_id
            sea += 1
    assert land > 1000 and sea > 100
    assert summary["totals"]["failed"] == 0
    # pages were followed (so order mattered), every page ordered, and a few searches did it all
    assert any("$skip" in q for q in asked)
    assert all(q["$orderby"] == ["ContentDate/Start asc"] and q["$top"] == ["1000"] for q in asked)
    areas = {q["$filter"][0] for q in asked}  # (a first run may retry a search while the simulator makes zips)
    others = {text for text in areas if "productType" in text}  # the cells without a product, in every dataset
    assert len(areas - others) <= 4
    # its 609 cells without a product lie in 80 rectangles along the coasts: searched shrunk inside their cells
    # (no neighbour answers), about 20 rectangles to a URL
    assert 1 <= len(others) <= 6


def test_300_tiles_take_few_searches_and_a_rerun_with_nothing_to_do_fewer(big_sim, tool_home, tmp_path):
    before = len(big_sim.request_log())
    plan = dry_run(big_sim, tmp_path, TILES_300)
    assert len(plan["tiles"]) == 300
    assert 1 <= len(searches(big_sim.request_log()[before:])) <= 12

    # a folder holding every DEM (recorded), as a finished run leaves it
    out = tmp_path / "dem"
    out.mkdir()
    land = {c["name"] + "_DEM.tif": c["product_id"] for c in cells_of(plan).values() if c["status"] == "planned"}
    for name in land:
        (out / name).write_bytes(whole_dem_bytes(name))
    (out / "dict_filename_dem_id.json").write_text(json.dumps(land))

    def rerun():
        start = len(big_sim.request_log())
        result = run_cli("--i", tmp_path / "tiles.txt", "--o", out, "-q", "--summary-json", tmp_path / "again.json",
                         env=cli_env(big_sim), timeout=300)
        assert result.returncode == 0, result.output[-3000:]
        new = big_sim.request_log()[start:]
        assert [r for r in new if r.server == "download" or r.grant_type] == []  # no login, no download
        return searches(new), json.loads((tmp_path / "again.json").read_text())["totals"]

    first, totals = rerun()  # neither the sea cells nor the files' dataset recorded: one batch of searches
    assert 1 <= len(first) <= 3
    assert totals["present"] == len(land) and totals["sea"] == plan["totals"]["sea"] > 0
    second, totals = rerun()  # now known to be sea: nothing to ask
    assert second == []
    assert totals["present"] == len(land) and totals["sea"] == plan["totals"]["sea"]
    assert json.loads((out / "dict_filename_dem_id.json").read_text()) == land  # still {file name: product Id}
