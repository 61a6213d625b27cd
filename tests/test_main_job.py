"""The main job end to end: the real command line against the local CDSE simulator."""

import json
from pathlib import Path

import pytest

from tests.helpers import check_consistent, cli_env, dem_files, downloads, logins, max_concurrent, run_cli

SAMPLE = Path(__file__).resolve().parent.parent / "configuration" / "input_tiles.txt"


def test_default_tile_list_end_to_end(sim, tool_home, tmp_path):
    out = tmp_path / "dem"
    summary_path = tmp_path / "summary.json"
    result = run_cli("--i", SAMPLE, "--o", out, "--summary-json", summary_path, env=cli_env(sim))
    assert result.returncode == 1, result.output  # the list holds 32TMA, not a Sentinel-2 tile
    assert "Traceback" not in result.output
    summary = json.loads(summary_path.read_text())
    assert summary["exit_status"] == 1
    assert summary["invalid_entries"] == [{"entry": "32TMA", "source": str(SAMPLE), "line": 7,
                                           "error": "'32TMA' is not a Sentinel-2 tile"}]
    tiles = {t["tile"]: t for t in summary["tiles"]}
    assert list(tiles) == ["32UMA", "01XEP", "34SCH", "24TWL", "24XWT", "01KAB", "01WCP", "58CEU", "58CEV",
                           "33KWP", "30SYJ"]
    assert tiles["32UMA"]["entry"].startswith("S2A_MSIL1C_")
    assert sorted(c["grid_id"] for c in tiles["32UMA"]["geocells"]) == [
        "N49_E007", "N49_E008", "N49_E009", "N50_E007", "N50_E008", "N50_E009"]
    assert all(c["status"] == "downloaded" for c in tiles["32UMA"]["geocells"])
    # the antimeridian tile has cells on both sides of 180°
    grid_ids = [c["grid_id"] for c in tiles["01WCP"]["geocells"]]
    assert any("_E17" in g for g in grid_ids) and any("_W180" in g for g in grid_ids)
    # open sea is reported, not failed
    assert summary["totals"]["failed"] == 0 and summary["totals"]["sea"] > 0
    assert all(c["status"] == "sea" for c in tiles["24TWL"]["geocells"])
    assert "No DEM in CDSE (open sea)" in result.stderr
    fetched, tool_logins = len(downloads(sim)), len(logins(sim))
    record = check_consistent(out, sim)
    downloaded = {c["name"] + "_DEM.tif": c["product_id"] for t in summary["tiles"] for c in t["geocells"]
                  if c["status"] == "downloaded"}
    assert record == downloaded
    assert summary["totals"]["downloaded"] == len(record) == fetched  # each geocell fetched once
    assert f"There are {len(record)} DEM files expected" in result.stderr
    assert tool_logins == 1

    # a re-run downloads nothing and says so
    before = len(sim.request_log())
    again = run_cli("--i", SAMPLE, "--o", out, "--summary-json", summary_path, env=cli_env(sim))
    assert again.returncode == 1
    new = sim.request_log()[before:]
    assert [r for r in new if r.server == "download"] == []
    assert [r for r in new if r.grant_type] == []  # nothing to fetch: no login either
    assert json.loads(summary_path.read_text())["totals"]["present"] == len(record)
    assert check_consistent(out) == record


@pytest.mark.parametrize("collection", ["CCM", "COP-DEM"])
@pytest.mark.parametrize("resolution, model, suffix, prefix", [
    (90, "DGED", "_DEM.tif", "Copernicus_DSM_30_"), (30, "DGED", "_DEM.tif", "Copernicus_DSM_10_"),
    (90, "DTED", "_DEM.dt1", "Copernicus_DSM_30_"), (30, "DTED", "_DEM.dt2", "Copernicus_DSM_10_")])
def test_models_resolutions_and_collections(sim, tool_home, tmp_path, collection, resolution, model, suffix,
                                            prefix):
    out = tmp_path / "dem"
    result = run_cli("--t", "32UMA", "--r", resolution, "--m", model, "--collection", collection, "--o", out,
                     env=cli_env(sim))
    assert result.returncode == 0, result.output
    names = sorted(dem_files(out))
    assert names == sorted(f"{prefix}{lat}_00_{lon}_00{suffix}" for lat in ("N49", "N50")
                           for lon in ("E007", "E008", "E009"))
    check_consistent(out, sim)


def test_workers_bound_concurrency_and_one_login(make_sim, tool_home, tmp_path):
    sim = make_sim(bandwidth=100_000)  # small products take ~0.2 s each: downloads overlap
    out = tmp_path / "dem"
    result = run_cli("--t", "32UMA", "--t", "32UMB", "--t", "32ULA", "--o", out, "--workers", "2",
                     env=cli_env(sim))
    assert result.returncode == 0, result.output
    assert 1 < max_concurrent(downloads(sim)) <= 2
    assert len(logins(sim)) == 1
    check_consistent(out)


FAULTS = {
    "drop": dict(drop_first=3),
    "corrupt": dict(corrupt_first=2),
    "error500": dict(error_first=2, error_statuses=(500,)),
    "error503": dict(error_rate=0.15, error_burst=3, error_statuses=(503,)),
    "storm429": dict(storm_first=4),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faults_leave_only_whole_files_and_a_consistent_json(make_sim, tool_home, tmp_path, fault):
    from simulator import Faults

    sim = make_sim(access_lifetime=2, faults=Faults(seed=7, retry_after=0.2, **FAULTS[fault]))
    out = tmp_path / "dem"
    summary_path = tmp_path / "s.json"
    # a node file has no checksum: a corrupted body is the zip path's to catch (docs/reliability.md, "One limit")
    transfer = ("--transfer", "zip") if fault == "corrupt" else ()
    result = run_cli("--t", "32UMA", "--t", "31TCJ", "--o", out, "--summary-json", summary_path, *transfer,
                     env=cli_env(sim))
    summary = json.loads(summary_path.read_text())
    cells = [c for t in summary["tiles"] for c in t["geocells"]]
    assert {c["status"] for c in cells} <= {"downloaded", "failed", "sea"}
    assert result.returncode == (1 if any(c["status"] == "failed" for c in cells) else 0)
    assert fault in {r.fault for r in sim.request_log() if r.server == "download"}  # listings too
    assert "Traceback" not in result.output
    check_consistent(out, make_sim())  # the same products from a simulator without faults: no retries here
