"""Terrain-like elevations, deterministic for a seed, continuous across neighbouring cells and ±180°.

The values are a function of absolute longitude and latitude (not of the cell), so adjacent
cells agree on their shared edge as real DEM tiles do. The field is a sum of a few separable
waves, folded into ridges: a matrix product and one elementwise pass, so a 3601 x 3601 cell
takes a fraction of a second.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_BANDS_30 = ((50, 3601), (60, 2401), (70, 1801), (80, 1201), (85, 721), (90, 361))
_BANDS_90 = ((50, 1201), (60, 801), (70, 601), (80, 401), (85, 241), (90, 121))
COARSE_STEP = 60
"""Rows of distinct values per degree in the "small" size's low-detail field (one minute of arc),
so that whole rows repeat and share one compressed strip."""
COARSE_LON_STEP = 10
"""Distinct values along a row per degree: few long runs, which DEFLATE packs near its limit."""


def raster_shape(lat: int, resolution: int, size: str = "realistic") -> tuple[int, int]:
    """(rows, cols) of a cell's DEM: columns shrink towards the poles, as on CDSE.

    Both sizes have the real dimensions (a client checks them); "small" differs only in the
    detail of the field and in compression (see ``elevation``). EEA-10 (resolution 10) is a
    stand-in at the GLO-30 dimensions.
    """
    band_lat = max(abs(lat), abs(lat + 1))  # the band is decided by the edge nearest the pole
    bands = _BANDS_90 if resolution == 90 else _BANDS_30
    rows = bands[0][1]
    cols = next(c for limit, c in bands if band_lat <= limit)
    return rows, cols


class BlockRaster(NamedTuple):
    """A raster held constant over blocks: ``grid[row_of[i], col_of[j]]`` is sample (i, j).

    The "small" size's layers, kept in this form so that a 3601 x 3601 cell costs its 61 x 61
    distinct values to compute and its distinct rows to compress; ``expand()`` gives the array.
    """

    grid: np.ndarray
    row_of: np.ndarray
    col_of: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.row_of), len(self.col_of)

    @property
    def dtype(self) -> np.dtype:
        return self.grid.dtype

    def like(self, grid: np.ndarray) -> BlockRaster:
        """Another layer on the same blocks."""
        return BlockRaster(grid, self.row_of, self.col_of)

    def row(self, i: int) -> np.ndarray:
        return self.grid[self.row_of[i], self.col_of]

    def expand(self) -> np.ndarray:
        return self.grid[np.ix_(self.row_of, self.col_of)]


def elevation(lat: int, lon: int, rows: int, cols: int, seed: int) -> np.ndarray:
    """Heights in metres (float32), north row first, west column first, edge to edge."""
    lons = lon + np.linspace(0.0, 1.0, cols)
    lats = (lat + 1) - np.linspace(0.0, 1.0, rows)
    return _field(lat, lats, lons, seed)


def coarse_elevation(lat: int, lon: int, rows: int, cols: int, seed: int) -> BlockRaster:
    """The same field sampled on a grid of ``COARSE_STEP`` x ``COARSE_LON_STEP`` per degree and held constant between,
    for the "small" size; still a function of absolute coordinates, so neighbours agree on
    their shared edge (edges are whole degrees, on the grid)."""
    lons = lon + np.linspace(0.0, 1.0, cols)
    lats = (lat + 1) - np.linspace(0.0, 1.0, rows)
    lons, col_of = np.unique(np.round(lons * COARSE_LON_STEP) / COARSE_LON_STEP, return_inverse=True)
    lats, row_of = np.unique(np.round(lats * COARSE_STEP) / COARSE_STEP, return_inverse=True)
    return BlockRaster(_field(lat, lats, lons, seed), row_of.reshape(-1), col_of.reshape(-1))


def _field(lat: int, lats: np.ndarray, lons: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 7919])
    k = 8
    # whole cycles per 360 degrees of longitude: the field is continuous across the antimeridian, as land is
    freq_lon = np.round(rng.uniform(0.3, 4.0, k) * 360) / 360
    freq_lat = rng.uniform(0.3, 4.0, k)
    phase_lon = rng.uniform(0, 2 * np.pi, k)
    phase_lat = rng.uniform(0, 2 * np.pi, k)
    amplitude = rng.uniform(80, 600, k) / np.arange(1, k + 1)
    a = np.sin(np.outer(lats, 2 * np.pi * freq_lat) + phase_lat) * amplitude  # rows x k
    b = np.cos(np.outer(lons, 2 * np.pi * freq_lon) + phase_lon)  # cols x k
    field = (a @ b.T).astype(np.float32)
    np.abs(field, out=field)
    field *= np.float32(1.6)
    field += np.float32(120.0 + 60.0 * np.cos(np.radians(lat)))
    return field
