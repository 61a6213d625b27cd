"""Terrain-like elevations, deterministic for a seed, continuous across neighbouring cells.

The values are a function of absolute longitude and latitude (not of the cell), so adjacent
cells agree on their shared edge as real DEM tiles do. The field is a sum of a few separable
waves, folded into ridges: a matrix product and one elementwise pass, so a 3601 x 3601 cell
takes a fraction of a second.
"""

from __future__ import annotations

import numpy as np

_BANDS_30 = ((50, 3601), (60, 2401), (70, 1801), (80, 1201), (85, 721), (90, 361))
_BANDS_90 = ((50, 1201), (60, 801), (70, 601), (80, 401), (85, 241), (90, 121))
SMALL_ROWS = {30: 121, 90: 61}


def raster_shape(lat: int, resolution: int, size: str) -> tuple[int, int]:
    """(rows, cols) of a cell's DEM: columns shrink towards the poles, as on CDSE.

    "small" keeps the same ratio of rows to columns at a fraction of the size, with sample
    spacings that stay whole tenths of arc-seconds (DTED needs that).
    """
    band_lat = max(abs(lat), abs(lat + 1))  # the band is decided by the edge nearest the pole
    bands = _BANDS_30 if resolution == 30 else _BANDS_90
    rows = bands[0][1]
    cols = next(c for limit, c in bands if band_lat <= limit)
    if size == "realistic":
        return rows, cols
    small_rows = SMALL_ROWS[resolution]
    return small_rows, round((small_rows - 1) * (cols - 1) / (rows - 1)) + 1


def elevation(lat: int, lon: int, rows: int, cols: int, seed: int) -> np.ndarray:
    """Heights in metres (float32), north row first, west column first, edge to edge."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 7919])
    k = 8
    freq_lon = rng.uniform(0.3, 4.0, k)
    freq_lat = rng.uniform(0.3, 4.0, k)
    phase_lon = rng.uniform(0, 2 * np.pi, k)
    phase_lat = rng.uniform(0, 2 * np.pi, k)
    amplitude = rng.uniform(80, 600, k) / np.arange(1, k + 1)
    lons = lon + np.linspace(0.0, 1.0, cols)
    lats = (lat + 1) - np.linspace(0.0, 1.0, rows)
    a = np.sin(np.outer(lats, 2 * np.pi * freq_lat) + phase_lat) * amplitude  # rows x k
    b = np.cos(np.outer(lons, 2 * np.pi * freq_lon) + phase_lon)  # cols x k
    field = (a @ b.T).astype(np.float32)
    np.abs(field, out=field)
    field *= np.float32(1.6)
    field += np.float32(120.0 + 60.0 * np.cos(np.radians(lat)))
    return field
