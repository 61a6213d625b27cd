#!/usr/bin/env python3
"""Overhead: what a run costs when there is nothing to download (benchmark 3).

Usage: python benchmarks/bench_overhead.py [--repeat 3]

- ``--help`` and ``--version``: the whole process (the heavy imports must not happen).
- 100 land tiles whose geocells are all in the output folder already (downloaded once, not
  timed): the whole process, computed footprints (no KML in the tool home), tiles from a list
  file. The tiles are the first 100, in id order, of zones 33–35 band U (Central and Eastern
  Europe) whose every geocell has a DEM product, so no tile needs the catalogue.
- ``--dry-run`` of the default tile list (configuration/input_tiles.txt): footprints, catalogue
  searches (11 tiles, 50 ms latency each reply) and the printed plan. Exit status 1 is expected:
  the list holds 32TMA on purpose.
Products are small-size (their size plays no part here) and the zip cache is warmed first.
"""

import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import ENTRY, PYTHON, ROOT, Row, Simulator, Tool, median, run_process

PRESENT_TILES = 100
PRESENT_TARGET = 1.5  # seconds, whole process
INSTANT_TARGET = 0.5  # seconds: "well under a second" for --help and --version
CANDIDATE_ZONES = ("33", "34", "35")
CANDIDATE_BAND = "U"
DEFAULT_LIST = ROOT / "configuration" / "input_tiles.txt"


def land_tiles(tool: Tool, count: int) -> list[str]:
    """The first ``count`` candidate tiles (id order) whose every geocell has a product."""
    from cdse_dem.tiles import all_tile_ids

    candidates = sorted(t for t in all_tile_ids() if t[:2] in CANDIDATE_ZONES and t[2] == CANDIDATE_BAND)
    summary = tool.plan(candidates)
    land = [t["tile"] for t in summary["tiles"]
            if t["geocells"] and all(c["status"] == "planned" for c in t["geocells"])]
    if len(land) < count:
        raise SystemExit(f"only {len(land)} land tiles among {len(candidates)} candidates")
    return sorted(land)[:count]


def run(repeat: int = 3) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    help_runs = [run_process([PYTHON, str(ENTRY), "--help"]).check() for _ in range(repeat)]
    version_runs = [run_process([PYTHON, str(ENTRY), "--version"]).check() for _ in range(repeat)]

    with Simulator(size="small", capped=False) as sim:
        tool = Tool(sim)
        try:
            tiles = land_tiles(tool, PRESENT_TILES)
            with tempfile.TemporaryDirectory(prefix="cdse-bench-present-") as scratch:
                tile_list = Path(scratch) / "tiles.txt"
                tile_list.write_text("\n".join(tiles) + "\n")
                out = Path(scratch) / "dem"
                first = tool.run("--i", str(tile_list), "--o", str(out), "-q")  # fills the folder: not timed
                cells = sum(1 for p in out.iterdir() if p.name.endswith("_DEM.tif"))
                present = [tool.run("--i", str(tile_list), "--o", str(out)) for _ in range(repeat)]
                if any("Nothing to download" not in r.stderr for r in present):
                    raise SystemExit(f"the present run downloaded something:\n{present[0].stderr[-2000:]}")
            tool.run("--i", str(DEFAULT_LIST), "--dry-run", "-q", expected=1)  # warms the zip cache
            dry = [tool.run("--i", str(DEFAULT_LIST), "--dry-run", expected=1) for _ in range(repeat)]
        finally:
            tool.cleanup()
    del first

    t_help = median(r.seconds for r in help_runs)
    t_version = median(r.seconds for r in version_runs)
    t_present = median(r.seconds for r in present)
    t_dry = median(r.seconds for r in dry)
    return [
        Row("3. --help, whole process", f"{t_help:.3f} s", f"< {INSTANT_TARGET} s", t_help < INSTANT_TARGET),
        Row("3. --version, whole process", f"{t_version:.3f} s", f"< {INSTANT_TARGET} s",
            t_version < INSTANT_TARGET),
        Row(f"3. nothing to download: {PRESENT_TILES} land tiles ({cells} geocells present), computed footprints",
            f"{t_present:.2f} s", f"< {PRESENT_TARGET} s", t_present < PRESENT_TARGET),
        Row("3. --dry-run of the default tile list (13 entries, 11 tiles, catalogue searched)", f"{t_dry:.2f} s"),
    ]


if __name__ == "__main__":
    sys.exit(benchlib.main_for(sys.modules[__name__]))
