"""Ctrl-C in the middle of downloads and of catalogue searches: a real signal to a real process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from simulator import Faults
from tests.helpers import ENTRY, ROOT, cli_env, run_cli, served_dem


def test_sigint_mid_download_then_rerun_completes(make_sim, tool_home, tmp_path):
    sim = make_sim(bandwidth=15_000)  # small products take a second or two each
    out = tmp_path / "dem"
    env = dict(__import__("os").environ, **cli_env(sim))
    proc = subprocess.Popen([sys.executable, str(ENTRY), "--t", "32UMA", "--o", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until downloads are under way: temporaries appear
        if out.is_dir() and any(p.name.startswith(".") for p in out.iterdir()):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError("no download started")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 3, "the tool took too long to stop"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Interrupted" in stderr

    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    recorded = json.loads((out / "dict_filename_dem_id.json").read_text()) if (
        out / "dict_filename_dem_id.json").exists() else {}
    on_disk = sorted(p.name for p in out.glob("*_DEM.tif"))
    assert sorted(recorded) == on_disk
    assert len(on_disk) < 6, "everything finished before the interrupt: the test proved nothing"

    again = run_cli("--t", "32UMA", "--o", out, env=cli_env(sim))
    assert again.returncode == 0, again.output
    recorded = json.loads((out / "dict_filename_dem_id.json").read_text())
    assert len(recorded) == 6 == len(list(out.glob("*_DEM.tif")))
    for name, product_id in recorded.items():
        assert (out / name).read_bytes() == served_dem(sim, product_id)[1]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def spread_tiles(count: int) -> list[str]:
    """``count`` tiles spread over the whole grid: many catalogue searches, not one."""
    from cdse_dem.tiles import all_tile_ids

    ids = sorted(all_tile_ids())
    return ids[:: len(ids) // count][:count]


def every_area_in_flight_again(searches) -> bool:
    """Every area search sent at least twice, and the latest try of each held by the server right now.

    With a Retry-After longer than the backoff the tries of all areas go out together, round after
    round: at such a moment no search is on its way, so any search the server sees after a signal
    sent now is one the tool sent after it (nothing left to the race of a request already leaving).
    """
    areas = {r.query for r in searches}
    return len(searches) > len(areas) and sum(r.finished == 0.0 for r in searches) == len(areas)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_slow_failing_search_of_100_tiles_exits_130_and_no_search_follows(make_sim, tool_home,
                                                                                            tmp_path, signum):
    # every search answers 503 (Retry-After: 1 s) after 1 s: each area search has retries to come, and each
    # round of tries is held by the server for a second, wider than the retries' jitter (0.5 s) and than the
    # scheduling skew of a loaded machine, so the moment the loop below waits for comes in every round
    sim = make_sim(latency=1.0, faults=Faults(catalogue_error_rate=1.0, retry_after=1.0))
    out = tmp_path / "dem"
    args = [a for tile in spread_tiles(100) for a in ("--t", tile)]
    env = dict(os.environ, **cli_env(sim))
    proc = subprocess.Popen([sys.executable, str(ENTRY), *args, "--o", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def searches():
        return [r for r in sim.request_log() if r.server == "catalogue" and r.path.endswith("/Products")]

    deadline = time.monotonic() + 60
    while not every_area_in_flight_again(searches()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the searches never got under way: {proc.communicate()}")
        time.sleep(0.005)
    assert len({r.query for r in searches()}) > 1  # several searches side by side
    proc.send_signal(signum)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=30)  # a hang guard, not the measure (benchmarks/bench_stop.py)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    errors = [line.split("| ERROR ", 1)[1] for line in stderr.splitlines() if "| ERROR " in line]
    assert errors[-1] == "Interrupted: finished geocells are recorded; a re-run resumes"
    time.sleep(1.5)  # past the Retry-After: a search thread left behind would send its retry now
    late = [r for r in searches() if r.started > sent]
    assert late == [], f"{len(late)} searches after the signal"
    assert [r for r in sim.request_log() if r.grant_type or r.server == "download"] == []
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
