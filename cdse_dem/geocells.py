"""Copernicus DEM geocells: the 1°×1° cells a tile needs, and their names and files.

A cell is named by its south-west corner (``N50_E007``). A tile needs the cells whose
area its footprint really overlaps: the catalogue's ``Intersects`` also returns cells that
only touch the tile along a degree line, and those must not be downloaded. The overlap
test is topological (the interiors meet), which is exact and needs no area threshold.
"""

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from shapely import Polygon

_RESOLUTION_CODE = {90: "30", 30: "10"}  # arc-seconds ×10 in the product names: 3" and 1"
_DTED_SUFFIX = {90: ".dt1", 30: ".dt2"}
_GRID_ID_RE = re.compile(r"([NS])(\d{2})_([EW])(\d{3})")
_NAME_RE = re.compile(r"Copernicus_DSM_(?:COG_)?(10|30)_([NS])(\d{2})_00_([EW])(\d{3})_00")


@dataclass(frozen=True, order=True)
class Geocell:
    """A 1°×1° cell named by its south-west corner; orders south to north, then west to east."""

    lat: int
    lon: int

    def __post_init__(self) -> None:
        if not (-90 <= self.lat <= 89 and -180 <= self.lon <= 179):
            raise ValueError(f"no geocell has its south-west corner at {self.lat}, {self.lon}")

    @property
    def grid_id(self) -> str:
        """``N50_E007``: the CCM ``gridId`` attribute's spelling."""
        return f"{'N' if self.lat >= 0 else 'S'}{abs(self.lat):02d}_{'E' if self.lon >= 0 else 'W'}{abs(self.lon):03d}"

    def name(self, resolution: int) -> str:
        """``Copernicus_DSM_30_N50_00_E007_00`` at 90 m, ``Copernicus_DSM_10_...`` at 30 m."""
        if resolution not in _RESOLUTION_CODE:
            raise ValueError(f"resolution must be 30 or 90, not {resolution!r}")
        ns, lat, ew, lon = self.grid_id[0], self.grid_id[1:3], self.grid_id[4], self.grid_id[5:]
        return f"Copernicus_DSM_{_RESOLUTION_CODE[resolution]}_{ns}{lat}_00_{ew}{lon}_00"

    def dem_file_name(self, resolution: int, model: str) -> str:
        """The DEM layer's file name: ``<name>_DEM.tif`` (DGED), ``.dt1``/``.dt2`` (DTED 90/30 m)."""
        if model == "DGED":
            return f"{self.name(resolution)}_DEM.tif"
        if model == "DTED":
            return f"{self.name(resolution)}_DEM{_DTED_SUFFIX[resolution]}"
        raise ValueError(f"model must be DGED or DTED, not {model!r}")

    def polygon(self) -> "Polygon":
        """The cell as a lon/lat box."""
        import shapely

        return shapely.box(self.lon, self.lat, self.lon + 1, self.lat + 1)


def parse_grid_id(text: str) -> Geocell:
    """``'N50_E007'`` → Geocell(50, 7); ``'S01_W180'`` → Geocell(-1, -180). ValueError otherwise."""
    match = _GRID_ID_RE.fullmatch(text.strip().upper())
    if match is None:
        raise ValueError(f"{text!r} is not a geocell grid id such as N50_E007")
    ns, lat, ew, lon = match.groups()
    return Geocell(int(lat) * (1 if ns == "N" else -1), int(lon) * (1 if ew == "E" else -1))


def geocell_of_name(name: str) -> tuple[Geocell, int] | None:
    """The cell and resolution (30 or 90) in a DEM name or file name; None when there is none.

    ``Copernicus_DSM_30_N50_00_E007_00_DEM.tif`` → (Geocell(50, 7), 90).
    """
    match = _NAME_RE.search(name)
    if match is None:
        return None
    code, ns, lat, ew, lon = match.groups()
    try:
        cell = Geocell(int(lat) * (1 if ns == "N" else -1), int(lon) * (1 if ew == "E" else -1))
    except ValueError:
        return None
    return cell, 90 if code == "30" else 30


def geocell_of_footprint_wkt(text: str) -> Geocell | None:
    """The cell a DEM product's ``Footprint`` covers, for products without a ``gridId``.

    Takes ``geography'SRID=4326;POLYGON ((lon lat, ...))'`` (what CDSE answers), EWKT or plain
    WKT, read by shapely. A product footprint is its cell, perhaps with a margin of a pixel or
    two: the cell is the one holding the centre of the footprint's bounds. None when the
    footprint is not about one cell's size (a margin over 0.1°) or is not a readable geometry.
    """
    geometry = _geometry_of(text)
    if geometry is None or geometry.is_empty:
        return None
    west, south, east, north = geometry.bounds
    if not (0.8 <= east - west <= 1.2 and 0.8 <= north - south <= 1.2):
        return None
    lat, lon = math.floor((south + north) / 2), math.floor((west + east) / 2)
    if abs(west - lon) > 0.1 or abs(south - lat) > 0.1 or abs(east - lon - 1) > 0.1 or abs(north - lat - 1) > 0.1:
        return None
    try:
        return Geocell(lat, lon)
    except ValueError:
        return None


def _geometry_of(text: str):
    """The shapely geometry of an OData ``geography'...'`` literal, EWKT or WKT; None if it is none."""
    import shapely
    from shapely.errors import ShapelyError

    body = text.strip()
    quote = body.find("'")
    if quote > 0 and body.endswith("'") and body[:quote].lower() in ("geography", "geometry"):
        body = body[quote + 1 : -1]
    srid, semicolon, wkt = body.partition(";")
    if semicolon and srid.strip().upper().startswith("SRID"):
        body = wkt
    try:
        return shapely.from_wkt(body)
    except (ShapelyError, TypeError):
        return None


def geocells_of_each(parts_per_item: "Iterable[Iterable[Polygon]]") -> list[list[Geocell]]:
    """For each item (a footprint's parts), the sorted cells whose area overlaps one of its parts.

    The candidates are the cells each part's bounding box reaches into (a bound on a degree
    line adds none). Most are settled exactly without a GEOS predicate: a cell that holds a
    vertex of the part strictly inside it, or whose centre lies inside the part, shares
    interior with the (valid) polygon. The rest, a few per cent, go to GEOS in two vectorised
    calls. All in numpy: the 56,686 tiles of the grid take about a second.
    """
    import numpy as np
    import shapely

    items = [list(parts) for parts in parts_per_item]
    parts = np.array([part for item in items for part in item], dtype=object)
    if not len(parts):
        return [[] for _ in items]
    owners = np.repeat(np.arange(len(items)), [len(item) for item in items])
    west, south, east, north = shapely.bounds(parts).reshape(-1, 4).T
    first_lat, first_lon = np.maximum(np.floor(south), -90), np.maximum(np.floor(west), -180)
    rows = np.maximum(np.minimum(np.ceil(north), 90) - first_lat, 0).astype(np.int64)
    columns = np.maximum(np.minimum(np.ceil(east), 180) - first_lon, 0).astype(np.int64)
    # every (part, cell) candidate: part p's rows·columns cells, south to north, west to east
    counts = rows * columns
    part = np.repeat(np.arange(len(parts)), counts)
    k = np.arange(len(part)) - np.repeat(np.cumsum(counts) - counts, counts)
    lat = (first_lat[part] + k // columns[part]).astype(np.int64)
    lon = (first_lon[part] + k % columns[part]).astype(np.int64)
    hit = np.isin(part * _CELLS + _cell_index(lat, lon), _cells_holding_a_vertex(parts))
    open_ = np.flatnonzero(~hit)
    hit[open_] = shapely.contains_xy(parts[part[open_]], lon[open_] + 0.5, lat[open_] + 0.5)
    open_ = np.flatnonzero(~hit)
    if len(open_):
        geometries = parts[part[open_]]
        boxes = shapely.box(lon[open_], lat[open_], lon[open_] + 1, lat[open_] + 1)
        # interiors meet ⇔ the overlap has positive area (a shared edge or corner only touches)
        hit[open_] = shapely.intersects(geometries, boxes) & ~shapely.touches(geometries, boxes)
    found = np.unique(owners[part[hit]] * _CELLS + _cell_index(lat[hit], lon[hit]))  # sorted, each once
    item_of, cell_of = np.divmod(found, _CELLS)
    bounds = np.searchsorted(item_of, np.arange(len(items) + 1)).tolist()
    cells = [geocell(c // 360 - 90, c % 360 - 180) for c in cell_of.tolist()]
    return [cells[bounds[i] : bounds[i + 1]] for i in range(len(items))]


@cache  # at most 64,800 cells: a plan over many tiles makes each of them once
def geocell(lat: int, lon: int) -> Geocell:
    """``Geocell(lat, lon)``, the same (immutable) object each time it is asked for."""
    return Geocell(lat, lon)


_CELLS = 180 * 360  # a cell's index: (lat + 90)·360 + lon + 180, in Geocell order


def _cell_index(lat, lon):
    return (lat + 90) * 360 + (lon + 180)


def _cells_holding_a_vertex(parts: "np.ndarray", chunk: int = 4096) -> "np.ndarray":
    """Sorted ``part·_CELLS + cell index`` of the cells with a vertex of the part strictly inside.

    A valid polygon has interior right next to every point of its boundary, so such a cell
    overlaps the part's area.
    """
    import numpy as np
    import shapely

    found = [np.empty(0, dtype=np.int64)]
    for start in range(0, len(parts), chunk):
        xy, index = shapely.get_coordinates(parts[start : start + chunk], return_index=True)
        lon, lat = xy[:, 0], xy[:, 1]
        west, south = np.floor(lon), np.floor(lat)
        key = south * 360.0  # float64 is exact here and saves integer conversions of every vertex
        key += west
        key += index * float(_CELLS)
        # on a degree line, or off the globe (no cell): left to the other tests
        key[(west == lon) | (south == lat) | (np.abs(west + 0.5) > 180) | (np.abs(south + 0.5) > 90)] = np.nan
        new = np.ones(len(key), dtype=bool)  # consecutive vertices mostly share a cell
        np.not_equal(key[1:], key[:-1], out=new[1:])
        key = key[new]
        found.append((key[~np.isnan(key)] + (start * _CELLS + _cell_index(0, 0))).astype(np.int64))
    return np.unique(np.concatenate(found))


