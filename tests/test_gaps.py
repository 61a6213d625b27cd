"""Gaps in the DEM, through the real command line against the simulator: land that the chosen dataset
has no product for is never called open sea, and ``--fill-gaps`` fills it.

The simulator serves the real cell lists (``../shared/data``): GLO-30 lacks 25 land cells over
Armenia and Azerbaijan that GLO-90 has. 38TNL's six cells are all among them.
"""

import io
import json
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import tifffile

from cdse_dem.dem_folder import dem_problem
from tests.helpers import ROOT, cli_env, downloads, log_messages, logins, run_cli, served_dem

TILE = "38TNL"
GAPS = ["N40_E044", "N40_E045", "N40_E046", "N41_E044", "N41_E045", "N41_E046"]
GLO90 = "CCM COP-DEM_GLO-90-DGED/2024_1"
CELLS = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def gap_sim(tmp_path_factory):
    """One simulator with the real cell lists for the module (the built-in subset has no gap)."""
    from simulator import SimulatorConfig, start_simulator

    if not (CELLS / "copdem_glo30_cells.txt").is_file():
        pytest.skip(f"the real cell lists in {CELLS} are absent: without them the simulator has no gap")
    sim = start_simulator(SimulatorConfig(cache_dir=tmp_path_factory.getbasetemp() / "sim-cache", cells_dir=CELLS))
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def filled(gap_sim, tmp_path_factory):
    """38TNL at 30 m filled by ``--fill-gaps``: (folder, summary, output of the run)."""
    base = tmp_path_factory.mktemp("filled")
    out = base / "dem"
    result = run_cli("--r", "30", "--t", TILE, "-o", out, "--fill-gaps", "--summary-json", base / "run.json",
                     env=cli_env(gap_sim))
    assert result.returncode == 0, result.output
    return out, json.loads((base / "run.json").read_text()), result


def searches(sim) -> list[dict]:
    return [parse_qs(urlsplit(f"?{r.query}").query) for r in sim.request_log()
            if r.server == "catalogue" and r.path.endswith("/Products")]


def by_cell(summary) -> dict[str, dict]:
    return {c["grid_id"]: c for t in summary["tiles"] for c in t["geocells"]}


def test_at_30m_38TNL_s_land_cells_are_gaps_not_sea_exit_1_named_once_with_the_three_ways_out(gap_sim, tmp_path):
    gap_sim.clear_log()
    out = tmp_path / "dem"
    result = run_cli("--r", "30", "--t", TILE, "-o", out, "--summary-json", tmp_path / "run.json",
                     env=cli_env(gap_sim))
    assert result.returncode == 1, result.output
    cells = by_cell(json.loads((tmp_path / "run.json").read_text()))
    assert sorted(cells) == GAPS
    for cell in cells.values():
        assert cell["status"] == "gap" and cell["product_id"] is None and cell["file"] is None
        assert GLO90 in cell["datasets"] and not any("GLO-30" in d for d in cell["datasets"])
    (line,) = [m for m in log_messages(result.stderr, "WARNING") if "Gap in the DEM" in m]
    assert " ".join(GAPS) in line and "CCM COP-DEM_GLO-30-DGED/2024_1" in line
    assert "--r 90 (CDSE has all 6 at 90 m)" in line and "another -d" in line and "--fill-gaps" in line
    assert "6 gap" in result.stdout and "open sea" not in line
    assert not (out / "open_sea_geocells.json").exists()  # nothing recorded as sea
    assert downloads(gap_sim) == [] and logins(gap_sim) == []
    assert len(searches(gap_sim)) == 2  # the dataset, then every other one for its six empty cells

    check = run_cli("--check", "--r", "30", "--t", TILE, "-o", out, env=gap_sim.env)
    assert check.returncode == 1, check.output
    assert f"{TILE}  not ready (6 geocells: 0 present, 0 open sea, 6 missing)" in check.stdout
    for grid_id in GAPS:
        name = f"Copernicus_DSM_10_{grid_id[:3]}_00_{grid_id[4:]}_00_DEM.tif"
        (row,) = [line for line in check.stdout.splitlines() if name in line]
        assert "a gap" in row and "--r 90, another -d, or --fill-gaps" in row
    assert any("Gap in the DEM" in m for m in log_messages(check.stderr, "WARNING"))


def test_at_90m_the_same_tile_is_complete_and_ready(gap_sim, tmp_path):
    out = tmp_path / "dem90"
    result = run_cli("--t", TILE, "-o", out, env=cli_env(gap_sim))
    assert result.returncode == 0, result.output
    assert "6 downloaded" in result.stdout and "Gap in the DEM" not in result.stderr
    check = run_cli("--check", "--t", TILE, "-o", out, env=gap_sim.env)
    assert check.returncode == 0 and f"{TILE}  ready (6 geocells: 6 present, 0 open sea)" in check.stdout


def test_fill_gaps_writes_whole_30m_files_with_the_coarse_heights_and_says_where_they_came_from(gap_sim, filled):
    out, summary, result = filled
    cells = by_cell(summary)
    assert summary["exit_status"] == 0 and summary["totals"]["filled"] == 6 and summary["totals"]["gap"] == 0
    record = json.loads((out / "dict_filename_dem_id.json").read_text())
    sources = json.loads((out / "dict_filename_dem_dataset.json").read_text())
    for grid_id in GAPS:
        cell = cells[grid_id]
        name = Path(cell["file"]).name
        assert (cell["status"], cell["filled_from"]) == ("filled", GLO90)
        assert record[name] == cell["product_id"] and sources[name] == f"filled from {GLO90}"
        assert dem_problem(out / name) is None
        with tifffile.TiffFile(out / name) as tif:
            heights = tif.pages.first.asarray()
        assert heights.shape == (3601, 3601) and heights.dtype == np.float32
        coarse_name, data = served_dem(gap_sim, cell["product_id"])
        assert coarse_name == f"Copernicus_DSM_30_{grid_id[:3]}_00_{grid_id[4:]}_00_DEM.tif"
        coarse = tifffile.imread(io.BytesIO(data))
        assert np.array_equal(heights[::3, ::3], coarse)  # equal at the coarse posts
        assert coarse.min() <= heights.min() and heights.max() <= coarse.max()  # within the cell's range
    assert sum("filled from" in m for m in log_messages(result.stderr, "INFO")) == 6


def test_a_filled_folder_is_ready_and_the_check_counts_the_filled_cells(gap_sim, filled, tmp_path):
    out, _, _ = filled
    check = run_cli("--check", "--r", "30", "--t", TILE, "-o", out, "--summary-json", tmp_path / "check.json",
                    env=gap_sim.env)
    assert check.returncode == 0, check.output
    assert f"{TILE}  ready (6 geocells: 6 present (6 filled), 0 open sea)" in check.stdout
    verdict = json.loads((tmp_path / "check.json").read_text())["tiles"][0]
    assert verdict["check"]["filled"] == 6 and {c["status"] for c in verdict["geocells"]} == {"filled"}
    assert "<DEM_Reference>CDSE-GLO-30</DEM_Reference>" in check.stderr


def test_sen2cor_s_list_naming_filled_cells_makes_them_skipped_with_the_lines_to_delete(gap_sim, filled, tmp_path):
    out, _, _ = filled
    listing = tmp_path / "CopernicusDEM_30_TIFF_missing_tiles.list"
    listing.write_text("Copernicus_DSM_10_N00_00_W001_00_DEM.tif\nCopernicus_DSM_10_N40_00_E044_00_DEM.tif\n"
                       "Copernicus_DSM_10_N41_00_E046_00_DEM.tif\n")
    check = run_cli("--check", "--r", "30", "--t", TILE, "-o", out, "--sen2cor-missing-list", listing,
                    env=gap_sim.env)
    assert check.returncode == 1, check.output
    assert f"{TILE}  not ready (6 geocells: 6 present (6 filled), 0 open sea, 2 missing)" in check.stdout
    for number, grid_id in ((2, "N40_00_E044"), (3, "N41_00_E046")):
        (row,) = [line for line in check.stdout.splitlines() if f"Copernicus_DSM_10_{grid_id}_00_DEM.tif: in" in line]
        assert "on Sen2Cor's missing-tiles list: Sen2Cor skips it" in row and f"delete {listing}:{number}" in row
    tail = check.stdout.split("delete these lines from its missing-tiles list", 1)[1].splitlines()[1:]
    assert [line.strip() for line in tail] == [f"{listing}:2: Copernicus_DSM_10_N40_00_E044_00_DEM.tif",
                                               f"{listing}:3: Copernicus_DSM_10_N41_00_E046_00_DEM.tif"]
    assert listing.read_text().count("\n") == 3  # the user's list is never edited


def test_a_later_run_without_fill_gaps_keeps_the_filled_files_and_says_so_once(gap_sim, filled, tmp_path):
    out = tmp_path / "dem"
    shutil.copytree(filled[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    gap_sim.clear_log()
    result = run_cli("--r", "30", "--t", TILE, "-o", out, env=cli_env(gap_sim))
    assert result.returncode == 0, result.output
    (line,) = [m for m in log_messages(result.stderr, "INFO") if "filled by an earlier run" in m]
    assert line.startswith(f"6 geocell(s) filled by an earlier run kept as they are (whole DEMs, filled from {GLO90})")
    assert "6 filled" in result.stdout and "Gap in the DEM" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert downloads(gap_sim) == [] and len(searches(gap_sim)) == 1  # asked once whether the cells have a product now


def test_a_filled_file_is_replaced_once_a_delivery_has_the_cell_s_own_product(filled, tmp_path):
    """A later catalogue (a new delivery) with N40_E044 at 30 m: that cell's product replaces its fill."""
    from simulator import SimulatorConfig, start_simulator

    cells = tmp_path / "cells"
    cells.mkdir()
    shutil.copy(CELLS / "copdem_glo90_cells.txt", cells)
    (cells / "copdem_glo30_cells.txt").write_text((CELLS / "copdem_glo30_cells.txt").read_text() + "\nN40_E044\n")
    out = tmp_path / "dem"
    shutil.copytree(filled[0], out)
    with start_simulator(SimulatorConfig(cache_dir=tmp_path / "cache", cells_dir=cells)) as sim:
        result = run_cli("--r", "30", "--t", TILE, "-o", out, "--summary-json", tmp_path / "run.json",
                         env=cli_env(sim))
        assert result.returncode == 0, result.output
        cells_now = by_cell(json.loads((tmp_path / "run.json").read_text()))
        assert cells_now["N40_E044"]["status"] == "downloaded"
        assert [c["status"] for g, c in cells_now.items() if g != "N40_E044"] == ["filled"] * 5
        name = "Copernicus_DSM_10_N40_00_E044_00_DEM.tif"
        (line,) = [m for m in log_messages(result.stderr, "INFO") if "replacing the filled file" in m]
        assert line.startswith(f"{name} was filled from {GLO90}; CDSE now has its own product")
        assert (out / name).read_bytes() == served_dem(sim, cells_now["N40_E044"]["product_id"])[1]
    sources = json.loads((out / "dict_filename_dem_dataset.json").read_text())
    assert sources[name] == "CCM COP-DEM_GLO-30-DGED/2024_1"


def test_open_sea_costs_one_more_search_at_most_and_none_once_recorded(gap_sim, tmp_path):
    """56HKD at 90 m: S39_E149 and S39_E150 are open sea (no dataset has them), its other cells land."""
    out = tmp_path / "dem"
    gap_sim.clear_log()
    result = run_cli("--t", "56HKD", "-o", out, "--summary-json", tmp_path / "run.json", env=cli_env(gap_sim))
    assert result.returncode == 0, result.output
    asked = searches(gap_sim)
    assert len(asked) == 2 and "productType" in asked[1]["$filter"][0]
    statuses = {g: c["status"] for g, c in by_cell(json.loads((tmp_path / "run.json").read_text())).items()}
    assert [g for g, status in statuses.items() if status == "sea"] == ["S39_E149", "S39_E150"]
    assert set(statuses.values()) == {"sea", "downloaded"}
    sea = json.loads((out / "open_sea_geocells.json").read_text())
    assert list(sea.values()) == [["S39_E149", "S39_E150"]]
    (out / "Copernicus_DSM_30_S38_00_E149_00_DEM.tif").unlink()  # one land file to fetch again
    gap_sim.clear_log()
    again = run_cli("--t", "56HKD", "-o", out, env=cli_env(gap_sim))
    assert again.returncode == 0, again.output
    asked = searches(gap_sim)
    assert len(asked) == 1 and "productType" not in asked[0]["$filter"][0]  # the sea cell is known: not asked
    assert len(downloads(gap_sim)) == 1


def test_the_api_plans_each_fill_and_a_failing_search_of_other_datasets_fails_the_cells(gap_sim, tmp_path,
                                                                                       monkeypatch):
    import cdse_dem
    from cdse_dem.catalogue import Catalogue
    from cdse_dem.errors import ServiceError

    for name, value in gap_sim.env.items():
        monkeypatch.setenv(name, value)
    planned = cdse_dem.plan([TILE], resolution=30, fill_gaps=True)
    assert planned.exit_status == 0
    for cell in planned.geocells:
        assert (cell.status, cell.filled_from) == ("planned", GLO90) and cell.product_id
        assert GLO90 in cell.datasets

    searched = Catalogue.pages

    def others_fail(self, text, select=None):
        if "productType" in text:  # the search of every other dataset
            raise ServiceError("CDSE catalogue gave HTTP 503 after 6 tries")
        return searched(self, text, select)

    monkeypatch.setattr(Catalogue, "pages", others_fail)
    result = cdse_dem.download([TILE, "56HKD"], tmp_path / "dem", resolution=30,
                               credentials=("demo@example.com", "demo"))
    assert result.exit_status == 1
    statuses = {cell.grid_id: cell.status for cell in result.geocells}
    assert {statuses[g] for g in GAPS} == {"failed"}
    assert statuses["S39_E149"] == statuses["S39_E150"] == "failed"  # open sea, but not told: never called so
    assert all("503" in cell.error for cell in result.geocells if cell.status == "failed")
    assert not (tmp_path / "dem" / "open_sea_geocells.json").exists()


def test_fill_gaps_is_refused_with_check_before_any_work(tmp_path):
    result = run_cli("--check", "--fill-gaps", "--t", TILE, "-o", tmp_path / "dem")
    assert result.returncode == 2
    assert "--fill-gaps is for a download (or --dry-run): --check never writes a file" in result.stderr


def test_a_dry_run_with_fill_gaps_lists_each_cell_with_the_dataset_it_would_be_filled_from(gap_sim, tmp_path):
    result = run_cli("--dry-run", "--r", "30", "--t", TILE, "--fill-gaps", env=gap_sim.env)
    assert result.returncode == 0, result.output
    assert f"{TILE} (footprint: computed): 6 geocells, 6 to download, 0 present, 0 open sea" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("  N4")]
    assert len(rows) == 6 and all(row.endswith(f"planned  {row.split()[3]}  footprint  filled from {GLO90}")
                                  for row in rows)
