"""Where a Sentinel-2 tile lies on the ground, in lon/lat: from the official KML, or computed.

A tile is a 109.8 km square in its UTM zone. Its lon/lat outline is curved; the KML draws
straight lon/lat lines between the four corners, which strays up to ~2 km from the true
edge near the poles. The computed footprint follows the true edge: the square is densified
in UTM (a vertex every ~1 km, chord error under 0.2 m) before projecting, so the geocells
derived from it are those the tile really covers. Across ±180° either footprint is two
polygons, each within [-180, 180].

The grid arithmetic (``utm_tile``) is pure; only the projection needs pyproj. The
arithmetic is in ``../shared/docs/s2-grid.md``: it gives every KML upper-left corner exactly.
"""

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cdse_dem.errors import InputError
from cdse_dem.tiles import BANDS, check_tile, normalize_tile_id

if TYPE_CHECKING:
    import numpy as np
    from shapely import Polygon

log = logging.getLogger(__name__)

TILE_SIZE = 109_800  # metres, every tile
GRID_STEP = 60  # metres: upper-left corners lie on this grid
SEGMENTS_PER_EDGE = 110  # ~1 km apart: the lon/lat chords stay within 0.2 m of the true edge
_CHUNK = 2048  # tiles projected at once: bounds memory (~15 MB) for any number of tiles

_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_K0 = 0.9996
_WGS84_A = 6_378_137.0
_WGS84_F = 1 / 298.257223563


class FootprintSource(StrEnum):
    """Where a footprint comes from; the value is what the plan, the summary and its JSON show."""

    KML = "kml"  # the official tiling KML's polygons (straight lon/lat edges)
    COMPUTED = "computed"  # the grid arithmetic (the true, curved edges)


@dataclass(frozen=True)
class Footprint:
    """A tile's lon/lat outline: one polygon, or two when it straddles ±180°."""

    tile: str
    parts: "tuple[Polygon, ...]"
    source: FootprintSource


@dataclass(frozen=True)
class UtmTile:
    """The tile as the grid defines it: a square in one UTM zone."""

    epsg: int
    x_min: int  # west edge, metres
    y_max: int  # north edge, metres (with the 10,000 km false northing south of the equator)

    def corners(self) -> tuple[tuple[int, int], ...]:
        """Upper-left, upper-right, lower-right, lower-left: the KML's order."""
        x0, y1 = self.x_min, self.y_max
        x1, y0 = x0 + TILE_SIZE, y1 - TILE_SIZE
        return ((x0, y1), (x1, y1), (x1, y0), (x0, y0))


@lru_cache(maxsize=32)  # asked for the centres of the 20 latitude bands only
def _meridian_arc(lat_deg: float) -> float:
    """Distance along the WGS84 meridian from the equator (Helmert's series; mm accuracy)."""
    n = _WGS84_F / (2 - _WGS84_F)
    a_hat = _WGS84_A / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    phi = math.radians(lat_deg)
    return a_hat * (
        phi
        + (-3 / 2 * n + 9 / 16 * n**3) * math.sin(2 * phi)
        + (15 / 16 * n**2 - 15 / 32 * n**4) * math.sin(4 * phi)
        - 35 / 48 * n**3 * math.sin(6 * phi)
        + 315 / 512 * n**4 * math.sin(8 * phi)
    )


def utm_tile(tile_id: str) -> UtmTile:
    """The tile's UTM square from its id alone (s2-grid.md); ValueError for a malformed id.

    This is arithmetic: it also answers for ids that are not tiles (check_tile first).
    """
    tile = normalize_tile_id(tile_id)
    if tile is None:
        raise ValueError(f"{tile_id!r} is not a Sentinel-2 tile id")
    zone, band, column, row = int(tile[:2]), tile[2], tile[3], tile[4]
    south = band < "N"
    false_northing = 10_000_000 if south else 0
    column_set = _COLUMN_SETS[(zone - 1) % 3]
    if column not in column_set:
        raise ValueError(f"{tile_id!r}: column {column} is not used in zone {zone:02d}")
    easting = (column_set.index(column) + 1) * 100_000
    shift = 5 if zone % 2 == 0 else 0
    northing = ((_ROW_LETTERS.index(row) - shift) % 20) * 100_000
    band_centre = 78.0 if band == "X" else -80 + 8 * BANDS.index(band) + 4
    centre_northing = _K0 * _meridian_arc(band_centre) + false_northing
    northing += 2_000_000 * round((centre_northing - 50_000 - northing) / 2_000_000)
    x_min = GRID_STEP * math.floor(easting / GRID_STEP)
    y_max = GRID_STEP * math.ceil((northing + 100_000 - false_northing) / GRID_STEP) + false_northing
    return UtmTile(epsg=(32700 if south else 32600) + zone, x_min=x_min, y_max=y_max)


@lru_cache(maxsize=128)
def _to_lonlat(epsg: int):
    """One Transformer per UTM zone: creating one costs about a millisecond, using it nothing."""
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True)


@lru_cache(maxsize=4)
def _unit_ring(segments: int) -> "np.ndarray":
    """The square's closed outline as offsets from its upper-left corner, in tile sizes.

    Counter-clockwise (UL, LL, LR, UR, back to UL), ``4·segments + 1`` points: UTM to
    lon/lat keeps the orientation, so the lon/lat ring is counter-clockwise too.
    """
    import numpy as np

    t = np.arange(segments) / segments
    zero, one = np.zeros(segments), np.ones(segments)
    dx = np.concatenate([zero, t, one, 1 - t, [0.0]])
    dy = np.concatenate([-t, -one, t - 1, zero, [0.0]])
    ring = np.column_stack([dx, dy])
    ring.flags.writeable = False
    return ring


def computed_footprints(tile_ids: Sequence[str], segments: int = SEGMENTS_PER_EDGE) -> list[Footprint]:
    """Footprints for many tiles at once: each distinct square projected once, polygons in bulk.

    UTM zones differ only by their central meridian, and the south by its false northing: a
    square at the same (easting, northing from the equator) has the same outline in every zone,
    shifted in longitude. The 56,686 tiles are 1,079 such squares, so each is projected once
    in a zone centred on 0° and shifted to its tiles' zones (52 times less projection work for
    the whole grid). Polygons are made in chunks of at most ``_CHUNK`` tiles, so memory stays
    small whatever the number of tiles. InputError for an id that is not a Sentinel-2 tile.
    """
    import numpy as np

    tiles = [check_tile(t) for t in tile_ids]
    unique = sorted(set(tiles))
    utms = [utm_tile(t) for t in unique]
    squares = sorted({_relative_square(u) for u in utms})
    outlines = _square_outlines(squares, segments)
    square_of = {square: row for row, square in enumerate(squares)}
    rows = np.array([square_of[_relative_square(u)] for u in utms], dtype=np.intp)
    meridians = np.array([_central_meridian(u.epsg) for u in utms], dtype=np.float64)
    found: dict[str, Footprint] = {}
    for start in range(0, len(unique), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        found.update((f.tile, f) for f in _footprints(unique[chunk], outlines[rows[chunk]], meridians[chunk]))
    return [found[t] for t in tiles]


def _relative_square(utm: UtmTile) -> tuple[int, int]:
    """The square's west edge and north edge, the latter from the equator (negative south)."""
    return utm.x_min, utm.y_max - (10_000_000 if utm.epsg > 32700 else 0)


def _central_meridian(epsg: int) -> float:
    return 6.0 * (epsg % 100) - 183.0


@lru_cache(maxsize=1)
def _relative_to_lonlat():
    """UTM without its zone: the transverse Mercator of every UTM zone, centred on 0° (same
    ellipsoid, scale, false easting and algorithm as ``+proj=utm``); longitudes relative to
    the zone's central meridian."""
    from pyproj import Transformer

    return Transformer.from_pipeline(
        "+proj=pipeline +step +inv +proj=tmerc +lat_0=0 +lon_0=0 +k=0.9996 +x_0=500000 +y_0=0"
        " +ellps=WGS84 +step +proj=unitconvert +xy_in=rad +xy_out=deg"
    )


def _square_outlines(squares: "list[tuple[int, int]]", segments: int) -> "np.ndarray":
    """The densified outline of each relative square in lon/lat, shape (squares, 4·segments + 1, 2)."""
    import numpy as np

    unit = _unit_ring(segments)
    corners = np.array(squares, dtype=np.float64).reshape(-1, 2)
    xs = corners[:, :1] + TILE_SIZE * unit[:, 0]
    ys = corners[:, 1:] + TILE_SIZE * unit[:, 1]
    _relative_to_lonlat().transform(xs, ys, inplace=True)  # contiguous arrays: no copies
    return np.stack([xs, ys], axis=-1)


def _footprints(tiles: list[str], rings: "np.ndarray", meridians: "np.ndarray") -> list[Footprint]:
    """The tiles' footprints from their squares' relative outlines and their zones' meridians."""
    import shapely

    lon = rings[:, :, 0]
    lon += meridians[:, None]
    lon[lon > 180] -= 360  # back into [-180, 180], as a projection to lon/lat gives them
    lon[lon < -180] += 360
    crosses = (lon.max(axis=1) - lon.min(axis=1)) > 180
    polygons = shapely.polygons(rings)
    return [
        Footprint(tile=tile, parts=_split_at_antimeridian(ring) if across else (polygon,),
                  source=FootprintSource.COMPUTED)
        for tile, polygon, ring, across in zip(tiles, polygons, rings, crosses, strict=True)
    ]


def corners_lonlat(tile_ids: Sequence[str]) -> "np.ndarray":
    """Each tile's four UTM corners (UL, UR, LR, LL) in lon/lat, shape (tiles, 4, 2).

    Only the corners, as Sen2Cor projects them: longitudes in [-180, 180], so a tile across
    ±180° has corners of both signs. One projection call per UTM zone. InputError for an id
    that is not a Sentinel-2 tile.
    """
    import numpy as np

    utms = [utm_tile(check_tile(t)) for t in tile_ids]
    result = np.empty((len(utms), 4, 2), dtype=np.float64)
    rows_of: dict[int, list[int]] = {}
    for row, utm in enumerate(utms):
        rows_of.setdefault(utm.epsg, []).append(row)
    for epsg, rows in rows_of.items():
        xy = np.array([utms[r].corners() for r in rows], dtype=np.float64)
        lon, lat = _to_lonlat(epsg).transform(xy[:, :, 0], xy[:, :, 1])
        result[rows, :, 0], result[rows, :, 1] = lon, lat
    return result


def _split_at_antimeridian(ring: "np.ndarray") -> "tuple[Polygon, ...]":
    """Cut a ring that jumps across ±180° into parts within [-180, 180].

    Longitudes are made continuous (negative ones shifted by +360), the polygon is cut by
    the 180° meridian, and the piece beyond it shifted back by -360.
    """
    import shapely

    continuous = ring.copy()
    continuous[continuous[:, 0] < 0, 0] += 360
    whole = shapely.Polygon(continuous)
    west_of_line = shapely.intersection(whole, shapely.box(-180, -90, 180, 90))
    east_of_line = shapely.transform(
        shapely.intersection(whole, shapely.box(180, -90, 540, 90)), lambda xy: xy - [360, 0]
    )
    parts = _polygons_of(west_of_line) + _polygons_of(east_of_line)
    return tuple(shapely.orient_polygons(p) for p in parts)


def _polygons_of(geometry) -> "list[Polygon]":
    """The positive-area polygons of an overlay result (which may mix in lines or points)."""
    import shapely

    if geometry is None or geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry] if geometry.area > 0 else []
    if geometry.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [p for g in shapely.get_parts(geometry) for p in _polygons_of(g)]
    return []


def kml_footprint(tile_id: str, rings: "Iterable[np.ndarray]") -> Footprint:
    """A footprint made of the KML's own polygons (straight lon/lat edges), as ESA drew them."""
    import shapely

    parts = tuple(shapely.orient_polygons(shapely.Polygon(ring)) for ring in rings)
    return Footprint(tile=tile_id, parts=parts, source=FootprintSource.KML)


class FootprintFinder:
    """Footprints from the KML index when the KML is there, computed otherwise.

    The index is opened on first use (built once if needed). A KML that cannot be read is
    reported once and the computed footprints, which match it within a metre at its
    corners, serve instead. Safe to share between threads.
    """

    def __init__(self, kml_path: Path | None) -> None:
        self.kml_path = kml_path
        self._index = None
        self._opened = False
        self._lock = threading.Lock()

    def _kml_index(self):
        with self._lock:
            if not self._opened:
                self._opened = True
                self._index = self._open()
            return self._index

    def _open(self):
        from cdse_dem.kml_index import open_index

        if self.kml_path is None or not self.kml_path.is_file():
            where = f" at {self.kml_path}" if self.kml_path is not None else ""
            log.info("Tiling KML not found%s: tile footprints are computed from the grid", where)
            return None
        try:
            return open_index(self.kml_path)
        except InputError as exc:
            log.warning("%s; tile footprints are computed from the grid instead", exc)
            return None

    def footprint(self, tile_id: str) -> Footprint:
        """The tile's footprint; InputError when ``tile_id`` is not a Sentinel-2 tile."""
        return self.footprints([tile_id])[0]

    def footprints(self, tile_ids: Sequence[str]) -> list[Footprint]:
        """Footprints in the order asked; the tiles missing from the KML computed in one batch."""
        tiles = [check_tile(t) for t in tile_ids]
        index = self._kml_index()
        found: dict[str, Footprint] = {}
        if index is not None:
            for tile in tiles:
                rings = index.rings(tile)
                if rings is not None:
                    found[tile] = kml_footprint(tile, rings)
        missing = sorted({t for t in tiles if t not in found})
        if missing and index is not None:
            log.info("Tiles not in the KML, computed instead: %s", ", ".join(missing))
        for footprint in computed_footprints(missing) if missing else []:
            found[footprint.tile] = footprint
        for tile in tiles:
            log.debug("Footprint of %s: %s", tile, found[tile].source)
        return [found[t] for t in tiles]
