#!/usr/bin/env python3
"""Where the time of the 24-geocell run goes: a diagnostic of benchmark 1.

Usage: python benchmarks/timeline.py [--repeat 3]

Same products, cap and latency as bench_throughput.py, but the simulator runs inside this
process (``simulator.start_simulator``), so that its request log gives the moment each request
of the tool process arrived and was answered. The tool is still a separate process, timed
from start to exit. Phases (medians over the runs):
- start-up: process start → first catalogue search arrives (interpreter, imports, tile list,
  footprints and geocells);
- plan: first search → login answered (catalogue searches, then the one login);
- downloads: first download request → last body sent, against the ideal (bytes at the
  ceiling) and the part due to the latency before each reply (one per round of 4);
- finish: last body sent → process exit (extract the last DEM, JSON, summary, exit).
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from bench_throughput import CELLS_90, TILES_90
from benchlib import ENTRY, MB, PASSWORD, PYTHON, ROOT, USER, Row, median


def _one_run(sim, env: dict, args: list[str]) -> dict:
    sim.clear_log()
    with tempfile.TemporaryDirectory(prefix="cdse-timeline-") as out:
        started = time.monotonic()
        proc = subprocess.run([PYTHON, str(ENTRY), *args, "--o", str(Path(out) / "dem"), "-q", "--transfer", "zip"],
                              env=env, capture_output=True, text=True, check=False)
        ended = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"the tool exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    log = sim.request_log()
    searches = [r for r in log if r.server == "catalogue" and r.path.endswith("/Products")]
    login = next(r for r in log if r.grant_type == "password")
    downloads = [r for r in log if r.server == "download"]
    if len(downloads) != CELLS_90:
        raise SystemExit(f"expected {CELLS_90} downloads, the simulator saw {len(downloads)}")
    return {
        "wall": ended - started,
        "startup": min(r.started for r in searches) - started,
        "plan": login.finished - min(r.started for r in searches),
        "gap": min(r.started for r in downloads) - login.finished,
        "downloads": max(r.finished for r in downloads) - min(r.started for r in downloads),
        "finish": ended - max(r.finished for r in downloads),
        "bytes": sum(r.bytes_sent for r in downloads),
    }


def run(repeat: int = 3) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    from simulator import SimulatorConfig, start_simulator

    config = SimulatorConfig(size="realistic", bandwidth=benchlib.BANDWIDTH, latency=benchlib.LATENCY,
                             cache_dir=benchlib.CACHE_DIR)
    with start_simulator(config) as sim, tempfile.TemporaryDirectory(prefix="cdse-timeline-home-") as home:
        for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
            os.mkdir(Path(home) / sub)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDSE_")}
        env.update(sim.env, CDSE_USERNAME=USER, CDSE_PASSWORD=PASSWORD, CDSE_DEM_HOME=home)
        args = benchlib.tile_args(TILES_90)
        plan = Path(home) / "plan.json"
        subprocess.run([PYTHON, str(ENTRY), *args, "--dry-run", "-q", "--summary-json", str(plan)], env=env,
                       capture_output=True, check=True)  # warms the zip cache
        if len(benchlib.planned_cells(json.loads(plan.read_text()))) != CELLS_90:
            raise SystemExit("the tiles no longer give 24 geocells")
        runs = [_one_run(sim, env, args) for _ in range(repeat)]

    phase = {key: median(r[key] for r in runs) for key in runs[0]}
    ideal = phase["bytes"] / benchlib.ceiling()
    rounds = math.ceil(CELLS_90 / benchlib.CONNECTIONS)
    latency = rounds * benchlib.LATENCY
    rest = phase["downloads"] - ideal - latency
    return [Row(
        "1. where the time of the 24-geocell run goes",
        f"{phase['wall']:.2f} s = start-up {phase['startup']:.2f} + searches and login {phase['plan']:.2f}"
        f" + {phase['gap']:.2f} + downloads {phase['downloads']:.2f} (ideal {ideal:.2f} at the ceiling,"
        f" latency {latency:.2f} for {rounds} rounds, between files {rest:.2f})"
        f" + last file to exit {phase['finish']:.2f}; {phase['bytes'] / MB:.1f} MB")]


if __name__ == "__main__":
    sys.exit(benchlib.main_for(sys.modules[__name__]))
