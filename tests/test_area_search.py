"""Running area searches for a plan, against a fake catalogue: what each answer decides."""

import logging

from cdse_dem import planning
from cdse_dem.catalogue import Dataset, TooManyResults
from cdse_dem.errors import ServiceError
from cdse_dem.grid import Geocell
from cdse_dem.search import search_all

DATASET = Dataset("CCM", 90, "DGED", "2024_1")
TEXT = DATASET.filter_text()


def pid(cell: Geocell) -> str:
    """A product Id of the characters CDSE's UUIDs use (the client refuses any other: it goes into a URL)."""
    return "id-" + cell.grid_id.replace("_", "-")


def rec(cell: Geocell, dataset: str = "COP-DEM_GLO-90-DGED/2024_1", kind: str = "SAR_DGE_90_A407") -> dict:
    return {"Id": pid(cell) + ("" if dataset.endswith("2024_1") else "-" + dataset[-6:].replace("_", "-")),
            "Name": f"{cell.grid_id}.DEM", "ContentLength": 10,
            "Footprint": "", "Attributes": [{"Name": "gridId", "Value": cell.grid_id},
                                             {"Name": "dataset", "Value": dataset},
                                             {"Name": "productType", "Value": kind}]}


class FakeCatalogue:
    """Answers products of ``land`` inside any rectangle of the filter (neighbours too, as Intersects does),
    and, to a search for other datasets, products of ``other_land`` (cells only another dataset has) too."""

    catalogue_url = "http://127.0.0.1:9/odata/v1"

    def __init__(self, land, fail_if=lambda text: False, too_many_if=lambda text: False, other_land=()):
        import threading

        self.land, self.fail_if, self.too_many_if = set(land), fail_if, too_many_if
        self.other_land = set(other_land)
        self.filters = []
        self.stop = threading.Event()  # set by the search when it ends, as on the real Catalogue

    def pages(self, text, select=None):
        """The whole answer as one page."""
        import re

        self.filters.append(text)
        if self.fail_if(text):
            raise ServiceError("CDSE catalogue gave HTTP 503 after 5 tries")
        if self.too_many_if(text):
            raise TooManyResults("more than 11000 products match one search")
        number = r"(-?[\d.]+)"
        box = rf"POLYGON\(\({number} {number},\S+? {number},{number}"
        boxes = [tuple(map(float, m)) for m in re.findall(box, text)]
        everything = "productType" in text  # every dataset: CDSE answers a cell once per dataset
        cells = [(c, rec(c)) for c in self.land]
        cells += [(c, rec(c, f"COP-DEM_GLO-30-DGED/{d}", "SAR_DGE_30_A4AD")) for c in self.other_land
                  for d in ("2021_1", "2024_1")]
        out = []
        for cell, record in cells:
            if not everything and f"'{record['Attributes'][1]['Value']}'" not in text:
                continue
            for east, south, north, west in boxes:
                if west <= cell.lon + 1 and cell.lon <= east and south <= cell.lat + 1 and cell.lat <= north:
                    out.append(record)  # touching counts
                    break
        yield out


def make_plan(tiles, present=()):
    tile_plans = [planning.TilePlan(None, name, "computed", cells) for name, cells in tiles.items()]
    return planning.start_plan(tile_plans, lambda c: f"{c.grid_id}_DEM.tif",
                               lambda name: "old-id" if name.split("_DEM")[0] in present else None)


class Recorder:
    def __init__(self):
        self.added = []

    def add(self, cells):
        self.added.append([c.geocell for c in cells])


def cells(*grid):
    return [Geocell(lat, lon) for lat, lon in grid]


def test_land_found_sea_decided_neighbours_dropped_and_downloads_fed():
    tiles = {"A": cells((10, 10), (10, 11)), "B": cells((10, 11), (11, 11))}
    land = cells((10, 10), (11, 11), (12, 11), (9, 9))  # (12, 11) and (9, 9) only touch the area
    plan, fetcher = make_plan(tiles), Recorder()
    catalogue = FakeCatalogue(land)
    searches = search_all(plan, catalogue, DATASET, fetcher, threads=2)
    assert searches == 2  # the dataset's cells, then the one it has nothing for, in every other dataset
    assert "productType" in catalogue.filters[1] and "POLYGON((11.9 10.1,11.9 10.9" in catalogue.filters[1]
    status = {c.grid_id: (s.status, s.product_id) for c, s in plan.cells.items()}
    assert status == {"N10_E010": ("planned", "id-N10-E010"), "N10_E011": ("sea", None),
                      "N11_E011": ("planned", "id-N11-E011")}
    assert sorted(c for batch in fetcher.added for c in batch) == cells((10, 10), (11, 11))


def test_a_failed_search_fails_its_cells_and_never_calls_them_sea(caplog, monkeypatch):
    tiles = {"A": cells((10, 10)), "B": cells((40, 100))}  # far apart: two rectangles
    catalogue = FakeCatalogue([], fail_if=lambda text: "POLYGON((11 10" in text)
    plan = make_plan(tiles)
    from cdse_dem import catalogue as catalogue_mod

    one_rect = len(catalogue_mod.Rect(40, 100, 41, 101).touched())
    monkeypatch.setattr(catalogue_mod, "MAX_TOUCHED_CELLS", one_rect)  # one search per rectangle
    with caplog.at_level(logging.INFO, logger="cdse_dem"):
        assert search_all(plan, catalogue, DATASET, None, threads=2) == 3  # and N40_E100 in other datasets
    assert plan.cells[Geocell(10, 10)].status == "failed"
    assert "503" in plan.cells[Geocell(10, 10)].error
    assert plan.cells[Geocell(40, 100)].status == "sea"
    assert plan.tiles[0].error and plan.tiles[1].error is None
    assert "Tile A: CDSE catalogue gave HTTP 503 after 5 tries" in caplog.text
    assert "No DEM in CDSE (open sea) for 1 of 1 geocells: N40_E100" in caplog.text


def test_too_many_results_splits_the_area_and_still_decides_every_cell():
    wanted = [Geocell(lat, lon) for lat in range(0, 4) for lon in range(0, 4)]
    land = wanted[::3]
    catalogue = FakeCatalogue(land, too_many_if=lambda text: "POLYGON((4 0,4 4,0 4,0 0,4 0))" in text)
    plan = make_plan({"T": wanted})
    assert search_all(plan, catalogue, DATASET, None, threads=2) == 4  # 3, then one for other datasets
    assert {c for c, s in plan.cells.items() if s.status == "planned"} == set(land)
    assert {c for c, s in plan.cells.items() if s.status == "sea"} == set(wanted) - set(land)


def test_present_and_known_sea_cells_are_not_searched(caplog):
    tiles = {"A": cells((10, 10), (10, 11)), "B": cells((20, 20))}
    plan = make_plan(tiles, present={"N10_E010"})
    planning.mark_known_sea(plan, lambda c: c in (Geocell(10, 11), Geocell(20, 20)))
    catalogue = FakeCatalogue([])
    with caplog.at_level(logging.INFO, logger="cdse_dem"):
        assert search_all(plan, catalogue, DATASET, None, threads=2) == 0
    assert catalogue.filters == []
    assert "No DEM in CDSE (open sea) for 1 of 2 geocells (found by an earlier run): N10_E011" in caplog.text


def test_a_cell_only_another_dataset_has_is_a_gap_named_once_with_the_ways_out(caplog):
    tiles = {"A": cells((40, 44), (40, 45)), "B": cells((41, 44))}
    land, gaps = cells((40, 45)), cells((40, 44), (41, 44))
    plan = make_plan(tiles)
    catalogue = FakeCatalogue(land, other_land=gaps)
    with caplog.at_level(logging.INFO, logger="cdse_dem"):
        assert search_all(plan, catalogue, DATASET, None, threads=2) == 2
    status = {c.grid_id: (s.status, s.datasets) for c, s in plan.cells.items()}
    other = ("CCM COP-DEM_GLO-30-DGED/2021_1", "CCM COP-DEM_GLO-30-DGED/2024_1")
    assert status == {"N40_E044": ("gap", other), "N40_E045": ("planned", ()), "N41_E044": ("gap", other)}
    (line,) = [r.getMessage() for r in caplog.records if "Gap in the DEM" in r.getMessage()]
    assert line.startswith("Gap in the DEM: 2 land geocell(s) have no product in CCM COP-DEM_GLO-90-DGED/2024_1, "
                           "but another Copernicus DEM dataset has them: N40_E044 N41_E044.")
    assert "--r 30 (CDSE has all 2 at 30 m)" in line and "another -d (none in another delivery at 90 m)" in line
    assert "--fill-gaps" in line and "No DEM in CDSE (open sea)" not in caplog.text


def test_a_failing_search_of_other_datasets_fails_its_cells_never_sea_nor_gap(caplog):
    tiles = {"A": cells((40, 44), (40, 45)), "B": cells((0, -30))}
    plan = make_plan(tiles)
    catalogue = FakeCatalogue(cells((40, 45)), other_land=cells((40, 44)),
                              fail_if=lambda text: "productType" in text)
    with caplog.at_level(logging.INFO, logger="cdse_dem"):
        search_all(plan, catalogue, DATASET, None, threads=2)
    status = {c.grid_id: s.status for c, s in plan.cells.items()}
    assert status == {"N40_E044": "failed", "N40_E045": "planned", "N00_W030": "failed"}
    assert all("503" in plan.cells[c].error for c in cells((40, 44), (0, -30)))
    assert plan.empty == set()
    assert "Tile A: CDSE catalogue gave HTTP 503" in caplog.text
    assert "Tile B: CDSE catalogue gave HTTP 503" in caplog.text


def test_fill_gaps_searches_each_source_whole_in_its_own_dataset_and_feeds_the_fill(caplog):
    tiles = {"A": cells((40, 44), (40, 45), (41, 44))}
    plan, fetcher = make_plan(tiles), Recorder()
    catalogue = FakeCatalogue(cells((40, 45)), other_land=cells((40, 44), (41, 44)))
    with caplog.at_level(logging.INFO, logger="cdse_dem"):
        assert search_all(plan, catalogue, DATASET, fetcher, threads=2, fill_gaps=True) == 3
    source = Dataset("CCM", 30, "DGED", "2024_1").filter_text()  # the newest delivery that has them
    assert catalogue.filters[2].startswith(source + " and OData.CSC.Intersects")
    for cell in cells((40, 44), (41, 44)):
        state = plan.cells[cell]
        assert (state.status, state.fill_from, state.product_id) == (
            "planned", "CCM COP-DEM_GLO-30-DGED/2024_1", pid(cell))
    assert sorted(c for batch in fetcher.added for c in batch) == cells((40, 44), (40, 45), (41, 44))
    assert "--fill-gaps: filling 2 gap geocell(s) from CCM COP-DEM_GLO-30-DGED/2024_1: N40_E044 N41_E044" in caplog.text
