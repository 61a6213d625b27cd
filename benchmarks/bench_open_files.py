#!/usr/bin/env python3
"""Open files: the most descriptors a run holds at once, against what it says it needs (issue 23, row 16).

Usage: python benchmarks/bench_open_files.py [--repeat 3]

The command line downloads the 36 GLO-90 geocells of seven tiles spread over Europe and Africa
(small products, from a simulator in its own process, no bandwidth cap: downloads finish faster
than extractions, the worst case for zips waiting to be extracted), with 1, 4, 8 and 16 workers,
through the Nodes API and as whole zips. The peak is the most entries ``/proc/<pid>/fd`` showed,
sampled every 2 ms; the estimate is what the tool checks against ``ulimit -n`` before it starts
(``cdse_dem.job.open_files_needed``, plus what the process has open at that point: 4 for the
command line). Linux only (``/proc``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import ENTRY, PYTHON, ROOT, Row, Simulator

TILES = ["32UMA", "31TCJ", "33TUN", "30TUK", "30TVK", "29SND", "35VLG"]
WORKERS = (1, 4, 8, 16)
OPEN_AT_CHECK = 4  # descriptors the command line has open when it checks the limit (stdio, the log)


def peak_once(sim: Simulator, workers: int, transfer: str, scratch: Path) -> int:
    env = benchlib.tool_env(scratch, sim.env)
    argv = [PYTHON, str(ENTRY), *benchlib.tile_args(TILES), "--o", str(scratch / "dem"), "--workers", str(workers),
            "--transfer", transfer, "-q"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, len(os.listdir(f"/proc/{proc.pid}/fd")))
        except OSError:
            pass
        time.sleep(0.002)
    stderr = proc.stderr.read()
    if proc.returncode != 0 or "Traceback" in stderr:
        raise SystemExit(f"the tool exited {proc.returncode}:\n{stderr[-3000:]}")
    return peak


def run(repeat: int = 3) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    from cdse_dem.job import Mode, open_files_needed

    rows = []
    with Simulator(size="small", capped=False) as sim:
        for workers in WORKERS:
            estimate = OPEN_AT_CHECK + open_files_needed(Mode.DOWNLOAD, workers)
            peaks = {}
            for transfer in ("nodes", "zip"):
                runs = []
                for _ in range(repeat):
                    with tempfile.TemporaryDirectory(prefix="cdse-bench-fds-") as scratch:
                        runs.append(peak_once(sim, workers, transfer, Path(scratch)))
                peaks[transfer] = max(runs)
            most = max(peaks.values())
            rows.append(Row(f"open files: {len(TILES)} tiles, --workers {workers}, the most held at once",
                            f"{peaks['nodes']} (Nodes), {peaks['zip']} (zips); the tool's estimate: {estimate}",
                            "peak ≤ estimate", most <= estimate))
    return rows


if __name__ == "__main__":
    sys.exit(benchlib.main_for(sys.modules[__name__]))
