#!/usr/bin/env python3
"""Rebuild cdse_dem/data/s2_tile_ids.bin, the list of tiles that exist, from ESA's tiling KML.

Usage: python scripts/build_tile_ids.py [SOURCE] [-o OUTPUT]
SOURCE is the KML or a zip holding it (default ../shared/data/s2_tiling.zip). The KML is
streamed (from inside the zip, without unpacking it), so memory stays small.
"""

import argparse
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdse_dem.grid import iter_placemarks  # noqa: E402
from cdse_dem.tiles import TILE_IDS_FILE, normalize_tile_id, pack_tile_ids  # noqa: E402

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "s2_tiling.zip"


def tile_ids_of(source: Path) -> list[str]:
    """Every Placemark name of the KML (or of the one .kml inside a zip), as tile ids."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".kml")]
            if len(members) != 1:
                raise SystemExit(f"{source}: expected one .kml inside, found {len(members)}")
            with archive.open(members[0]) as stream:
                names = [name for name, _ in iter_placemarks(stream, rings=False)]
    else:
        names = [name for name, _ in iter_placemarks(source, rings=False)]
    tiles = [normalize_tile_id(n) for n in names]
    bad = [n for n, t in zip(names, tiles, strict=True) if t is None]
    if bad:
        raise SystemExit(f"{source}: {len(bad)} placemark names are not tile ids, e.g. {bad[:3]}")
    return tiles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("-o", "--output", type=Path, default=TILE_IDS_FILE)
    args = parser.parse_args(argv)
    tiles = tile_ids_of(args.source)
    data = pack_tile_ids(tiles)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.output)
    print(f"{args.output}: {len(set(tiles))} tiles ({len(tiles)} placemarks), {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
