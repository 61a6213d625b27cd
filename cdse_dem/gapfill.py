"""Filling a gap in the DEM: a cell's file made from another dataset's product of the same cell.

GLO-30 is not released everywhere GLO-90 is (25 land cells over Armenia and Azerbaijan exist at
90 m only), and a delivery may lack cells another has. Sen2Cor finds cells by file name only and
goes flat over a tile with one missing, so ``--fill-gaps`` writes, under the requested
resolution's name, a file Sen2Cor reads as that cell: the same format (GeoTIFF, or DTED for
``--m DTED``), raster size, data type and georeference as a real file of that resolution and
latitude, so the integrity check (:func:`cdse_dem.dem_folder.dem_problem`) accepts it. Its
structure is the source file's own (its GeoTIFF keys and compression, its DTED headers), with
the sample spacing and counts of the target resolution.

The posts of both resolutions lie on one grid (pixel-is-point, first sample on the cell's
north-west corner, last on its south-east corner): GLO-90's are every third GLO-30 post, in
every latitude band (3601 = 3 × 1200 + 1 rows; 2401, 1801, 1201, 721, 361 = 3 × n + 1 columns).
So GLO-90 to GLO-30 is bilinear interpolation between the coarse posts (equal to them on the
posts, within their range between), and GLO-30 to GLO-90 takes every third post; another
delivery at the same resolution is copied as it is.
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from cdse_dem.dem_folder import (
    DTED_HEADER_BYTES,
    ExtractError,
    check_member,
    dem_base_name,
    dem_problem,
    dted_counts,
    expected_shape,
    find_dem_member,
)
from cdse_dem.fsutil import atomic_writer
from cdse_dem.grid import Geocell, geocell_of_name

log = logging.getLogger(__name__)


# GeoTIFF tags that place a raster on the Earth (GeoTIFF 1.1: pixel scale, tie points, the
# transformation, the three GeoKey tags) and GDAL's no-data and metadata tags: copied from the
# source file, the pixel scale rescaled to the target's spacing.
_PIXEL_SCALE, _TIE_POINT, _TRANSFORMATION = 33550, 33922, 34264
_GEO_TAGS = (_PIXEL_SCALE, _TIE_POINT, _TRANSFORMATION, 34735, 34736, 34737, 42112, 42113)
# Rows per strip of a CDSE DGED GeoTIFF: one. The recorded GLO-90 layer is 5,779,572 bytes, 9,968
# more than its 1201 × 1201 float32 samples: the IFD and two tables of 1201 strip offsets and counts.
_ROWS_PER_STRIP = 1
# CDSE's GeoTIFFs are uncompressed; a source compressed with DEFLATE (as the simulator's small size is)
# gives a filled file compressed the same way (Python's zlib writes it). Any other source: uncompressed.
_DEFLATE = 8
# Bilinear rows are computed this many at a time: a GLO-30 cell is 52 MB of float32, and the
# float64 working copy of it whole would be twice that.
_BLOCK_ROWS = 256
_DTED_UHL = 80  # the DSI header follows it
_DTED_LEVEL = {90: "DTED1", 30: "DTED2"}


class FillError(ExtractError):
    """The source product cannot be made into the cell's file (a DEM layer we cannot read)."""


@dataclass(frozen=True)
class Raster:
    """A cell's heights (rows north to south, columns west to east, edge to edge) and the file they
    came from, whose structure the filled file keeps."""

    heights: np.ndarray
    suffix: str  # ".tif", ".dt1", ".dt2"
    tags: tuple = ()  # GeoTIFF: (code, dtype, count, value) of each geo tag
    compression: int = 1  # GeoTIFF: its Compression tag (CDSE's: 1, none)
    header: bytes = b""  # DTED: UHL + DSI + ACC


def fill_cell(zip_path: Path, out_dir: Path, file_name: str, cell: Geocell, resolution: int) -> Path:
    """Write ``out_dir/file_name``, the ``resolution`` m DEM of ``cell``, from the product zip of
    another dataset (its DEM layer of the same cell and model); return its path.

    Written to a temporary, checked whole by the integrity check, then renamed into place: a
    file under its final name is always a whole DEM. FillError for a source that cannot be used.
    """
    source = read_source(zip_path, cell)
    rows, cols = expected_shape(cell, resolution)
    heights = resample(source.heights, rows, cols)
    suffix = Path(file_name).suffix.lower()
    if suffix == ".tif":
        if source.suffix != ".tif":
            raise FillError(f"{zip_path} holds a {source.suffix} DEM, not the GeoTIFF {file_name} is made from")
        data = geotiff_bytes(heights, source)
    else:
        if source.suffix not in (".dt1", ".dt2"):
            raise FillError(f"{zip_path} holds a {source.suffix} DEM, not the DTED {file_name} is made from")
        data = dted_bytes(heights, source, resolution)

    def must_be_whole(temp: Path) -> None:
        problem = dem_problem(temp, resolution=resolution, cell=cell, suffix=suffix)
        if problem is not None:  # a bug here, never a file under the cell's name
            raise FillError(f"the filled {file_name} is not a whole DEM ({problem})")

    final = Path(out_dir) / file_name
    with atomic_writer(final, check=must_be_whole) as handle:
        handle.write(data)
    return final


def read_source(zip_path: Path, cell: Geocell) -> Raster:
    """The heights and structure of the DEM layer of a product zip, which must be ``cell``'s."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            info = find_dem_member(archive, zip_path)
            base = dem_base_name(info)
            named = geocell_of_name(base)
            if named is None or named[0] != cell:
                raise FillError(f"{zip_path} holds {base}, not a DEM of {cell.grid_id}")
            check_member(info, base, zip_path)  # a regular file, no larger than a DEM can be
            data = archive.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise FillError(f"cannot read the DEM layer of {zip_path} ({exc})") from exc
    suffix = Path(base).suffix.lower()
    expected = expected_shape(cell, named[1])
    raster = _read_geotiff(data, base) if suffix == ".tif" else _read_dted(data, base)
    if raster.heights.shape != expected:
        raise FillError(f"{base} is a {raster.heights.shape[0]}×{raster.heights.shape[1]} raster "
                        f"(a {cell.grid_id} cell at {named[1]} m is {expected[0]}×{expected[1]})")
    return raster


def _read_geotiff(data: bytes, name: str) -> Raster:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            heights = page.asarray()
            tags = tuple((tag.code, tag.dtype, tag.count, tag.value) for tag in page.tags if tag.code in _GEO_TAGS)
            compression = int(page.compression)
    except Exception as exc:
        # The source's bytes decide what tifffile meets, as in the integrity check: any failure to
        # parse it means the same, a source that cannot be used, never a traceback.
        raise FillError(f"{name} is not a readable GeoTIFF ({exc})") from exc
    if heights.ndim != 2 or not {_PIXEL_SCALE, _TIE_POINT} <= {code for code, *_ in tags}:
        raise FillError(f"{name} is not a single-band GeoTIFF with a pixel scale and a tie point")
    for code, _, _, value in tags:  # the numbers geotiff_bytes rescales and carries over
        if code in _NUMBERS_NEEDED and not _finite_numbers(value, _NUMBERS_NEEDED[code]):
            raise FillError(f"{name}: its GeoTIFF tag {code} is not {_NUMBERS_NEEDED[code]} finite numbers")
    return Raster(heights, ".tif", tags=tags, compression=compression if compression == _DEFLATE else 1)


_NUMBERS_NEEDED = {_PIXEL_SCALE: 3, _TIE_POINT: 6, _TRANSFORMATION: 16}


def _finite_numbers(value, count: int) -> bool:
    """Whether a tag's value is at least ``count`` finite real numbers: a source's tags come from
    its bytes, and odd types or counts must be refused here, not meet the writer."""
    try:
        numbers = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return numbers.ndim == 1 and numbers.size >= count and bool(np.isfinite(numbers[:count]).all())


def _read_dted(data: bytes, name: str) -> Raster:
    """DTED heights: one record per longitude line, west to east, its posts south to north, each
    a big-endian signed magnitude."""
    head = data[:DTED_HEADER_BYTES]
    try:
        cols, rows = dted_counts(head)
    except ValueError:
        raise FillError(f"{name} is not a DTED file (its UHL is malformed)") from None
    record = 8 + 2 * rows + 4
    if head[:4] != b"UHL1" or len(data) != DTED_HEADER_BYTES + cols * record:
        raise FillError(f"{name} is not a whole DTED file")
    body = np.frombuffer(data, dtype=np.uint8, offset=DTED_HEADER_BYTES).reshape(cols, record)
    raw = body[:, 8:8 + 2 * rows].copy().view(">u2").astype(np.int32)
    values = np.where(raw & 0x8000, -(raw & 0x7FFF), raw & 0x7FFF)
    return Raster(values.T[::-1].astype(np.int16), Path(name).suffix.lower(), header=bytes(head))


def resample(heights: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``heights`` on the ``rows`` × ``cols`` posts of the same cell, of the same data type.

    Three times as many intervals along each axis: bilinear between the source posts (equal to
    them on the posts, within their range between; integers rounded). A third as many: every
    third post. The same: the heights as they are.
    """
    have_rows, have_cols = heights.shape
    if (have_rows, have_cols) == (rows, cols):
        return heights
    if (rows - 1, cols - 1) == (3 * (have_rows - 1), 3 * (have_cols - 1)):
        return _bilinear(heights, 3)
    if (have_rows - 1, have_cols - 1) == (3 * (rows - 1), 3 * (cols - 1)):
        return np.ascontiguousarray(heights[::3, ::3])
    raise FillError(f"a {have_rows}×{have_cols} raster cannot be resampled to {rows}×{cols}")


def _weights(count: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of the ``(count - 1) * factor + 1`` fine posts: the coarse posts either side, and
    the weight of the second."""
    fine = np.arange((count - 1) * factor + 1)
    before = fine // factor
    return before, np.minimum(before + 1, count - 1), (fine % factor) / factor


def _bilinear(coarse: np.ndarray, factor: int) -> np.ndarray:
    row_a, row_b, row_t = _weights(coarse.shape[0], factor)
    col_a, col_b, col_t = _weights(coarse.shape[1], factor)
    source = coarse.astype(np.float64)
    out = np.empty((row_a.size, col_a.size), dtype=coarse.dtype)
    integer = np.issubdtype(coarse.dtype, np.integer)
    for start in range(0, row_a.size, _BLOCK_ROWS):
        part = slice(start, start + _BLOCK_ROWS)
        t = row_t[part, None]
        tall = source[row_a[part]] * (1 - t) + source[row_b[part]] * t
        block = tall[:, col_a] * (1 - col_t) + tall[:, col_b] * col_t
        out[part] = np.rint(block) if integer else block
    return out


def geotiff_bytes(heights: np.ndarray, source: Raster) -> bytes:
    """A strip GeoTIFF of ``heights`` with the source's geo tags, its spacing rescaled: the same
    corner posts, so the same cell."""
    (have_rows, have_cols), (rows, cols) = source.heights.shape, heights.shape
    ratio_x, ratio_y = (have_cols - 1) / (cols - 1), (have_rows - 1) / (rows - 1)
    tags = []
    for code, dtype, count, value in source.tags:
        if code == _PIXEL_SCALE:
            value = (value[0] * ratio_x, value[1] * ratio_y, *value[2:])
        elif code == _TRANSFORMATION:
            value = (value[0] * ratio_x, *value[1:5], value[5] * ratio_y, *value[6:])
        tags.append((code, dtype, 0 if dtype == 2 else count, value, True))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, heights, photometric="minisblack", compression=source.compression,
                     compressionargs={"level": 1} if source.compression == _DEFLATE else None,
                     rowsperstrip=_ROWS_PER_STRIP, metadata=None, software=False, extratags=tags)
    return buffer.getvalue()


def dted_bytes(heights: np.ndarray, source: Raster, resolution: int) -> bytes:
    """A DTED file of ``heights`` (rows north to south) with the source's headers, their spacing,
    counts and level those of the target (MIL-PRF-89020B field offsets)."""
    rows, cols = heights.shape
    have_rows, have_cols = source.heights.shape
    head = bytearray(source.header)
    uhl, dsi = 0, _DTED_UHL

    def put(offset: int, text: str) -> None:
        head[offset:offset + len(text)] = text.encode("ascii")

    def spacing(field: int, have: int, want: int) -> str:  # tenths of arc seconds, 4 digits
        return f"{round(int(head[field:field + 4]) * (have - 1) / (want - 1)):04d}"

    lon_step, lat_step = spacing(uhl + 20, have_cols, cols), spacing(uhl + 24, have_rows, rows)
    put(uhl + 20, lon_step)
    put(uhl + 24, lat_step)
    put(uhl + 47, f"{cols:04d}{rows:04d}")
    put(dsi + 59, _DTED_LEVEL[resolution])
    put(dsi + 273, f"{lat_step}{lon_step}{rows:04d}{cols:04d}")
    values = np.rint(heights[::-1].T).astype(np.int32)  # a record per column, its posts south to north
    magnitude = np.ascontiguousarray(np.abs(values) | np.where(values < 0, 0x8000, 0), dtype=">u2")
    record = np.empty((cols, 8 + 2 * rows + 4), dtype=np.uint8)
    index = np.arange(cols, dtype=np.uint32)
    record[:, 0] = 0xAA  # sentinel, then the data block count (3 bytes), longitude and latitude counts
    record[:, 1], record[:, 2], record[:, 3] = (index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF
    record[:, 4], record[:, 5] = (index >> 8) & 0xFF, index & 0xFF
    record[:, 6:8] = 0
    record[:, 8:8 + 2 * rows] = magnitude.view(np.uint8).reshape(cols, 2 * rows)
    checksum = record[:, :8 + 2 * rows].sum(axis=1, dtype=np.uint32)
    record[:, 8 + 2 * rows:] = checksum.astype(">u4").view(np.uint8).reshape(cols, 4)
    return bytes(head) + record.tobytes()
