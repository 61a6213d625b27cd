#!/usr/bin/env python3
"""Searching by area (issue 12): searches and wall time of --dry-run and of a nothing-to-do re-run.

Usage: python benchmarks/bench_area_search.py [--repeat 3] [--catalogue-latency 0.5] [--tool DIR]

10, 300 and 2,000 tiles: the 300 are central Europe (zones 31-33, bands T-U, 273 tiles, and the
first 27 tiles of 34T), the 10 their first ten; the 2,000 the first 2,000 of zones 28-39, bands
S-V (Europe, the Mediterranean, the Atlantic edge; land and sea). The simulator runs in this
process (its request log counts the searches: every ``Products`` request, a page being one) and
waits ``--catalogue-latency`` seconds before answering each search, as CDSE takes 0.3-2 s. The
tool is the real command line in its own process, timed from start to exit: that of this
checkout, or of ``--tool DIR`` (another checkout, e.g. ``git worktree add /tmp/before c7c4aef``,
run with this checkout's interpreter and simulator).

The nothing-to-do re-run starts from a folder holding every land DEM of the dry run, recorded
in ``dict_filename_dem_id.json`` as a finished run leaves it (files of a few bytes: the re-run
only checks that they are there). One untimed run comes first, as a finished run would have
done (a tool that records open sea does it then); the timed runs follow.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import PASSWORD, PYTHON, ROOT, USER, median, run_process

SIZES = (10, 300, 2000)


def region(zones: range, bands: str) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from cdse_dem.tiles import all_tile_ids

    return sorted(t for t in all_tile_ids() if int(t[:2]) in zones and t[2] in bands)


def tile_sets() -> dict[int, list[str]]:
    europe = region(range(31, 34), "TU") + region(range(34, 35), "T")[:27]
    return {10: europe[:10], 300: europe, 2000: region(range(28, 40), "STUV")[:2000]}


class Bench:
    """One simulator, one tool home; each run's wall time and the searches it made."""

    def __init__(self, sim, entry: Path, home: Path):
        self.sim, self.entry, self.home = sim, entry, home
        for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
            (home / sub).mkdir(parents=True, exist_ok=True)

    def run(self, *args) -> tuple[float, int, float]:
        """Wall seconds, search requests, and the tool's own CPU seconds (user + system).

        CPU time shows what the tool itself costs whatever else the machine is doing.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDSE_")}
        env.update(self.sim.env, CDSE_USERNAME=USER, CDSE_PASSWORD=PASSWORD, CDSE_DEM_HOME=str(self.home))
        before = len(self.sim.request_log())
        cpu_before = _children_cpu()
        run = run_process([PYTHON, str(self.entry), *map(str, args)], env=env).check()
        searches = [r for r in self.sim.request_log()[before:]
                    if r.server == "catalogue" and r.path.endswith("/Products")]
        return run.seconds, len(searches), _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(bench: Bench, n: int, tiles: list[str], repeat: int) -> dict:
    folder = bench.home / f"tiles-{n}"
    folder.mkdir()
    listing = folder / "tiles.txt"
    listing.write_text("\n".join(tiles) + "\n")
    summary = folder / "plan.json"
    dry = [bench.run("--i", listing, "--dry-run", "-q", "--summary-json", summary) for _ in range(repeat)]
    cells = {c["grid_id"]: c for t in json.loads(summary.read_text())["tiles"] for c in t["geocells"]}
    land = {c["name"] + "_DEM.tif": c["product_id"] for c in cells.values() if c["status"] == "planned"}
    out = folder / "dem"
    out.mkdir()
    for name in land:
        (out / name).write_bytes(b"DEM")
    (out / "dict_filename_dem_id.json").write_text(json.dumps(land))
    bench.run("--i", listing, "--o", out, "-q")  # the end of the run that fetched them all
    again = [bench.run("--i", listing, "--o", out, "-q") for _ in range(repeat)]
    return {"tiles": n, "geocells": len(cells), "land": len(land),
            "dry_s": median(r[0] for r in dry), "dry_searches": max(r[1] for r in dry),
            "dry_cpu": median(r[2] for r in dry),
            "rerun_s": median(r[0] for r in again), "rerun_searches": max(r[1] for r in again),
            "rerun_cpu": median(r[2] for r in again)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median), default 3")
    parser.add_argument("--catalogue-latency", type=float, default=0.5, metavar="S",
                        help="seconds the simulator takes per search (default 0.5)")
    parser.add_argument("--tool", type=Path, default=ROOT, metavar="DIR",
                        help="checkout whose cdse_copernicus_dem_downloader.py runs (default this one)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="tile counts, default 10,300,2000")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from simulator import SimulatorConfig, start_simulator

    sets = tile_sets()
    benchlib.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    config = SimulatorConfig(catalogue_latency=args.catalogue_latency, cache_dir=benchlib.CACHE_DIR)
    home = Path(tempfile.mkdtemp(prefix="cdse-area-bench-"))
    rows = []
    try:
        with start_simulator(config) as sim:
            bench = Bench(sim, args.tool.resolve() / "cdse_copernicus_dem_downloader.py", home)
            for n in map(int, args.sizes.split(",")):
                row = measure(bench, n, sets[n], args.repeat)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"\n{args.tool.resolve()}, catalogue latency {args.catalogue_latency:g} s per search, "
          f"median of {args.repeat}")
    print("| tiles | geocells (land) | --dry-run: wall (tool CPU) | searches "
          "| nothing-to-do re-run: wall (tool CPU) | searches |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tiles']:,} | {r['geocells']:,} ({r['land']:,}) | {r['dry_s']:.2f} s ({r['dry_cpu']:.2f} s) "
              f"| {r['dry_searches']} | {r['rerun_s']:.2f} s ({r['rerun_cpu']:.2f} s) | {r['rerun_searches']} |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"\n{benchlib.machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
