"""`make demo`: the whole job, end to end, against the local CDSE simulator.

Starts the simulator on free loopback ports with a demo account, runs the real command
line on the default tile list (configuration/input_tiles.txt) into output_dir/, prints
the summary, stops the simulator. A second run finds everything in place and downloads
nothing. The sample list deliberately holds an id that is not a Sentinel-2 tile, so the
tool's own exit status is 1; the demo checks that this is the only thing wrong.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = os.environ.get("DEMO_SIZE", "realistic")


def main() -> int:
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--size", SIZE, "--cache-dir", str(ROOT / ".cache" / "simulator")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        urls = json.loads(sim.stdout.readline())
        print(f"Local CDSE simulator: {urls['catalogue_url']} (products: {SIZE} size)", flush=True)
        env = dict(os.environ, CDSE_TOKEN_URL=urls["token_url"], CDSE_CATALOGUE_URL=urls["catalogue_url"],
                   CDSE_DOWNLOAD_URL=urls["download_url"], CDSE_USERNAME="demo@example.com", CDSE_PASSWORD="demo")
        with tempfile.TemporaryDirectory() as scratch:
            summary_path = Path(scratch) / "summary.json"
            started = time.monotonic()
            tool = subprocess.Popen(
                [sys.executable, str(ROOT / "cdse_copernicus_dem_downloader.py"), "--summary-json", str(summary_path),
                 "--kml-report", str(ROOT / "output_dir" / "demo_report.kml")],
                cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
            log_lines = []
            for line in tool.stderr:  # shown as it comes, and kept to check for tracebacks
                sys.stderr.write(line)
                log_lines.append(line)
            status = tool.wait()
            seconds = time.monotonic() - started
            summary = json.loads(summary_path.read_text())
    finally:
        sim.terminate()
        sim.wait(timeout=10)

    totals = summary["totals"]
    invalid = [e["entry"] for e in summary["invalid_entries"]]
    print(f"\nDemo: exit status {status} in {seconds:.1f} s; {totals['downloaded']} geocells downloaded, "
          f"{totals['present']} already present, {totals['sea']} open sea, {totals['failed']} failed; "
          f"invalid entries: {', '.join(invalid) or 'none'}")
    if totals["downloaded"] == 0 and totals["present"]:
        print("Demo: nothing to download this time: every DEM geocell was already in output_dir/")
    clean = not any("Traceback" in line for line in log_lines)
    ok = status == 1 and totals["failed"] == 0 and invalid == ["32TMA"] and clean
    print("Demo: OK (exit status 1 is expected: the sample list names 32TMA, which is not a Sentinel-2 tile)"
          if ok else "Demo: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
