"""A DTED writer (MIL-PRF-89020B): UHL, DSI and ACC headers, then one record per longitude line.

Copernicus DEM DTED products are Level 1 at 90 m (1201 x 1201 below 50°) and Level 2 at 30 m
(3601 x 3601): integer metres, signed-magnitude big-endian, each record closed by the sum of
its bytes. GDAL checks the header layout strictly, so every field is at its specified offset.
"""

from __future__ import annotations

import numpy as np

from simulator.terrain import BlockRaster


def _angle(value: float, degree_digits: int, positive: str, negative: str) -> str:
    """``DDDMMSSH`` (longitude) or ``DDMMSSH`` (latitude) of a whole-degree value."""
    hemi = positive if value >= 0 else negative
    total = round(abs(value) * 3600)
    return f"{total // 3600:0{degree_digits}d}{total // 60 % 60:02d}{total % 60:02d}{hemi}"


def _field(text: str, width: int) -> str:
    if len(text) > width:
        raise ValueError(f"DTED field {text!r} is wider than {width}")
    return text.ljust(width)


def _interval(spacing_deg: float) -> str:
    tenths = round(spacing_deg * 36000)
    if abs(tenths - spacing_deg * 36000) > 1e-6:
        raise ValueError(f"spacing {spacing_deg} is not a whole number of tenths of seconds")
    return f"{tenths:04d}"


def dted_bytes(elevation: np.ndarray | BlockRaster, lat: int, lon: int, level: int) -> bytes:
    """A DTED file for the cell with south-west corner (lat, lon).

    ``elevation`` is rows x cols, north row first, west column first, spanning the cell edge to
    edge (pixel-is-point); values are rounded to whole metres.
    """
    rows, cols = elevation.shape
    lon_interval = _interval(1.0 / (cols - 1))
    lat_interval = _interval(1.0 / (rows - 1))
    lon_txt = _angle(lon, 3, "E", "W")
    lat_txt = _angle(lat, 3, "N", "S")

    uhl = ("UHL1" + lon_txt + lat_txt + lon_interval + lat_interval + "0030" + "U  "
           + _field("", 12) + f"{cols:04d}" + f"{rows:04d}" + "0" + _field("", 24))

    def corner(la: int, lo: int) -> str:
        return _angle(la, 2, "N", "S") + _angle(lo, 3, "E", "W")

    dsi = ("DSI" + "U" + "  " + _field("", 27) + _field("", 26) + f"DTED{level}"
           + _field("", 15) + _field("", 8) + "01" + "A" + "0000" + "0000" + "0000"
           + _field("CDSESIM", 8) + _field("", 16) + "PRF89020B" + "00" + "0005" + "E96" + "WGS84"
           + _field("TDX", 10) + "1501" + _field("", 22)
           + f"{abs(lat):02d}0000.0{'N' if lat >= 0 else 'S'}"
           + f"{abs(lon):03d}0000.0{'E' if lon >= 0 else 'W'}"
           + corner(lat, lon) + corner(lat + 1, lon) + corner(lat + 1, lon + 1) + corner(lat, lon + 1)
           + "0000000.0" + lat_interval + lon_interval + f"{rows:04d}" + f"{cols:04d}" + "00"
           + _field("", 101) + _field("", 100) + _field("", 156))
    acc = "ACC" + "NA  " + "0030" + "NA  " + "NA  " + _field("", 4) + " " + _field("", 31) + "00"
    acc = _field(acc, 2700)
    head = (uhl + dsi + acc).encode("ascii")
    if (len(uhl), len(dsi), len(acc)) != (80, 648, 2700):
        raise AssertionError("DTED header layout broken")

    # One record per column; equal neighbouring columns (the "small" size's low-detail field)
    # share their data bytes, so only the distinct ones are encoded.
    if isinstance(elevation, BlockRaster):
        columns, which = elevation.grid[elevation.row_of], elevation.col_of
    else:
        distinct = np.ones(cols, dtype=bool)
        distinct[1:] = np.any(elevation[:, 1:] != elevation[:, :-1], axis=0)
        columns, which = elevation[:, distinct], np.cumsum(distinct) - 1
    values = np.rint(columns[::-1].T).astype(np.int32)  # distinct cols x rows, south to north
    magnitude = np.abs(values).astype(np.uint16) | np.where(values < 0, 0x8000, 0).astype(np.uint16)
    body = np.ascontiguousarray(magnitude, dtype=">u2").view(np.uint8).reshape(len(values), 2 * rows)
    body_sum = body.sum(axis=1, dtype=np.uint32)
    record = np.empty((cols, 8 + 2 * rows + 4), dtype=np.uint8)
    record[:, 8:8 + 2 * rows] = body[which]
    index = np.arange(cols, dtype=np.uint32)
    record[:, 0] = 0xAA
    record[:, 1] = (index >> 16) & 0xFF
    record[:, 2] = (index >> 8) & 0xFF
    record[:, 3] = index & 0xFF
    record[:, 4] = (index >> 8) & 0xFF
    record[:, 5] = index & 0xFF
    record[:, 6:8] = 0
    checksum = record[:, :8].sum(axis=1, dtype=np.uint32) + body_sum[which]
    record[:, 8 + 2 * rows:] = checksum.astype(">u4").view(np.uint8).reshape(cols, 4)
    return head + record.tobytes()
