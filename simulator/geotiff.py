"""A GeoTIFF writer, by hand, for single-band rasters georeferenced in EPSG:4326.

Copernicus DEM GeoTIFFs are plain strip TIFFs, pixel-is-point, with the first sample on the
cell's north-west corner and the last on its south-east corner (3601 samples span one degree).
Writing them with ``struct`` keeps GDAL out of the simulator's dependencies while still giving
files that GDAL (and so rasterio, QGIS, Sen2Cor) reads with the right georeferencing.

``compress=True`` writes DEFLATE strips (TIFF compression 8): the simulator's "small" size keeps
the real raster dimensions, so that a client can check them, but with a low-detail field the
strips shrink about a thousandfold. CDSE's own files are uncompressed ("realistic").
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from simulator.terrain import BlockRaster

_SHORT, _LONG, _DOUBLE, _ASCII = 3, 4, 12, 2
_SIZES = {_SHORT: 2, _LONG: 4, _DOUBLE: 8, _ASCII: 1}
_FORMATS = {_SHORT: "H", _LONG: "I", _DOUBLE: "d"}
_SAMPLE_FORMAT = {"f": 3, "u": 1, "i": 2}


_DEFLATE = 8  # TIFF Compression tag value for zlib (Adobe DEFLATE), which GDAL reads


def geotiff_parts(array: np.ndarray | BlockRaster, west: float, north: float, dx: float, dy: float,
                  *, pixel_is_point: bool = True, nodata: float | None = None,
                  compress: bool = False) -> tuple[bytes, np.ndarray | bytes]:
    """The TIFF header and IFD, and the pixel array to write right after them.

    ``west``/``north`` are the coordinates of the first sample (its centre when pixel-is-point),
    ``dx``/``dy`` the positive sample spacing in degrees. Returned in two parts so that a 52 MB
    raster goes to the zip without being copied into one ``bytes``.
    """
    if isinstance(array, BlockRaster):
        compress = True  # a block raster is only ever written compressed
        data = array.like(np.ascontiguousarray(array.grid, dtype=array.dtype.newbyteorder("<")))
    else:
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    rows, cols = data.shape
    itemsize = data.dtype.itemsize
    row_bytes = cols * itemsize
    rows_per_strip = max(1, min(rows, 65536 // row_bytes))
    packed: list[bytes] = []
    if compress:
        # A row equal to the one before points at the same compressed bytes (TIFF allows shared
        # strips): a low-detail raster costs its distinct rows only. One row per strip, unless
        # every row is the same: then strips of many rows, all but the last one shared.
        fresh = np.ones(rows, dtype=bool)
        if isinstance(data, BlockRaster):  # compare the few distinct values of each row
            fresh[1:] = np.any(data.grid[data.row_of[1:]] != data.grid[data.row_of[:-1]], axis=1)
        else:
            fresh[1:] = np.any(data[1:] != data[:-1], axis=1)
        first_row = data.row(0) if isinstance(data, BlockRaster) else data[0]
        if fresh[1:].any():
            rows_per_strip = 1
            for row in np.flatnonzero(fresh):
                values = data.row(row) if isinstance(data, BlockRaster) else data[row]
                packed.append(zlib.compress(values.tobytes(), 6))
            group = np.cumsum(fresh) - 1
        else:
            full, rest = divmod(rows, rows_per_strip)
            packed.append(zlib.compress(np.tile(first_row, rows_per_strip).tobytes(), 6))
            if rest:
                packed.append(zlib.compress(np.tile(first_row, rest).tobytes(), 6))
            group = np.array([0] * full + [1] * bool(rest))
        lengths = np.array([len(p) for p in packed], dtype=np.int64)
        counts = lengths[group].tolist()
        starts = (np.cumsum(lengths) - lengths)[group].tolist()
    strips = (rows + rows_per_strip - 1) // rows_per_strip
    if not compress:
        counts = [min(rows_per_strip, rows - i * rows_per_strip) * row_bytes for i in range(strips)]

    geokeys = [1, 1, 0, 3,
               1024, 0, 1, 2,                            # GTModelType: geographic
               1025, 0, 1, 2 if pixel_is_point else 1,   # GTRasterType: point / area
               2048, 0, 1, 4326]                         # GeographicType: WGS 84
    entries: list[tuple[int, int, list]] = [
        (256, _LONG, [cols]),
        (257, _LONG, [rows]),
        (258, _SHORT, [itemsize * 8]),
        (259, _SHORT, [_DEFLATE if compress else 1]),
        (262, _SHORT, [1]),
        (273, _LONG, [0] * strips),  # filled in below, once the data offset is known
        (277, _SHORT, [1]),
        (278, _LONG, [rows_per_strip]),
        (279, _SHORT if compress and max(counts) < 65536 else _LONG, counts),  # SHORT: a smaller table
        (284, _SHORT, [1]),
        (339, _SHORT, [_SAMPLE_FORMAT[data.dtype.kind]]),
        (33550, _DOUBLE, [dx, dy, 0.0]),
        (33922, _DOUBLE, [0.0, 0.0, 0.0, west, north, 0.0]),
        (34735, _SHORT, geokeys),
    ]
    if nodata is not None:
        entries.append((42113, _ASCII, [f"{nodata:g}\0".encode("ascii")]))

    ifd_size = 2 + 12 * len(entries) + 4
    extra_start = 8 + ifd_size

    def layout() -> tuple[bytes, bytes]:
        ifd = [struct.pack("<H", len(entries))]
        extra = bytearray()
        for tag, kind, values in entries:
            if kind == _ASCII:
                payload, count = values[0], len(values[0])
            else:
                payload = struct.pack("<" + _FORMATS[kind] * len(values), *values)
                count = len(values)
            if len(payload) <= 4:
                ifd.append(struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0"))
            else:
                if len(extra) % 2:
                    extra.append(0)
                ifd.append(struct.pack("<HHII", tag, kind, count, extra_start + len(extra)))
                extra += payload
        ifd.append(struct.pack("<I", 0))
        return b"".join(ifd), bytes(extra)

    _, extra = layout()
    data_start = extra_start + len(extra)
    data_start += data_start % 2
    offsets = [data_start + start for start in starts] if compress else [
        data_start + i * rows_per_strip * row_bytes for i in range(strips)]
    entries[5] = (273, _LONG, offsets)
    ifd, extra = layout()
    header = b"II*\0" + struct.pack("<I", 8) + ifd + extra
    header += b"\0" * (data_start - len(header))
    return header, (b"".join(packed) if compress else data)


def geotiff_bytes(array: np.ndarray, west: float, north: float, dx: float, dy: float, **kw) -> bytes:
    header, data = geotiff_parts(array, west, north, dx, dy, **kw)
    return header + bytes(memoryview(data).cast("B"))
