"""``--check``, the GIPP lines and ``--gipp`` through the real command line, against the simulator.

One realistic-size run fills a folder with 56HKD (land cells and an open-sea cell; the
integrity check wants rasters of a real cell's size); each test checks a copy of it. The
simulator's request log shows what the check asked: searches only, never a token or a file.
"""

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli_env, run_cli
from tests.test_gipp import GIPP, expected

TILE = "56HKD"


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """(simulator, folder, summary of the run that filled it); the simulator serves the whole module."""
    from simulator import SimulatorConfig, start_simulator

    cells = ROOT.parent / "shared" / "data"  # the real cell lists: 56HKD's cells are not in the built-in subset
    if not (cells / "copdem_glo90_cells.txt").is_file():
        pytest.skip(f"the real cell lists in {cells} are absent")
    base = tmp_path_factory.mktemp("filled")
    sim = start_simulator(SimulatorConfig(size="realistic", cache_dir=tmp_path_factory.getbasetemp() / "sim-cache",
                                          cells_dir=cells))
    try:
        out = base / "dem"
        result = run_cli("--t", TILE, "-o", out, "--summary-json", base / "run.json", env=cli_env(sim))
        assert result.returncode == 0, result.output
        yield sim, out, json.loads((base / "run.json").read_text())
    finally:
        sim.stop()


@pytest.fixture
def folder(filled, tmp_path):
    sim, out, _ = filled
    copy = tmp_path / "dem"
    shutil.copytree(out, copy)
    sim.clear_log()
    return copy


def check(sim, out, *extra):
    """The check as a user without credentials runs it: no CDSE_USERNAME, no terminal."""
    return run_cli("--check", "--t", TILE, "-o", out, *extra, env=sim.env)


def only_searched(sim):
    log = sim.request_log()
    assert [r for r in log if r.server == "download" or "$value" in r.path or r.grant_type] == []
    assert all(r.path.endswith("/Products") for r in log)


def land_files(summary):
    return [Path(c["file"]).name for c in summary["tiles"][0]["geocells"] if c["status"] == "downloaded"]


def sea_names(summary):
    return [c["name"] + "_DEM.tif" for c in summary["tiles"][0]["geocells"] if c["status"] == "sea"]


def test_the_run_ends_with_the_two_gipp_lines_and_gipp_writes_them(filled, tmp_path):
    sim, out, summary = filled
    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(GIPP)
    result = run_cli("--t", TILE, "-o", out, "--gipp", gipp, env=cli_env(sim))
    assert result.returncode == 0
    assert f"<DEM_Directory>{out}</DEM_Directory>" in result.stderr
    assert "<DEM_Reference>CDSE-GLO-90</DEM_Reference>" in result.stderr
    assert gipp.read_bytes() == expected(GIPP, str(out).encode(), b"CDSE-GLO-90")
    assert land_files(summary) and sea_names(summary)  # the tile has both kinds: the tests below need them


def test_a_complete_folder_is_ready_without_credentials_and_nothing_is_downloaded(filled, folder):
    sim, _, _ = filled
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = check(sim, folder)
    assert result.returncode == 0, result.output
    assert f"  {TILE}  ready (" in result.stdout
    assert f"<DEM_Directory>{folder}</DEM_Directory>" in result.stderr
    assert "credentials" not in result.stderr.lower()
    only_searched(sim)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_deleted_dem_is_named_with_cdse_having_it(filled, folder):
    sim, _, summary = filled
    gone = land_files(summary)[0]
    (folder / gone).unlink()
    result = check(sim, folder, "--summary-json", folder.parent / "check.json")
    assert result.returncode == 1, result.output
    assert f"  {TILE}  not ready (" in result.stdout
    assert f"      {gone}: missing; on CDSE: a run without --check downloads it" in result.stdout
    assert "<DEM_Directory>" not in result.stderr
    only_searched(sim)
    assert not (folder / gone).exists()
    part = json.loads((folder.parent / "check.json").read_text())["tiles"][0]["check"]
    assert part["ready"] is False
    assert part["missing"] == [{"file": gone, "grid_id": part["missing"][0]["grid_id"], "reason": "missing",
                                "on_cdse": True}]


def test_a_truncated_dem_is_named_with_the_reason(filled, folder):
    sim, _, summary = filled
    cut = land_files(summary)[-1]
    with open(folder / cut, "r+b") as handle:
        handle.truncate(200_000)
    result = check(sim, folder)
    assert result.returncode == 1, result.output
    assert f"      {cut}: truncated (200,000 bytes" in result.stdout
    only_searched(sim)
    assert (folder / cut).stat().st_size == 200_000


def test_a_missing_tiles_list_without_a_sea_cell_is_reported(filled, folder, tmp_path):
    sim, _, summary = filled
    sea = sea_names(summary)
    lacking = tmp_path / "CopernicusDEM_90_TIFF_missing_tiles.list"
    lacking.write_text("Copernicus_DSM_30_N00_00_W001_00_DEM.tif\n" + "".join(f"{n}\n" for n in sea[1:]))
    result = check(sim, folder, "--sen2cor-missing-list", lacking)
    assert result.returncode == 1, result.output
    assert f"      {sea[0]}: no DEM on CDSE (open sea), but not on Sen2Cor's missing-tiles list" in result.stdout
    complete = tmp_path / "complete.list"
    complete.write_text("".join(f"{n}\n" for n in sea))
    assert check(sim, folder, "--sen2cor-missing-list", complete).returncode == 0


def test_a_missing_tiles_list_with_a_bad_line_is_exit_2(filled, folder, tmp_path):
    sim, _, _ = filled
    bad = tmp_path / "bad.list"
    bad.write_text("Copernicus_DSM_30_N00_00_W001_00_DEM.tif\nN01_W001\n")
    result = check(sim, folder, "--sen2cor-missing-list", bad)
    assert result.returncode == 2
    assert f"{bad}:2: 'N01_W001' is not a Copernicus DEM file name" in result.stderr


def test_gipp_sets_the_two_values_and_keeps_every_other_byte(filled, folder, tmp_path):
    sim, _, _ = filled
    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(GIPP)
    result = check(sim, folder, "--gipp", gipp)
    assert result.returncode == 0, result.output
    assert gipp.read_bytes() == expected(GIPP, str(folder).encode(), b"CDSE-GLO-90")
    assert (tmp_path / "L2A_GIPP.xml.bak").read_bytes() == GIPP
    only_searched(sim)


def test_gipp_is_left_alone_while_the_folder_is_not_complete(filled, folder, tmp_path):
    sim, _, summary = filled
    (folder / land_files(summary)[0]).unlink()
    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(GIPP)
    result = check(sim, folder, "--gipp", gipp)
    assert result.returncode == 1
    assert "left unchanged: the DEM folder is not complete yet" in result.stderr
    assert gipp.read_bytes() == GIPP and not (tmp_path / "L2A_GIPP.xml.bak").exists()


@pytest.mark.parametrize(("options", "content", "message"), [
    (["--m", "DTED"], GIPP, "--gipp with --m DTED: Sen2Cor (up to 2.12) cannot read the CDSE DTED files"),
    ([], b"<DEM_DOWNLOADER_CONFIGURATION_FILE/>", "not a Sen2Cor GIPP: the root element is"),
])
def test_dted_and_a_file_that_is_not_a_gipp_are_refused_before_any_work(filled, folder, tmp_path, options, content,
                                                                       message):
    sim, _, _ = filled
    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(content)
    for mode in (["--check"], []):
        result = run_cli(*mode, "--t", TILE, "-o", folder, *options, "--gipp", gipp, env=cli_env(sim))
        assert result.returncode == 2, result.output
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and message in errors[0]
        assert gipp.read_bytes() == content and not (tmp_path / "L2A_GIPP.xml.bak").exists()
    assert sim.request_log() == []


def test_dted_without_gipp_is_warned_about(filled, tmp_path):
    sim, _, _ = filled
    result = run_cli("--t", TILE, "-o", tmp_path / "dted", "--m", "DTED", "--dry-run", env=sim.env)
    assert result.returncode == 0
    assert "WARNING DTED chosen: Sen2Cor (up to 2.12) cannot read the CDSE DTED files" in result.stderr


@pytest.mark.parametrize(("options", "message"), [
    (["--check", "--dry-run"], "--check and --dry-run do not go together"),
    (["--sen2cor-missing-list", "x.list"], "--sen2cor-missing-list is for --check"),
])
def test_options_that_do_not_go_together_are_exit_2(options, message, tmp_path):
    result = run_cli("--t", TILE, "-o", tmp_path, *options)
    assert result.returncode == 2
    assert message in result.stderr
