#!/usr/bin/env python3
"""The sen2like, FORCE and quicklook outputs: time per tile, memory, and what they add to a run (issue 20).

Usage: python benchmarks/bench_processors.py [--repeat 3] [--bandwidth MB_S] [--latency MS]

- One tile's sen2like GeoTIFF at 90 m and at 30 m, its quicklook, and its FORCE VRT, each made by
  ``cdse_dem.processors`` in a process of its own (so its peak memory is its own ``ru_maxrss``, the
  imports included), from geocells written as the simulator's "realistic" size serves them
  (uncompressed Float32 GeoTIFFs of a smooth terrain, the real raster sizes). The tile is 32UMA
  (Sen2Cor's six geocells, N49-N50 E007-E009). The time is that of making the output and writing
  it into place; the process's own start and imports are not in it.
- 20 tiles at 90 m downloaded with and without ``--sen2like --force --quicklook`` (each run into a
  fresh folder; the whole process timed): the outputs are made as each tile's last geocell lands,
  so what they add is what is left after the downloads end. The tiles are the first 20, in id
  order, of zones 33-35 band U whose every geocell has a product (bench_overhead's land tiles);
  realistic products, capped per connection as in every download benchmark.
"""

import sys
import tempfile
import textwrap
from pathlib import Path

import bench_overhead
import benchlib
from benchlib import PYTHON, ROOT, Row, Simulator, Tool, median, run_process

TILE = "32UMA"
TARGETS = {90: 2.0, 30: 15.0}  # seconds per sen2like file
MEMORY_TARGET = 600  # MB, at 30 m
VRT_TARGET = 0.050  # seconds
RUN_TILES = 20
RUN_TARGET = 0.10  # at most 10 % more than the same run without outputs

# One output of one tile, in a process of its own; prints the seconds it took.
_MAKE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from cdse_dem import processors
    from cdse_dem.fsutil import atomic_write_bytes
    from cdse_dem.grid import parse_grid_id
    cells = [(parse_grid_id(grid_id), Path(path) if path else None) for grid_id, path in {cells!r}]
    out = Path({out!r})
    import rasterio, rasterio.vrt, rasterio.warp  # imports apart from the figure
    started = time.perf_counter()
    if {kind!r} == "sen2like":
        atomic_write_bytes(out, processors.sen2like_bytes(cells, {tile!r}, {resolution}))
    elif {kind!r} == "quicklook":
        atomic_write_bytes(out, processors.quicklook_bytes(cells, {tile!r}))
    else:
        atomic_write_bytes(out, processors.force_vrt(cells, out, out.parent).encode())
    print(time.perf_counter() - started)
""")


def write_cells(folder: Path, resolution: int) -> list[tuple[str, str | None]]:
    """The tile's geocells (its area and Sen2Cor's rectangle) as the realistic simulator serves their DEM layer."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers import tile_geocells

    return [(cell.grid_id, str(path) if path else None)
            for cell, path in tile_geocells(TILE, folder, resolution, size="realistic")]


def make(kind: str, cells, out: Path, resolution: int, repeat: int) -> tuple[float, float]:
    """Median seconds and the largest peak memory (MB) of ``repeat`` processes making one output."""
    code = _MAKE.format(root=str(ROOT), cells=cells, out=str(out), kind=kind, tile=TILE, resolution=resolution)
    runs = [run_process([PYTHON, "-c", code]).check() for _ in range(repeat)]
    return median(float(r.stdout.split()[-1]) for r in runs), max(r.peak_rss_mb for r in runs)


def per_tile(repeat: int) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="cdse-bench-processors-") as scratch:
        for resolution in (90, 30):
            folder = Path(scratch) / f"dem{resolution}"
            folder.mkdir()
            cells = write_cells(folder, resolution)
            seconds, peak = make("sen2like", cells, Path(scratch) / f"s2l{resolution}.TIF", resolution, repeat)
            target = TARGETS[resolution]
            rows.append(Row(f"sen2like file of {TILE} at {resolution} m ({sum(p is not None for _, p in cells)} "
                            f"geocells, {109_800 // resolution}² Int16)", f"{seconds:.2f} s", f"< {target:g} s",
                            seconds < target))
            if resolution == 30:
                rows.append(Row(f"peak memory, the process making the 30 m sen2like file of {TILE}",
                                f"{peak:.0f} MB", f"< {MEMORY_TARGET} MB", peak < MEMORY_TARGET))
            seconds, _ = make("quicklook", cells, Path(scratch) / f"ql{resolution}.png", resolution, repeat)
            rows.append(Row(f"quicklook of {TILE} from the {resolution} m geocells (1000² PNG)", f"{seconds:.2f} s"))
            seconds, _ = make("force", cells, folder / f"MGRS_T{TILE}.vrt", resolution, max(repeat, 5))
            rows.append(Row(f"FORCE VRT of {TILE} at {resolution} m", f"{seconds * 1000:.1f} ms",
                            f"< {VRT_TARGET * 1000:g} ms", seconds < VRT_TARGET))
    return rows


def whole_runs(repeat: int) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    with Simulator(size="realistic") as sim:
        tool = Tool(sim)
        try:
            tiles = bench_overhead.land_tiles(tool, RUN_TILES)
            args = [a for t in tiles for a in ("--t", t)]
            with tempfile.TemporaryDirectory(prefix="cdse-bench-processors-run-") as scratch:
                tool.run(*args, "--o", str(Path(scratch) / "warm"), "-q")  # the zip cache, not timed
                plain, outputs = [], []
                for n in range(repeat):  # alternated, so that the machine's load falls on both alike
                    plain.append(tool.run(*args, "--o", str(Path(scratch) / f"plain{n}"), "-q"))
                    made = Path(scratch) / f"made{n}"
                    outputs.append(tool.run(*args, "--o", str(made / "dem"), "--sen2like", str(made / "s2l"),
                                            "--force", str(made / "force"), "--quicklook", str(made / "ql"), "-q"))
                    written = sum(1 for p in made.rglob("*") if p.suffix in (".TIF", ".vrt", ".png"))
                    if written != 3 * RUN_TILES:
                        raise SystemExit(f"{written} outputs written, not {3 * RUN_TILES}")
                cells = sum(1 for p in (Path(scratch) / "plain0").iterdir() if p.name.endswith("_DEM.tif"))
        finally:
            tool.cleanup()
    t_plain, t_outputs = median(r.seconds for r in plain), median(r.seconds for r in outputs)
    ratios = [o.seconds / p.seconds - 1 for p, o in zip(plain, outputs, strict=True)]  # per repetition
    added = median(ratios)
    return [
        Row(f"{RUN_TILES} tiles at 90 m ({cells} geocells downloaded), no outputs: whole process",
            f"{t_plain:.1f} s"),
        Row(f"the same with --sen2like --force --quicklook ({3 * RUN_TILES} outputs): whole process",
            f"{t_outputs:.1f} s"),
        Row("what the outputs add (per repetition, median)",
            f"+{added * 100:.1f} % (runs: {', '.join(f'{r * 100:+.1f}' for r in ratios)})",
            f"< +{RUN_TARGET * 100:g} %", added < RUN_TARGET),
    ]


def run(repeat: int = 3) -> list[Row]:
    return per_tile(repeat) + whole_runs(repeat)


if __name__ == "__main__":
    sys.exit(benchlib.main_for(sys.modules[__name__]))
