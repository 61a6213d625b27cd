#!/usr/bin/env python3
"""Scale: planning 10, 100 and 1,000 tiles with ``--dry-run`` against the simulator (benchmark 5).

Usage: python benchmarks/bench_scale.py [--repeat 3]

The tiles are a random sample (seed 2026) of the 56,686 real Sentinel-2 tile ids, land and
sea alike, nested: the 10 are the first of the 100, the 100 the first of the 1,000. Each run
is the whole process: computed footprints (no KML), one catalogue search per tile (8 at a
time, 50 ms latency per reply), the printed plan. Products are small-size and the zip cache
is warmed by a first, untimed run of the 1,000 (the simulator makes each zip when the
catalogue first lists it, to give its size and checksums).
"""

import random
import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import ROOT, Row, Simulator, Tool, median

SIZES = (10, 100, 1000)
SEED = 2026


def sample(count: int) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from cdse_dem.tiles import all_tile_ids

    return random.Random(SEED).sample(sorted(all_tile_ids()), count)


def run(repeat: int = 3) -> list[Row]:
    tiles = sample(max(SIZES))
    with Simulator(size="small", capped=False) as sim, tempfile.TemporaryDirectory(prefix="cdse-scale-") as tmp:
        tool = Tool(sim)
        lists = {}
        for n in SIZES:
            lists[n] = Path(tmp) / f"tiles-{n}.txt"
            lists[n].write_text("\n".join(tiles[:n]) + "\n")
        try:
            warm = tool.plan(tiles)
            times = {n: median(tool.run("--i", str(lists[n]), "--dry-run").seconds for _ in range(repeat))
                     for n in SIZES}
        finally:
            tool.cleanup()
    cells = benchlib.planned_cells(warm)
    land = sum(1 for s in cells.values() if s == "planned")
    rows = [Row(f"5. --dry-run, {n:,} tiles", f"{times[n]:.2f} s") for n in SIZES]
    per_tile = (times[1000] - times[100]) / 900
    rows.append(Row("5. growth 10 → 100 → 1,000 tiles",
                    f"x{times[100] / times[10]:.1f}, x{times[1000] / times[100]:.1f}; "
                    f"{per_tile * 1000:.1f} ms per extra tile ({len(cells):,} geocells, {land:,} with a product)"))
    return rows


if __name__ == "__main__":
    sys.exit(benchlib.main_for(sys.modules[__name__]))
