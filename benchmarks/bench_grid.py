#!/usr/bin/env python3
"""Tile ids → geocells: how fast, from computed footprints and from the KML index.

Usage: python benchmarks/bench_grid.py [--zip ../shared/data/s2_tiling.zip] [--repeat 5] [--markdown FILE]

Measures, on this machine:
1. tile ids → footprints → geocells for 1, 100 and 10,000 random tiles, in a warm process
   (imports done, KML index already built), with computed footprints and with the KML index;
   the median of ``--repeat`` runs, a fresh FootprintFinder each run (so the index load counts);
2. the same for 100 tiles in a fresh process, imports included (what a user waits for);
3. the first KML index build from the 109 MB KML, in a child process: wall time and peak RSS;
4. the reference tool's approach, a full parse of the KML per tile and a linear scan for the
   tile's Placemark (emulated with lxml, the fastest full parse there is, so the ratio is
   conservative), for a few tiles, against our per-tile time with the index.
"""

import argparse
import datetime
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_ZIP = ROOT.parent / "shared" / "data" / "s2_tiling.zip"
TARGETS = {"100 tiles": 0.2, "index build s": 20.0, "index build MB": 300.0}


def child(code: str) -> tuple[float, float, str]:
    """Run ``code`` in a fresh interpreter: (wall seconds, peak RSS in MB of that process, its stdout).

    The child reports its own ``ru_maxrss`` at exit (RUSAGE_CHILDREN in the parent would
    give the maximum over every child so far, not this one's).
    """
    wrapped = code + "\nimport resource as _r; print('__RSS__', _r.getrusage(_r.RUSAGE_SELF).ru_maxrss)"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapped], cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    lines = out.stdout.strip().splitlines()
    peak_kb = float(lines[-1].split()[1])  # kilobytes on Linux
    return wall, peak_kb / 1024, "\n".join(lines[:-1])


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def reference_lookup(kml: Path, tile: str):
    """What the reference tool does per tile: parse the whole KML, scan the Placemarks in order."""
    from lxml import etree

    ns = "{http://www.opengis.net/kml/2.2}"
    root = etree.parse(str(kml)).getroot()
    for placemark in root.iter(ns + "Placemark"):
        if placemark.findtext(ns + "name") == tile:
            return [c.text for c in placemark.iter(ns + "coordinates")]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-tiles", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    from cdse_dem.grid import FootprintFinder, geocells_of_each, index_path
    from cdse_dem.tiles import all_tile_ids

    tiles = list(all_tile_ids())
    rng = random.Random(2026)
    samples = {n: rng.sample(tiles, n) for n in (1, 100, 10_000)}
    rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.zip) as archive:
            (member,) = archive.namelist()
            archive.extract(member, tmp)
        kml = Path(tmp) / member
        size_mb = kml.stat().st_size / 1e6

        # 3. first index build, in a child so its peak memory is its own
        _, baseline_mb, _ = child(
            "import numpy, lxml.etree, shapely, pyproj; import cdse_dem.grid"
        )
        _, peak_mb, out = child(
            "import time; from pathlib import Path; import cdse_dem.grid as k; "
            f"t = time.perf_counter(); i = k.open_index(Path({str(kml)!r})); "
            "print(len(i), time.perf_counter() - t)"
        )
        count, build_s = out.split()
        build_s = float(build_s)
        rows.append((f"first KML index build ({size_mb:.0f} MB KML, {count} tiles)",
                     f"{build_s:.2f} s", f"target < {TARGETS['index build s']:.0f} s: "
                     f"{'met' if build_s < TARGETS['index build s'] else 'MISSED'}"))
        rows.append(("peak RSS of that process (imports alone)", f"{peak_mb:.0f} MB ({baseline_mb:.0f} MB)",
                     f"target < {TARGETS['index build MB']:.0f} MB: "
                     f"{'met' if peak_mb < TARGETS['index build MB'] else 'MISSED'}"))
        rows.append(("index file size", f"{index_path(kml).stat().st_size / 1e6:.1f} MB", ""))

        # 1. warm process
        def run(source_kml, sample):
            finder = FootprintFinder(source_kml)
            return geocells_of_each(fp.parts for fp in finder.footprints(sample))

        run(None, samples[1])
        run(kml, samples[1])  # warm: transformers, index file in the page cache
        per_tile_index = one_tile_index = None
        for n, sample in samples.items():
            for label, source in (("computed", None), ("KML index", kml)):
                t = median_time(lambda s=source, sm=sample: run(s, sm), args.repeat if n < 10_000 else 3)
                note = ""
                if n == 100:
                    note = f"target < {TARGETS['100 tiles']} s: {'met' if t < TARGETS['100 tiles'] else 'MISSED'}"
                if n == 100 and source is not None:
                    per_tile_index = t / n
                if n == 1 and source is not None:
                    one_tile_index = t
                cells = sum(len(c) for c in run(source, sample)) if n <= 100 else None
                what = f"{n:,} tile{'s' if n > 1 else ''} → geocells, {label}" + (f" ({cells} cells)" if cells else "")
                rows.append((what, f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s", note))

        # 2. cold process, imports included
        for label, source in (("computed", "None"), ("KML index", f"Path({str(kml)!r})")):
            wall_cold, _, _ = child(
                "from pathlib import Path; from cdse_dem.grid import FootprintFinder; "
                "from cdse_dem.grid import geocells_of_each; "
                f"tiles = {samples[100]!r}; f = FootprintFinder({source}); "
                "geocells_of_each(fp.parts for fp in f.footprints(tiles))"
            )
            rows.append((f"100 tiles in a fresh process, imports included, {label}", f"{wall_cold:.2f} s", ""))

        # 4. the reference tool's way, a few tiles
        ref_tiles = samples[100][: args.reference_tiles]
        ref_times = []
        for tile in ref_tiles:
            started = time.perf_counter()
            assert reference_lookup(kml, tile)
            ref_times.append(time.perf_counter() - started)
        ref = statistics.median(ref_times)
        _, ref_peak, _ = child(
            f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_grid; "
            f"from pathlib import Path; bench_grid.reference_lookup(Path({str(kml)!r}), {ref_tiles[0]!r})"
        )
        rows.append((f"reference approach: full KML parse + linear scan, per tile (median of {len(ref_tiles)})",
                     f"{ref:.2f} s", f"peak RSS {ref_peak:.0f} MB"))
        rows.append(("ratio: reference per tile / ours for 1 tile (KML index, its load included)",
                     f"{ref / one_tile_index:,.0f}×", ""))
        rows.append(("ratio: reference per tile / ours per tile (KML index, 100 tiles)",
                     f"{ref / per_tile_index:,.0f}×", ""))

    header = (f"Measured {datetime.date.today().isoformat()} on {machine()}.\n"
              f"Command: `{Path(sys.executable).name} benchmarks/bench_grid.py --repeat {args.repeat}`"
              " (warm figures: median of the runs)\n")
    table = ["| what | figure | note |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = header + "\n" + "\n".join(table) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
