#!/usr/bin/env python3
"""A 240 MB catalogue page (issue 11, row 11): the tool's peak memory, its time, and how much of
the page the server got to send before the tool hung up.

Usage: python benchmarks/bench_hostile.py [--repeat 3]

The hostile server of the tests (tests/hostile.py, mode ``huge_page``) streams the page
without Content-Length; the tool runs in its own process (``--dry-run --t 32UMA``, so no
credentials are involved) and must stop reading at ``MAX_PAGE_BYTES``. Peak memory is the
process's own ``ru_maxrss``; the baseline is the same run against an ordinary page (``ok``).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchlib import ENTRY, PYTHON, ROOT, median, run_process

sys.path.insert(0, str(ROOT))
from tests import hostile as h


def measure(server, mode: str, repeat: int) -> tuple[float, float, int, int]:
    """Median seconds, median peak RSS (MB), exit status, bytes the server sent (last run)."""
    seconds, peaks, status = [], [], None
    for _ in range(repeat):
        server.mode = mode
        server.clear()
        with tempfile.TemporaryDirectory() as home:
            for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
                Path(home, sub).mkdir()
            env = dict(os.environ, **server.env, CDSE_DEM_HOME=home)
            run = run_process([PYTHON, str(ENTRY), "--t", "32UMA", "--dry-run", "-q"], env=env)
        if "Traceback" in run.stderr:
            raise SystemExit(run.stderr[-3000:])
        seconds.append(run.seconds)
        peaks.append(run.peak_rss_mb)
        status = run.returncode
    return median(seconds), median(peaks), status, server.sent_bytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    server = h.Hostile()
    try:
        base = measure(server, h.OK, args.repeat)
        huge = measure(server, h.HUGE_PAGE, args.repeat)
    finally:
        server.stop()
    print("| page | exit | seconds (median) | peak RSS MB (median) | bytes the server sent |")
    print("|---|---|---|---|---|")
    print(f"| ordinary (6 records) | {base[2]} | {base[0]:.2f} | {base[1]:.0f} | - |")
    print(f"| 240 MB, no Content-Length | {huge[2]} | {huge[0]:.2f} | {huge[1]:.0f} | {huge[3] / 1e6:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
