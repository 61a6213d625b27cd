"""Is a DEM file on disk a whole Copernicus DEM of the cell its name says?

Sen2Cor finds cells by file name only: a truncated GeoTIFF, an HTML error page or another
cell's raster under the right name is used as if it were the DEM, or fails the whole tile
to flat terrain. So "present" must mean "whole", checked from the file itself, without a
checksum (files extracted long ago, or single files from the Nodes API, have none):

- GeoTIFF (DGED): a TIFF that tifffile parses, one band, the raster size of a 1°×1° cell at
  that resolution and latitude, every strip or tile inside the file, georeferenced on the
  named cell (tie point at its north-west corner, pixel scale spanning one degree);
- DTED (``.dt1``/``.dt2``): the UHL, DSI and ACC headers at their offsets, the UHL origin on
  the named cell, the record count and length against the file size, every record's
  sentinel and checksum.

The checks read headers and offsets, not pixels (except DTED checksums, which are cheap),
so a folder of hundreds of cells is checked in well under a second per cell.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cdse_dem.geocells import Geocell, geocell_of_name

# Columns of a cell by the latitude of its pole-ward edge (Copernicus DEM product handbook;
# cdse-api.md section 3); rows are constant: 1 arc-second (GLO-30) or 3 (GLO-90), edge to edge.
_COLUMNS = {
    30: ((50, 3601), (60, 2401), (70, 1801), (80, 1201), (85, 721), (90, 361)),
    90: ((50, 1201), (60, 801), (70, 601), (80, 401), (85, 241), (90, 121)),
}
_ROWS = {30: 3601, 90: 1201}
_DTED_HEADER = 80 + 648 + 2700  # UHL, DSI, ACC
_DTED_RECORD_OVERHEAD = 8 + 4  # sentinel, block count, lon/lat counts; checksum
_DTED_SENTINEL = 0xAA
_DTED_LEVEL = {90: ".dt1", 30: ".dt2"}
_GEO_TOLERANCE = 1.0  # pixels: pixel-is-point or -area origins differ by half a pixel


def expected_shape(cell: Geocell, resolution: int) -> tuple[int, int]:
    """(rows, columns) of the cell's DEM raster: columns shrink towards the poles."""
    edge = max(abs(cell.lat), abs(cell.lat + 1))
    columns = next(count for limit, count in _COLUMNS[resolution] if edge <= limit)
    return _ROWS[resolution], columns


def dem_problem(path: Path, *, resolution: int | None = None, cell: Geocell | None = None,
                suffix: str | None = None) -> str | None:
    """None when ``path`` is a whole DEM of its cell; otherwise why not, in a few words.

    The cell and resolution come from the file name unless given; the format from its
    suffix (``_DEM.tif`` GeoTIFF, ``_DEM.dt1``/``.dt2`` DTED) unless ``suffix`` is given
    (a file still under its temporary name, checked before it is renamed into place).
    """
    path = Path(path)
    named = geocell_of_name(path.name)
    if cell is None or resolution is None:
        if named is None:
            return "not named like a Copernicus DEM cell"
        cell = cell or named[0]
        resolution = resolution or named[1]
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not path.is_file():
        return "not a regular file"
    if size == 0:
        return "empty"
    suffix = (suffix or path.suffix).lower()
    try:
        if suffix in (".tif", ".tiff"):
            return _geotiff_problem(path, size, cell, resolution)
        if suffix in (".dt1", ".dt2"):
            if suffix != _DTED_LEVEL[resolution]:
                return f"a {suffix} file at {resolution} m (expected {_DTED_LEVEL[resolution]})"
            return _dted_problem(path, size, cell, resolution)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return f"not a DEM file type ({suffix or 'no suffix'})"


def _geotiff_problem(path: Path, size: int, cell: Geocell, resolution: int) -> str | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                return "a TIFF without an image"
            page = tif.pages.first
            rows, cols = expected_shape(cell, resolution)
            if (page.imagelength, page.imagewidth) != (rows, cols):
                return (f"a {page.imagelength}×{page.imagewidth} raster "
                        f"(a {cell.grid_id} cell at {resolution} m is {rows}×{cols})")
            if page.samplesperpixel != 1:
                return f"{page.samplesperpixel} bands, not one"
            offsets, counts = page.dataoffsets, page.databytecounts
            if not offsets or len(offsets) != len(counts):
                return "a TIFF without image data"
            if any(o <= 0 or c <= 0 or o + c > size for o, c in zip(offsets, counts, strict=True)):
                return f"truncated ({size:,} bytes: image data reaches past the end)"
            if page.compression == 1:
                expected = rows * cols * page.bitspersample // 8
                if sum(counts) != expected:
                    return f"image data of {sum(counts):,} bytes (a whole raster is {expected:,})"
            return _georeference_problem(page.tags, cell, rows, cols)
    except (tifffile.TiffFileError, ValueError, KeyError, IndexError, struct.error) as exc:
        return f"not a readable GeoTIFF ({_first_line(exc)})"


def _georeference_problem(tags, cell: Geocell, rows: int, cols: int) -> str | None:
    scale_tag, tie_tag = tags.get("ModelPixelScaleTag"), tags.get("ModelTiepointTag")
    if scale_tag is None or tie_tag is None:
        return "a TIFF without georeferencing (not a GeoTIFF)"
    scale, tie = scale_tag.value, tie_tag.value
    if len(scale) < 2 or len(tie) < 6:
        return "a GeoTIFF with a malformed georeference"
    dx, dy = float(scale[0]), float(scale[1])
    if not (dx > 0 and dy > 0):
        return "a GeoTIFF with a malformed pixel scale"
    i, j, x, y = float(tie[0]), float(tie[1]), float(tie[3]), float(tie[4])
    west, north = x - i * dx, y + j * dy  # the raster's first sample, in degrees
    if abs(west - cell.lon) > _GEO_TOLERANCE * dx or abs(north - (cell.lat + 1)) > _GEO_TOLERANCE * dy:
        return f"georeferenced at {north:.4f}°, {west:.4f}°, not on {cell.grid_id}"
    span_x, span_y = dx * cols, dy * rows  # one degree, give or take the edge sample
    if not (abs(span_x - 1) <= 2 * dx and abs(span_y - 1) <= 2 * dy):
        return f"a raster spanning {span_y:.4f}°×{span_x:.4f}°, not one degree"
    return None


def _dted_problem(path: Path, size: int, cell: Geocell, resolution: int) -> str | None:
    import numpy as np

    rows, cols = expected_shape(cell, resolution)
    record = _DTED_RECORD_OVERHEAD + 2 * rows
    expected = _DTED_HEADER + cols * record
    with open(path, "rb") as handle:
        head = handle.read(_DTED_HEADER)
        if len(head) < _DTED_HEADER or head[:4] != b"UHL1" or head[80:83] != b"DSI" or head[728:731] != b"ACC":
            return "not a DTED file (UHL/DSI/ACC headers missing)"
        origin = head[4:20].decode("ascii", "replace")
        if origin != _dted_origin(cell):
            return f"a DTED file for {origin!r}, not {cell.grid_id}"
        try:
            lines, points = int(head[47:51]), int(head[51:55])
        except ValueError:
            return "a DTED file with a malformed UHL"
        if (lines, points) != (cols, rows):
            return f"a DTED of {lines} lines × {points} points (a {cell.grid_id} cell is {cols} × {rows})"
        if size != expected:
            return f"{size:,} bytes (a whole {cell.grid_id} DTED is {expected:,})"
        body = np.frombuffer(handle.read(), dtype=np.uint8)
    if body.size != cols * record:
        return "truncated while being read"
    records = body.reshape(cols, record)
    if not np.all(records[:, 0] == _DTED_SENTINEL):
        return "a DTED with a damaged data record (no sentinel)"
    sums = records[:, : record - 4].sum(axis=1, dtype=np.uint64) & 0xFFFFFFFF
    stored = records[:, record - 4:].copy().view(">u4").reshape(cols).astype(np.uint64)
    bad = np.flatnonzero(sums != stored)
    if bad.size:
        return f"a DTED whose record {int(bad[0])} fails its checksum"
    return None


def _dted_origin(cell: Geocell) -> str:
    """The UHL's origin field, ``DDDMMSSH`` longitude then latitude, of the cell's south-west corner."""
    lon = f"{abs(cell.lon):03d}0000{'E' if cell.lon >= 0 else 'W'}"
    lat = f"{abs(cell.lat):03d}0000{'N' if cell.lat >= 0 else 'S'}"
    return lon + lat


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]
