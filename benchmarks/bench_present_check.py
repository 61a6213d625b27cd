"""What the "already present" integrity check costs on a re-run (issue 11, row 14).

Every recorded DEM of the output folder is checked with ``integrity.dem_problem`` before it
counts as present: GeoTIFF headers and strip offsets, DTED headers and every record checksum.
This builds a folder of real-dimension DEMs with the simulator's own product code (GeoTIFF
GLO-90, DTED level 1 at 90 m and level 2 at 30 m), then times the check over all of them,
as a re-run does (page cache warm: the files were just written, as they are after a run).

    .venv/bin/python benchmarks/bench_present_check.py [--dged 300] [--dt1 50] [--dt2 10]
"""

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdse_dem.dem_folder import dem_problem, extract_dem
from simulator.products import Product, ProductKey
from simulator.zips import write_product_zip

SEED = 1


def fill(folder: Path, count: int, resolution: int, model: str, size: str) -> list[Path]:
    """``count`` DEM layers of distinct cells below 50°N (the widest rasters), extracted as the tool does."""
    files = []
    for n in range(count):
        key = ProductKey(10 + n // 60, -30 + n % 60, "CCM", "2024_1", resolution, model)
        buffer = io.BytesIO()
        write_product_zip(buffer, Product(key, SEED), size)
        zip_path = folder / "product.zip"
        zip_path.write_bytes(buffer.getvalue())
        files.append(extract_dem(zip_path, folder))
    (folder / "product.zip").unlink()
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dged", type=int, default=300)
    parser.add_argument("--dt1", type=int, default=50)
    parser.add_argument("--dt2", type=int, default=10)
    args = parser.parse_args()
    print("| files | kind | bytes each | check, total | per file |")
    print("|---|---|---|---|---|")
    for count, resolution, model, kind in ((args.dged, 90, "DGED", "GeoTIFF 90 m, 1201×1201 float32"),
                                           (args.dt1, 90, "DTED", "DTED level 1 (90 m)"),
                                           (args.dt2, 30, "DTED", "DTED level 2 (30 m)")):
        if not count:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            files = fill(Path(tmp), count, resolution, model, "realistic" if model == "DGED" else "small")
            start = time.perf_counter()
            problems = [dem_problem(path) for path in files]
            seconds = time.perf_counter() - start
            assert problems == [None] * count, problems[:3]
            size = files[0].stat().st_size
            print(f"| {count} | {kind} | {size:,} | {seconds:.3f} s | {seconds / count * 1000:.2f} ms |")


if __name__ == "__main__":
    main()
