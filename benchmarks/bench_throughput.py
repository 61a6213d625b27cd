#!/usr/bin/env python3
"""Throughput against the ceiling, and against one-at-a-time (benchmarks 1, 2 and 4).

Usage: python benchmarks/bench_throughput.py [--repeat 3]

One simulator (realistic products, the scaled CDSE limits of benchlib) serves every run, so a
ratio compares runs of the same session. Per repetition, in this order:
- the default run: 24 GLO-90 geocells (12 adjacent tiles in central Spain, 38°N–42°N, all on
  land, so every product is 1201x1201 and the same size), the whole process timed;
- the one-at-a-time run of the same geocells, as the reference tool works: ``--workers 1`` and
  a new connection per request (the tool run through ``fresh_connections.py``);
- the same with ``--workers 1`` alone (one kept-alive connection): one at a time without the
  cost of new connections, hence the stricter comparison (see the README: the fresh-connection
  mode also pays for retries of connections the server had closed);
- 6 GLO-30 geocells (tile 31TDJ, 3601x3601, a 52 MB DEM each).
Every run starts from an empty output folder. The zip cache is warm before the first timed run
(the catalogue search of a dry-run generates every product, so generation is never timed).
Peak memory is taken from the same runs (GLO-90 and GLO-30 products: does it grow with size?).
"""

import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import MB, Row, Simulator, Tool, median

# 4 rows x 3 columns of tiles; neighbours share their edge geocells: 24 geocells N38–N41 x W001–W006.
TILES_90 = ["30TUK", "30TVK", "30TWK", "30TXK", "30TUL", "30TVL", "30TWL", "30TXL",
            "30SUJ", "30SVJ", "30SWJ", "30SXJ"]
CELLS_90 = 24
TILES_30 = ["31TDJ"]
CELLS_30 = 6
THROUGHPUT_TARGET = 0.90  # of the ceiling, for the 24-cell run
SPEEDUP_TARGET = 3.5  # default run against one-at-a-time
MEMORY_TARGET_MB = 150.0
FRESH_CONNECTIONS = Path(__file__).resolve().parent / "fresh_connections.py"  # the tool, a connection per request


def _sizes(sim: Simulator, product_ids: list[str]) -> list[int]:
    import requests

    return [requests.get(f"{sim.urls['catalogue_url']}/Products({pid})", timeout=60).json()["ContentLength"]
            for pid in product_ids]


def _checked_plan(tool: Tool, tiles: list[str], cells: int, *args: str) -> list[str]:
    """The product ids a run of ``tiles`` fetches; fails loudly when the choice of tiles drifts."""
    summary = tool.plan(tiles, *args)
    states = benchlib.planned_cells(summary)
    if len(states) != cells or set(states.values()) != {"planned"}:
        raise SystemExit(f"{' '.join(tiles)}: expected {cells} planned geocells, the plan has {states}")
    return sorted({c["product_id"] for t in summary["tiles"] for c in t["geocells"]})


def _download(tool: Tool, tiles: list[str], cells: int, *args: str, entry: Path = benchlib.ENTRY) -> benchlib.Run:
    import json

    with tempfile.TemporaryDirectory(prefix="cdse-bench-out-") as out:
        summary = Path(out) / "summary.json"
        # whole zips: these figures are the zip pipeline's (bench_nodes.py compares it with the Nodes API)
        run = tool.run(*benchlib.tile_args(tiles), "--o", str(Path(out) / "dem"), "--summary-json", str(summary),
                       "-q", "--transfer", "zip", *args, entry=entry)
        totals = json.loads(summary.read_text())["totals"]
        if totals["downloaded"] != cells:
            raise SystemExit(f"expected {cells} geocells downloaded, got {totals}")
        run.bytes = totals["bytes"]
    return run


def run(repeat: int = 3) -> list[Row]:
    with Simulator() as sim:
        tool = Tool(sim)
        try:
            ids_90 = _checked_plan(tool, TILES_90, CELLS_90)  # also generates (warms) every zip
            ids_30 = _checked_plan(tool, TILES_30, CELLS_30, "--r", "30")
            sizes_90, sizes_30 = _sizes(sim, ids_90), _sizes(sim, ids_30)
            if max(sizes_90) > 1.01 * min(sizes_90):
                raise SystemExit(f"GLO-90 products differ in size: {sizes_90}")
            default, reference, serial, glo30 = [], [], [], []
            for _ in range(repeat):
                default.append(_download(tool, TILES_90, CELLS_90))
                reference.append(_download(tool, TILES_90, CELLS_90, "--workers", "1", entry=FRESH_CONNECTIONS))
                serial.append(_download(tool, TILES_90, CELLS_90, "--workers", "1"))
                glo30.append(_download(tool, TILES_30, CELLS_30, "--r", "30"))
        finally:
            tool.cleanup()

    bytes_90, bytes_30 = sum(sizes_90), sum(sizes_30)
    for runs, expected in ((default, bytes_90), (reference, bytes_90), (serial, bytes_90), (glo30, bytes_30)):
        if any(r.bytes != expected for r in runs):  # a retry would count twice: not a clean measurement
            raise SystemExit(f"bytes downloaded differ from the products' size {expected}: {[r.bytes for r in runs]}")
    t_default = median(r.seconds for r in default)
    t_reference = median(r.seconds for r in reference)
    t_serial = median(r.seconds for r in serial)
    lost = median(r.stderr.count("no answer from the download host") for r in reference)
    t_30 = median(r.seconds for r in glo30)
    speedups = [ref.seconds / ours.seconds for ours, ref in zip(default, reference, strict=True)]
    strict = [one.seconds / ours.seconds for ours, one in zip(default, serial, strict=True)]
    ceiling = benchlib.ceiling()
    share = bytes_90 / t_default / ceiling
    rss_90 = median(r.peak_rss_mb for r in default)
    rss_30 = median(r.peak_rss_mb for r in glo30)
    cap = f"{ceiling / MB:g} MB/s"
    return [
        Row(f"1. throughput, {CELLS_90} GLO-90 geocells ({len(TILES_90)} tiles), whole process",
            f"{t_default:.2f} s, {bytes_90 / MB:.1f} MB, {bytes_90 / MB / t_default:.1f} MB/s = "
            f"{share:.0%} of the {cap} ceiling", f">= {THROUGHPUT_TARGET:.0%} of ceiling",
            share >= THROUGHPUT_TARGET),
        Row(f"1. throughput, {CELLS_30} GLO-30 geocells (tile {TILES_30[0]}), whole process",
            f"{t_30:.2f} s, {bytes_30 / MB:.1f} MB, {bytes_30 / MB / t_30:.1f} MB/s = "
            f"{bytes_30 / t_30 / ceiling:.0%} of the {cap} ceiling", "(6 files on 4 connections: <= 75 %)"),
        Row("2. one at a time (--workers 1, a new connection per request), same 24 geocells",
            f"{t_reference:.2f} s, {bytes_90 / MB / t_reference:.1f} MB/s; {lost:g} retries after a reused "
            "closed connection per run"),
        Row("2. default run vs one at a time (ratio per repetition, median)",
            f"{median(speedups):.2f}x faster (runs: {', '.join(f'{s:.2f}' for s in speedups)})",
            f">= {SPEEDUP_TARGET}x", median(speedups) >= SPEEDUP_TARGET),
        Row("2. one at a time on one kept-alive connection (--workers 1), same 24 geocells",
            f"{t_serial:.2f} s, {bytes_90 / MB / t_serial:.1f} MB/s"),
        Row("2. default run vs one at a time, kept-alive (stricter: no connection costs at all)",
            f"{median(strict):.2f}x faster (runs: {', '.join(f'{s:.2f}' for s in strict)})",
            f">= {SPEEDUP_TARGET}x", median(strict) >= SPEEDUP_TARGET),
        Row("4. peak RSS of the tool, downloading 6 GLO-30 (52 MB DEM each)", f"{rss_30:.0f} MB",
            f"< {MEMORY_TARGET_MB:.0f} MB", rss_30 < MEMORY_TARGET_MB),
        Row("4. peak RSS, GLO-90 (11 MB zips) vs GLO-30 (101 MB zips)",
            f"{rss_90:.0f} MB vs {rss_30:.0f} MB ({rss_30 - rss_90:+.0f} MB)", "not growing with size",
            rss_30 - rss_90 < 10),
    ]


if __name__ == "__main__":
    sys.exit(benchlib.main_for(sys.modules[__name__]))
