#!/usr/bin/env python3
"""The simulator's product zips: their sizes and the time to make one, per kind and size mode.

Usage: python benchmarks/bench_simulator_zips.py [--repeat 3]

One cell below 50°N (N49_E008, real 3601x3601 / 1201x1201 rasters), COP-DEM products, made
in-process into a fresh folder (no cache). Prints, per kind and size: the zip's bytes, the DEM
member's bytes, the HEM member's bytes (the recorded layout: as large as the DEM in
"realistic") and the median wall time to make the zip. Tests use "small" (real dimensions,
DEFLATE GeoTIFFs), benchmarks and the demo "realistic".
"""

import argparse
import io
import statistics
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the simulator package, run from anywhere

KINDS = ((90, "DGED"), (90, "DTED"), (30, "DGED"), (30, "DTED"))
CELL = (49, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from simulator.cells import load_cells
    from simulator.products import ProductIndex
    from simulator.zips import write_product_zip

    index = ProductIndex(load_cells(None), 0, ())
    by_kind = {(p.key.resolution, p.key.model): p for p in index.products_in_cell(CELL)
               if p.key.collection == "COP-DEM"}
    write_product_zip(io.BytesIO(), by_kind[(90, "DGED")], "small")  # imports and caches, not timed
    print(f"{'kind':<12} {'size':<10} {'zip bytes':>12} {'DEM bytes':>12} {'HEM bytes':>12} {'make s':>8}")
    for res, model in KINDS:
        product = by_kind[(res, model)]
        for size in ("small", "realistic"):
            times = []
            for _ in range(args.repeat):
                out = io.BytesIO()
                began = time.perf_counter()
                write_product_zip(out, product, size)
                times.append(time.perf_counter() - began)
            archive = zipfile.ZipFile(out)
            members = {i.filename.rsplit("_", 1)[-1]: i.file_size for i in archive.infolist()
                       if "/PREVIEW/" not in i.filename}
            dem = next(v for k, v in members.items() if k.startswith("DEM."))
            print(f"GLO-{res}-{model:<5} {size:<10} {len(out.getvalue()):>12,} {dem:>12,} {members['HEM.tif']:>12,} "
                  f"{statistics.median(times):>8.2f}")


if __name__ == "__main__":
    main()
