"""The DEM file alone through the simulator's Nodes API, end to end, and the fall back to whole zips.

The real command line against the simulator: what a user checks (exit status, the DEM files
byte for byte against the member of the served zip, the JSON, the log) and what the server saw
(its request log: bytes sent, which requests, in what order).
"""

import json
import re
import threading
from pathlib import Path

import pytest

from simulator import Faults
from tests.helpers import check_consistent, cli_env, dem_files, downloads, listings, run_cli

TILE = "32UMA"  # 6 GLO-90 geocells N49–N50 × E007–E009
CELLS = 6
SWITCH_LINE = "the rest of the run downloads whole zips"


def _run(sim, tmp_path, *args, watch: bool = False, env=None):
    """The tool on TILE into a fresh folder; with ``watch``, every final-named file seen during the run
    is recorded with its size, to show that none was ever there before it was whole."""
    out, summary = tmp_path / "dem", tmp_path / "summary.json"
    sim.clear_log()
    seen: dict[str, set[int]] = {}
    done = threading.Event()

    def poll():
        while not done.is_set():
            if out.is_dir():
                for path in out.iterdir():
                    if re.search(r"_DEM\.(tif|dt1|dt2)$", path.name):
                        try:
                            seen.setdefault(path.name, set()).add(path.stat().st_size)
                        except FileNotFoundError:
                            pass
            done.wait(0.005)

    watcher = threading.Thread(target=poll, daemon=True)
    if watch:
        watcher.start()
    try:
        result = run_cli("--t", TILE, "--o", out, "--summary-json", summary, *args, env=env or cli_env(sim))
    finally:
        done.set()
        if watch:
            watcher.join()
    assert "Traceback" not in result.output
    records = sim.request_log()
    return result, out, json.loads(summary.read_text()), records, seen


def _wire(records) -> int:
    return sum(r.bytes_sent for r in records if r.server == "download")


def test_a_default_run_moves_only_the_dem_bytes(make_sim, tool_home, tmp_path):
    sim = make_sim(size="realistic")
    result, out, summary, records, _ = _run(sim, tmp_path)
    assert result.returncode == 0, result.output
    files = dem_files(out)
    assert len(files) == CELLS
    on_disk = sum(map(len, files.values()))
    assert _wire(records) <= 1.1 * on_disk, (_wire(records), on_disk)
    transfers = [r for r in records if r.server == "download" and r.path.endswith("/$value")]
    assert len(transfers) == CELLS and all("/Nodes(" in r.path for r in transfers)  # no whole zip
    assert summary["totals"]["downloaded"] == CELLS and summary["totals"]["bytes"] == on_disk
    check_consistent(out, sim)  # every DEM byte-identical to the member of the served zip


@pytest.mark.parametrize(("collection", "per_product"), [("CCM", 2), ("COP-DEM", 1)])
def test_a_product_costs_its_root_listing_and_its_file_one_request_when_the_record_names_the_root(
        make_sim, tool_home, tmp_path, collection, per_product):
    """Two requests a product on the download host (five before: the root, three levels, the file), one for a
    COP-DEM product, whose root is its Name (cdse-api.md); counted in the simulator's log."""
    sim = make_sim()
    result, out, summary, records, _ = _run(sim, tmp_path, "--transfer", "nodes", "--collection", collection)
    assert result.returncode == 0, result.output
    assert summary["totals"]["downloaded"] == CELLS
    host = [r for r in records if r.server == "download"]
    assert len(host) == per_product * CELLS, [r.path for r in host]
    roots = [r for r in host if re.fullmatch(r".*/Products\([0-9a-f-]+\)/Nodes", r.path)]
    files = [r for r in host if re.fullmatch(r".*/Nodes\(DEM\)/Nodes\(Copernicus_DSM_\w+_DEM\.tif\)/\$value", r.path)]
    assert len(roots) == (per_product - 1) * CELLS and len(files) == CELLS
    assert all(r.status == 200 for r in host)
    check_consistent(out, sim)


def test_roots_are_listed_a_bounded_look_ahead_before_their_downloads(make_sim, tool_home, tmp_path):
    """Roots are listed while earlier files move, at most one product per worker ahead of the downloads: before
    the first file has come, no more roots than the files begun and as many more (all of them, before)."""
    sim = make_sim(bandwidth=150_000)  # each small DEM takes about a quarter of a second
    result, _out, summary, records, _ = _run(sim, tmp_path, "--t", "32UMB", "--transfer", "nodes",
                                             "--workers", "2")
    assert result.returncode == 0, result.output
    cells = summary["totals"]["downloaded"]
    roots = [r for r in records if re.fullmatch(r".*/Products\([0-9a-f-]+\)/Nodes", r.path)]
    first_file = min(r.finished for r in records if r.path.endswith("/$value"))
    assert cells >= 8 and len(roots) == cells
    assert len([r for r in roots if r.started < first_file]) <= 2 + 2


def test_with_nodes_off_the_run_completes_from_zips_and_says_so_once(make_sim, tool_home, tmp_path):
    from cdse_dem.fetch import LISTING_THREADS
    from cdse_dem.transfer import FALLBACKS_BEFORE_SWITCH

    sim = make_sim(nodes=False)
    result, out, summary, records, _ = _run(sim, tmp_path, "--t", "32UMB", "--t", "32ULA")  # and TILE
    cells = summary["totals"]["downloaded"]
    assert result.returncode == 0, result.output
    assert cells > FALLBACKS_BEFORE_SWITCH + LISTING_THREADS and summary["totals"]["failed"] == 0
    lines = [line for line in result.stderr.splitlines() if "Nodes" in line]
    assert len(lines) == 1 and SWITCH_LINE in lines[0] and "HTTP 404" in lines[0], lines
    transfers = [r for r in records if r.server == "download" and r.path.endswith("/$value")]
    assert len(transfers) == cells and not any("/Nodes(" in r.path for r in transfers)
    # after the switch no product tries Nodes: at most those whose walk began before it came
    assert len([r for r in records if r.path.endswith("/Nodes")]) < FALLBACKS_BEFORE_SWITCH + LISTING_THREADS
    check_consistent(out, sim)


@pytest.mark.parametrize("transfer", ["nodes", "auto"])
def test_cut_node_transfers_and_slow_nodes_still_give_every_dem_byte_exact(make_sim, tool_home, tmp_path,
                                                                           transfer):
    """``nodes``: every geocell through Nodes, so the cuts really strike node files. ``auto`` here rightly
    leaves Nodes after three products (0.2 s a listing against the microseconds a small file spares on
    loopback), with the cuts striking both kinds of transfer."""
    sim = make_sim(nodes_latency=0.2, faults=Faults(seed=5, drop_rate=0.3))
    result, out, _summary, records, seen = _run(sim, tmp_path, "--transfer", transfer, watch=True)
    assert result.returncode == 0, result.output
    cut = [r for r in records if r.fault == "drop" and "/Nodes(" in r.path]
    assert cut or transfer == "auto", "no node transfer was cut: the test shows nothing"
    files = dem_files(out)
    assert len(files) == CELLS
    # never a file under its final name before it was whole: every size seen is the final one
    assert {name: sizes for name, sizes in seen.items()} == {name: {len(data)} for name, data in files.items()}
    check_consistent(out, sim)


def test_transfer_nodes_never_falls_back(make_sim, tool_home, tmp_path):
    sim = make_sim(nodes=False)
    result, out, summary, records, _ = _run(sim, tmp_path, "--transfer", "nodes")
    assert result.returncode == 1
    assert summary["totals"]["failed"] == CELLS and dem_files(out) == {}
    assert [r for r in records if r.server == "download" and not r.path.endswith("/Nodes")] == []
    assert SWITCH_LINE not in result.stderr


def test_transfer_zip_never_lists_nodes(make_sim, tool_home, tmp_path):
    sim = make_sim()
    result, out, _summary, _records, _ = _run(sim, tmp_path, "--transfer", "zip")
    assert result.returncode == 0, result.output
    assert listings(sim) == [] and len(downloads(sim)) == CELLS
    check_consistent(out, sim)


def test_a_node_file_failing_its_check_twice_is_fetched_as_a_zip(make_sim, tool_home, tmp_path, monkeypatch):
    """In-process run (so that the check can be made to fail): the product goes the zip way, the DEM is
    the zip's, and with fewer than three such products the run keeps using Nodes for the others."""
    import logging

    import cdse_dem.transfer as nodes
    import cdse_dem.transfer as transfer
    from cdse_copernicus_dem_downloader import main

    # small products on loopback: auto would rightly judge zips faster after two; this test is the check's
    monkeypatch.setattr(transfer, "SLOWER_BY", float("inf"))
    sim = make_sim()
    real = nodes.dem_problem
    bad = "Copernicus_DSM_30_N49_00_E007_00_DEM.tif"
    monkeypatch.setattr(nodes, "dem_problem",
                        lambda path, **kw: "not a readable GeoTIFF (test)" if bad in path.name else real(path, **kw))
    for key, value in cli_env(sim).items():
        monkeypatch.setenv(key, value)
    out, log_file = tmp_path / "dem", tmp_path / "run.log"
    status = main(["--t", TILE, "--o", str(out), "--log-file", str(log_file), "-q"])
    logging.shutdown()
    assert status == 0
    records = sim.request_log()
    bad_node = [r for r in records if r.path.endswith(f"/Nodes({bad})/$value")]
    assert len(bad_node) == 2  # fetched twice, failed the check twice
    zips = [r for r in records if r.path.endswith("/$value") and "/Nodes(" not in r.path]
    assert len(zips) == 1  # that product alone went the zip way
    assert SWITCH_LINE not in log_file.read_text()
    assert "1 product(s) were fetched as whole zips" in log_file.read_text()
    assert sorted(Path(p).name for p in out.iterdir() if p.name.endswith(".tif")) == sorted(dem_files(out))
    check_consistent(out, sim)


@pytest.mark.parametrize("transfer", ["auto", "nodes"])
def test_no_ccm_access_stops_the_nodes_walk_too(make_sim, tool_home, tmp_path, transfer):
    from simulator import User

    sim = make_sim(users=[User("noccm@example.com", "no-ccm-Pass-77", ccm=False)])
    env = dict(sim.env, CDSE_USERNAME="noccm@example.com", CDSE_PASSWORD="no-ccm-Pass-77")
    result, out, _summary, _records, _ = _run(sim, tmp_path, "--transfer", transfer, env=env)
    assert result.returncode == 1
    assert "403 DAT-ZIP-608" in result.stderr and SWITCH_LINE not in result.stderr
    assert dem_files(out) == {}
