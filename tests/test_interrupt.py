"""Ctrl-C in the middle of downloads: a real SIGINT to a real process, then a re-run."""

import json
import signal
import subprocess
import sys
import time

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
