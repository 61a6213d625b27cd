#!/usr/bin/env python3
"""Areas → tiles (issue 21): how fast, how much memory, and a dry run of a country.

Usage: python benchmarks/bench_aoi.py [--zip ../shared/data/s2_tiling.zip] [--repeat 3]
                                      [--catalogue-latency 0.5]

Measures, on this machine:
1. ``cdse_dem.tiles_for_area`` for an area the size of France and for Africa's bounding box
   (-17.6,-34.9,51.5,37.4: about 6,400 tiles), from the KML index and from computed footprints:
   each in a fresh process (what a user's run pays: the tree of every tile's bounds is built, the
   KML index loaded), the call timed alone and with the imports, and that process's own peak RSS
   (``ru_maxrss`` from ``os.wait4``). Median of ``--repeat``. The KML index is built once before
   (a user's first run does that once; bench_grid.py measures it).
2. ``--aoi france.geojson --dry-run`` of the real command line against the simulator in its own
   process (small products: a dry run fetches none), every catalogue search answered after
   ``--catalogue-latency`` seconds: wall time from start to exit, median of ``--repeat``.

France is an outline of the mainland written by hand (58 vertices, anticlockwise) and densified
with ``shapely.segmentize`` to about 10,000 vertices, so that it weighs as much as a real
country's boundary in GEOS; its area is printed with the figures.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import benchlib
from benchlib import PYTHON, ROOT, Row, median, run_process

DEFAULT_ZIP = ROOT.parent / "shared" / "data" / "s2_tiling.zip"
AFRICA_BOX = (-17.6, -34.9, 51.5, 37.4)  # Cap Vert to Ras Hafun, Cape Agulhas to Ras ben Sakka
TARGETS = {"France": 1.0, "Africa": 3.0, "memory": 300.0, "dry run": 10.0}

# Mainland France, clockwise from Dunkirk (reversed below: RFC 7946 wants exteriors anticlockwise)
FRANCE_CLOCKWISE = [
    (2.37, 51.05), (2.55, 51.09), (3.10, 50.78), (3.70, 50.35), (4.20, 50.30), (4.87, 50.15), (4.85, 49.80),
    (5.80, 49.55), (6.36, 49.46), (7.00, 49.15), (8.20, 48.97), (7.80, 48.50), (7.55, 47.95), (7.58, 47.60),
    (6.90, 47.40), (6.45, 46.95), (6.10, 46.60), (5.97, 46.20), (6.80, 45.90), (7.10, 45.25), (6.63, 45.10),
    (7.00, 44.20), (7.50, 43.78), (7.00, 43.55), (6.20, 43.10), (5.35, 43.30), (4.80, 43.35), (4.00, 43.50),
    (3.10, 43.00), (3.17, 42.43), (2.00, 42.40), (1.45, 42.60), (0.70, 42.85), (-0.30, 42.80), (-1.20, 43.05),
    (-1.78, 43.37), (-1.45, 43.90), (-1.25, 44.65), (-1.10, 45.60), (-1.20, 46.15), (-2.10, 46.80),
    (-2.50, 47.30), (-3.50, 47.70), (-4.40, 47.80), (-4.75, 48.35), (-4.00, 48.72), (-3.00, 48.80),
    (-2.00, 48.65), (-1.60, 48.65), (-1.60, 49.20), (-1.90, 49.70), (-1.25, 49.70), (-1.10, 49.35),
    (0.10, 49.45), (1.00, 49.90), (1.60, 50.20), (1.60, 50.90), (1.85, 50.95), (2.37, 51.05),
]


def france_geojson() -> dict:
    import shapely

    outline = shapely.segmentize(shapely.Polygon(FRANCE_CLOCKWISE[::-1]), 0.003)
    assert outline.is_valid
    return {"type": "Feature", "properties": {"name": "France (mainland, by hand)"},
            "geometry": shapely.geometry.mapping(outline)}


def area_km2(feature: dict) -> float:
    from pyproj import Geod
    from shapely.geometry import shape

    return abs(Geod(ellps="WGS84").geometry_area_perimeter(shape(feature["geometry"]))[0]) / 1e6


CHILD = """
import json, sys, time
started = time.perf_counter()
from cdse_dem.areas import tiles_for_area
imported = time.perf_counter()
tiles = tiles_for_area({area}, kml={kml!r})
done = time.perf_counter()
print(json.dumps({{"imports": imported - started, "call": done - imported, "tiles": len(tiles)}}))
"""


def tiles_for_area_in_a_child(area: str, kml: str | None, home: Path) -> tuple[dict, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSE_")}
    env["CDSE_DEM_HOME"] = str(home)  # an empty tool home: no auxiliary/ KML unless kml= names one
    run = run_process([PYTHON, "-c", CHILD.format(area=area, kml=kml)], env=env).check()
    return json.loads(run.stdout.strip().splitlines()[-1]), run.peak_rss_mb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="the tiling KML zip")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median), default 3")
    parser.add_argument("--catalogue-latency", type=float, default=0.5, metavar="S",
                        help="seconds the simulator takes per search (default 0.5)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from cdse_dem.grid import open_index

    work = Path(tempfile.mkdtemp(prefix="cdse-aoi-bench-"))
    home = work / "home"
    for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
        (home / sub).mkdir(parents=True)
    france = france_geojson()
    france_file = work / "france.geojson"
    france_file.write_text(json.dumps(france))
    kml = None
    if args.zip.is_file():
        with zipfile.ZipFile(args.zip) as archive:
            (member,) = archive.namelist()
            kml = Path(archive.extract(member, work))
        open_index(kml)
    else:
        print(f"{args.zip} is absent: computed footprints only", file=sys.stderr)

    rows = []
    sources = [("KML index", str(kml)), ("computed", None)] if kml else [("computed", None)]
    areas = [("France", f"{str(france_file)!r}", TARGETS["France"]), ("Africa's bbox", repr(AFRICA_BOX),
                                                                      TARGETS["Africa"])]
    for name, area, target in areas:
        for source, kml_arg in sources:
            runs = [tiles_for_area_in_a_child(area, kml_arg, home) for _ in range(args.repeat)]
            call, imports = median(r["call"] for r, _ in runs), median(r["imports"] for r, _ in runs)
            rss = max(peak for _, peak in runs)
            tiles = runs[0][0]["tiles"]
            rows.append(Row(f"{name} → {tiles:,} tiles, {source}: the call (imports)",
                            f"{call:.2f} s ({imports:.2f} s)", f"< {target:g} s", call < target))
            rows.append(Row(f"{name}, {source}: peak RSS of the process", f"{rss:.0f} MB",
                            f"< {TARGETS['memory']:g} MB", rss < TARGETS["memory"]))
            print(rows[-2].what, rows[-2].figure, "|", rows[-1].figure, file=sys.stderr, flush=True)

    benchlib.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    sim = benchlib.Simulator("--catalogue-latency", f"{args.catalogue_latency:g}", size="small", capped=False)
    try:
        tool = benchlib.Tool(sim, home=home)
        for source, kml_arg in sources:
            summary = work / "plan.json"
            extra = ["--kml", kml_arg] if kml_arg else []
            runs = [tool.run("--aoi", str(france_file), *extra, "--dry-run", "-q", "--summary-json", str(summary))
                    for _ in range(args.repeat)]
            plan = json.loads(summary.read_text())
            wall = median(r.seconds for r in runs)
            rows.append(Row(f"--aoi France --dry-run, {source}, {args.catalogue_latency:g} s per search "
                            f"({plan['totals']['tiles']} tiles, {plan['totals']['geocells']} geocells)",
                            f"{wall:.2f} s", f"< {TARGETS['dry run']:g} s", wall < TARGETS["dry run"]))
            print(rows[-1].what, rows[-1].figure, file=sys.stderr, flush=True)
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"France: {area_km2(france):,.0f} km², {len(france['geometry']['coordinates'][0]):,} vertices; "
          f"median of {args.repeat}; load average at the end {os.getloadavg()[0]:.1f}")
    print(benchlib.table(rows))
    print(f"\n{benchlib.machine()}")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
