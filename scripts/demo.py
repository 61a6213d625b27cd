"""`make demo`: the whole job, end to end, against the local CDSE simulator.

Starts the simulator on free loopback ports with a demo account, runs the real command
line on the default tile list (configuration/input_tiles.txt) into output_dir/, prints
the summary, then checks the folder for Sen2Cor (``--check``, no credentials) and shows the
two GIPP lines that point Sen2Cor at it, and stops the simulator. A second run finds
everything in place and downloads nothing. The sample list deliberately holds an id that
is not a Sentinel-2 tile, so the tool's own exit status is 1; the demo checks that this is
the only thing wrong.
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
            check_status, check_log = _check(summary, env)
            log_lines += check_log
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
    gipp = [line.split(" INFO ", 1)[1].strip() for line in check_log if "<DEM_" in line]
    print(f"Demo: --check says {'every tile is ready' if check_status == 0 else 'NOT every tile is ready'} for "
          "Sen2Cor; these two lines in Sen2Cor's L2A_GIPP.xml (or --gipp FILE) point it at the folder:")
    print("\n".join(f"    {line}" for line in gipp))
    clean = not any("Traceback" in line for line in log_lines)
    ok = status == 1 and totals["failed"] == 0 and invalid == ["32TMA"] and clean and check_status == 0 and gipp
    print("Demo: OK (exit status 1 is expected: the sample list names 32TMA, which is not a Sentinel-2 tile)"
          if ok else "Demo: FAILED")
    return 0 if ok else 1


def _check(summary: dict, env: dict) -> tuple[int, list[str]]:
    """The path to Sen2Cor: --check on the folder just filled (valid tiles only), without credentials."""
    tiles = [arg for tile in summary["tiles"] for arg in ("--t", tile["tile"])]
    print(f"\nDemo: checking output_dir/ for Sen2Cor: cdse_copernicus_dem_downloader.py --check {' '.join(tiles)}",
          flush=True)
    no_credentials = {k: v for k, v in env.items() if k not in ("CDSE_USERNAME", "CDSE_PASSWORD")}
    check = subprocess.Popen([sys.executable, str(ROOT / "cdse_copernicus_dem_downloader.py"), "--check", *tiles],
                             cwd=ROOT, env=no_credentials, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in check.stderr:
        sys.stderr.write(line)
        lines.append(line)
    return check.wait(), lines


if __name__ == "__main__":
    sys.exit(main())
