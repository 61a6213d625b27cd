"""Where a tile lies on the ground: footprints (KML or computed), the KML index, geocells.

Where a Sentinel-2 tile lies on the ground, in lon/lat: from the official KML, or computed.

A tile is a 109.8 km square in its UTM zone. Its lon/lat outline is curved; the KML draws
straight lon/lat lines between the four corners, which strays up to ~2 km from the true
edge near the poles. The computed footprint follows the true edge: the square is densified
in UTM (a vertex every ~1 km, chord error under 0.2 m) before projecting, so the geocells
derived from it are those the tile really covers. Across ±180° either footprint is two
polygons, each within [-180, 180].

The grid arithmetic (``utm_tile``) is pure; only the projection needs pyproj. The
arithmetic is in ``../shared/docs/s2-grid.md``: it gives every KML upper-left corner exactly.

Copernicus DEM geocells: the 1°×1° cells a tile needs, and their names and files.

A cell is named by its south-west corner (``N50_E007``). A tile needs the cells whose
area its footprint really overlaps: the catalogue's ``Intersects`` also returns cells that
only touch the tile along a degree line, and those must not be downloaded. The overlap
test is topological (the interiors meet), which is exact and needs no area threshold.

A compact index of the official tiling KML, so the 109 MB file is parsed once, not per tile.

The reference tool re-parses the whole KML for every tile. Here the first use streams it
once (``lxml.etree.iterparse``, each Placemark cleared as soon as it is read, so memory stays
flat) into four arrays: sorted tile names, per-tile part offsets, per-part vertex offsets and
one float64 vertex array. They are stored beside the KML as ``<kml>.index.npz``, written to a
temporary file and renamed into place so a crash never leaves half an index. Later runs load
only that file (milliseconds) and build a tile's polygons when asked.

The index records the KML's size, mtime and a hash of its head and tail; when any differs
the KML has changed and the index is rebuilt. An index that cannot be read or does not hold
together is never trusted: a warning, then a rebuild.
"""

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache
from pathlib import Path
from typing import IO

import numpy as np
import shapely
from lxml import etree
from pyproj import Transformer
from shapely import Polygon
from shapely.errors import ShapelyError

from cdse_dem.errors import InputError
from cdse_dem.fsutil import DiskFull, atomic_writer
from cdse_dem.tiles import BANDS, all_tile_ids, check_tile, normalize_tile_id

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

    return Transformer.from_crs(epsg, 4326, always_xy=True)


@lru_cache(maxsize=4)
def _unit_ring(segments: int) -> "np.ndarray":
    """The square's closed outline as offsets from its upper-left corner, in tile sizes.

    Counter-clockwise (UL, LL, LR, UR, back to UL), ``4·segments + 1`` points: UTM to
    lon/lat keeps the orientation, so the lon/lat ring is counter-clockwise too.
    """

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

    tiles = [check_tile(t) for t in tile_ids]
    unique = sorted(set(tiles))
    outlines, rows, meridians = _relative_outlines(unique, segments)
    found: dict[str, Footprint] = {}
    for start in range(0, len(unique), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        found.update((f.tile, f) for f in _footprints(unique[chunk], outlines[rows[chunk]], meridians[chunk]))
    return [found[t] for t in tiles]


def _relative_outlines(tiles: Sequence[str], segments: int):
    """The outline of each distinct square once, and for each tile its square's row and its zone's meridian."""

    utms = [utm_tile(t) for t in tiles]
    squares = sorted({_relative_square(u) for u in utms})
    outlines = _square_outlines(squares, segments)
    square_of = {square: row for row, square in enumerate(squares)}
    rows = np.array([square_of[_relative_square(u)] for u in utms], dtype=np.intp)
    meridians = np.array([_central_meridian(u.epsg) for u in utms], dtype=np.float64)
    return outlines, rows, meridians


def grid_bounds() -> "tuple[list[str], np.ndarray]":
    """Every tile of the grid, and its (west, south, east, north) in degrees, without making a polygon.

    The bounds of the computed (true) footprint, with longitudes continuous across ±180°: a tile
    that straddles it has ``west < -180`` or ``east > 180``. They hold the KML polygon too: its
    vertices are the tile's corners (within 0.2 m) and its edges straight lon/lat lines between
    them, so it never reaches beyond the corners' box. A few tenths of a second (the 1,079
    distinct squares are projected once): what finding the tiles of an area starts from.
    """

    tiles = list(all_tile_ids())
    outlines, rows, meridians = _relative_outlines(tiles, SEGMENTS_PER_EDGE)
    lon, lat = outlines[..., 0], outlines[..., 1]
    square_bounds = np.column_stack([lon.min(axis=1), lat.min(axis=1), lon.max(axis=1), lat.max(axis=1)])
    bounds = square_bounds[rows]
    bounds[:, 0] += meridians
    bounds[:, 2] += meridians
    return tiles, bounds


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

    return Transformer.from_pipeline(
        "+proj=pipeline +step +inv +proj=tmerc +lat_0=0 +lon_0=0 +k=0.9996 +x_0=500000 +y_0=0"
        " +ellps=WGS84 +step +proj=unitconvert +xy_in=rad +xy_out=deg"
    )


def _square_outlines(squares: "list[tuple[int, int]]", segments: int) -> "np.ndarray":
    """The densified outline of each relative square in lon/lat, shape (squares, 4·segments + 1, 2)."""

    unit = _unit_ring(segments)
    corners = np.array(squares, dtype=np.float64).reshape(-1, 2)
    xs = corners[:, :1] + TILE_SIZE * unit[:, 0]
    ys = corners[:, 1:] + TILE_SIZE * unit[:, 1]
    _relative_to_lonlat().transform(xs, ys, inplace=True)  # contiguous arrays: no copies
    return np.stack([xs, ys], axis=-1)


def _footprints(tiles: list[str], rings: "np.ndarray", meridians: "np.ndarray") -> list[Footprint]:
    """The tiles' footprints from their squares' relative outlines and their zones' meridians."""

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

    if geometry is None or geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry] if geometry.area > 0 else []
    if geometry.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [p for g in shapely.get_parts(geometry) for p in _polygons_of(g)]
    return []


def kml_footprint(tile_id: str, rings: "Iterable[np.ndarray]") -> Footprint:
    """A footprint made of the KML's own polygons (straight lon/lat edges), as ESA drew them."""

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
    try:
        geometry = read_wkt(text)
    except ValueError:
        return None
    if geometry.is_empty:
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


def read_wkt(text: str):
    """The lon/lat geometry of WKT, EWKT (``SRID=4326;POLYGON ...``) or an OData ``geography'...'``
    literal; ValueError with GEOS's reason when it is none, or when it names another SRID than 4326."""

    body = text.strip()
    quote = body.find("'")
    if quote > 0 and body.endswith("'") and body[:quote].lower() in ("geography", "geometry"):
        body = body[quote + 1 : -1]
    srid, semicolon, wkt = body.partition(";")
    if semicolon and srid.strip().upper().startswith("SRID"):
        if srid.split("=", 1)[-1].strip() != "4326":
            raise ValueError(f"{srid.strip()}: only lon/lat (SRID=4326) is understood")
        body = wkt
    try:
        return shapely.from_wkt(body)
    except (ShapelyError, TypeError) as exc:
        raise ValueError(re.sub(r"^\w+Exception: ", "", str(exc))) from None


def geocells_of_each(parts_per_item: "Iterable[Iterable[Polygon]]") -> list[list[Geocell]]:
    """For each item (a footprint's parts), the sorted cells whose area overlaps one of its parts.

    The candidates are the cells each part's bounding box reaches into (a bound on a degree
    line adds none). Most are settled exactly without a GEOS predicate: a cell that holds a
    vertex of the part strictly inside it, or whose centre lies inside the part, shares
    interior with the (valid) polygon. The rest, a few per cent, go to GEOS in two vectorised
    calls. All in numpy: the 56,686 tiles of the grid take about a second.
    """

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


INDEX_SUFFIX = ".index.npz"
FORMAT_VERSION = 1
_STAMP_BYTES = 1 << 16  # hashed at each end of the KML


def index_path(kml_path: Path) -> Path:
    return kml_path.with_name(kml_path.name + INDEX_SUFFIX)


def kml_stamp(kml_path: Path) -> str:
    """What identifies this version of the KML: size, mtime and a hash of its two ends."""
    st = kml_path.stat()
    digest = hashlib.sha256()
    with kml_path.open("rb") as f:
        digest.update(f.read(_STAMP_BYTES))
        if st.st_size > _STAMP_BYTES:
            f.seek(max(_STAMP_BYTES, st.st_size - _STAMP_BYTES))
            digest.update(f.read())
    return json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": digest.hexdigest()})


def iter_placemarks(source: "str | Path | IO[bytes]", rings: bool = True) -> Iterator[tuple[str, list]]:
    """Stream ``(name, outer rings)`` of every Placemark; rings are (n, 2) lon/lat float64 arrays.

    One pass, constant memory: each Placemark is dropped, with the siblings before it, once
    read. Only the outer ring of each Polygon is kept (Sentinel-2 tiles have no holes); the
    Point is ignored. With ``rings=False`` only names are yielded (an empty list each).
    """

    parser_source = str(source) if isinstance(source, Path) else source
    context = etree.iterparse(
        parser_source, events=("end",), tag="{*}Placemark", resolve_entities=False, no_network=True
    )
    for _, element in context:
        name = (element.findtext("{*}name") or "").strip()
        found = []
        if rings:
            for coordinates in element.iterfind(".//{*}Polygon/{*}outerBoundaryIs/{*}LinearRing/{*}coordinates"):
                found.append(_ring(coordinates.text or "", name))
        element.clear()
        while element.getprevious() is not None:
            del element.getparent()[0]
        yield name, found


def _ring(text: str, name: str) -> "np.ndarray":
    """KML tuples are ``lon,lat[,alt]`` separated by blanks; keep lon, lat."""

    tuples = text.split()
    values = np.array(",".join(tuples).split(","), dtype=np.float64) if tuples else np.empty(0)
    width = values.size // len(tuples) if tuples else 0
    if width not in (2, 3) or width * len(tuples) != values.size or len(tuples) < 4:
        raise ValueError(f"placemark {name}: unreadable polygon coordinates")
    return values.reshape(-1, width)[:, :2].copy()


@dataclass(frozen=True)
class KmlIndex:
    """Every tile's polygons as flat arrays; ``rings(tile)`` slices out one tile on demand."""

    names: "np.ndarray"  # sorted tile ids, dtype S5
    part_start: "np.ndarray"  # tile i owns parts part_start[i]:part_start[i+1]
    ring_start: "np.ndarray"  # part j owns coords ring_start[j]:ring_start[j+1]
    coords: "np.ndarray"  # (n, 2) lon, lat

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, tile_id: str) -> bool:
        return self._position(tile_id) is not None

    def tile_ids(self) -> list[str]:
        return [n.decode() for n in self.names]

    def _position(self, tile_id: str) -> int | None:

        key = tile_id.encode()
        i = int(np.searchsorted(self.names, key))
        return i if i < len(self.names) and self.names[i] == key else None

    def rings(self, tile_id: str) -> "list[np.ndarray] | None":
        """The tile's outer rings (one, or two across ±180°) as lon/lat arrays; None if absent."""
        i = self._position(tile_id)
        if i is None:
            return None
        parts = range(int(self.part_start[i]), int(self.part_start[i + 1]))
        return [self.coords[self.ring_start[j] : self.ring_start[j + 1]] for j in parts]

    def check(self) -> None:
        """ValueError unless the arrays hold together (a damaged file must not be trusted)."""

        n, p = len(self.names), len(self.ring_start) - 1
        ok = (
            self.names.dtype == np.dtype("S5")
            and self.part_start.shape == (n + 1,)
            and self.coords.ndim == 2
            and self.coords.shape[1] == 2
            and p >= 0
            and int(self.part_start[0]) == 0
            and int(self.part_start[-1]) == p
            and int(self.ring_start[0]) == 0
            and int(self.ring_start[-1]) == len(self.coords)
            and bool(np.all(np.diff(self.part_start) >= 1))
            and bool(np.all(np.diff(self.ring_start) >= 4))
            and bool(np.all(self.names[1:] > self.names[:-1]))
            and bool(np.isfinite(self.coords).all())
        )
        if not ok:
            raise ValueError("index arrays are inconsistent")


def build_index(kml_path: Path) -> KmlIndex:
    """One streaming pass over the KML; InputError when it is not a readable tiling KML."""

    tiles: dict[str, list] = {}
    try:
        for name, rings in iter_placemarks(kml_path):
            tile = normalize_tile_id(name)
            if tile is None or not rings:
                log.debug("KML placemark %r skipped: not a tile polygon", name)
                continue
            tiles[tile] = rings
    except (OSError, etree.XMLSyntaxError, ValueError) as exc:
        raise InputError(f"{kml_path}: not a readable tiling KML ({exc})") from exc
    if not tiles:
        raise InputError(f"{kml_path}: no tile polygons in this KML")
    names = sorted(tiles)
    part_counts = [len(tiles[t]) for t in names]
    all_rings = [ring for t in names for ring in tiles[t]]
    part_start = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(part_counts, out=part_start[1:])
    ring_start = np.zeros(len(all_rings) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in all_rings], out=ring_start[1:])
    index = KmlIndex(
        names=np.array([t.encode() for t in names], dtype="S5"),
        part_start=part_start,
        ring_start=ring_start,
        coords=np.concatenate(all_rings),
    )
    index.check()
    return index


def save_index(index: KmlIndex, path: Path, stamp: str) -> None:
    """Write atomically, readable by all (a harmless public index); OSError (or DiskFull) on failure."""

    with atomic_writer(path, mode=0o644) as f:
        np.savez(
            f, version=np.array(FORMAT_VERSION), stamp=np.array(stamp), names=index.names,
            part_start=index.part_start, ring_start=index.ring_start, coords=index.coords,
        )


def load_index(path: Path, stamp: str) -> KmlIndex | None:
    """The stored index if it is readable and made from this KML version; else None (logged)."""

    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != FORMAT_VERSION or str(data["stamp"]) != stamp:
                log.info("The tiling KML has changed since its index was made: rebuilding %s", path)
                return None
            index = KmlIndex(
                names=data["names"], part_start=data["part_start"], ring_start=data["ring_start"],
                coords=data["coords"],
            )
        index.check()
        return index
    except Exception as exc:  # any damage: zip, header, dtype, shape; never trusted
        log.warning("The KML index %s is unreadable (%s): rebuilding it", path, exc)
        return None


def open_index(kml_path: Path) -> KmlIndex:
    """Load the KML's index, building (and storing) it first when missing, stale or damaged.

    A folder where the index cannot be written costs a rebuild per run, not a failure.
    """

    try:
        stamp = kml_stamp(kml_path)
    except OSError as exc:
        raise InputError(f"{kml_path}: cannot read the tiling KML ({exc.strerror or exc})") from exc
    path = index_path(kml_path)
    index = load_index(path, stamp)
    if index is not None:
        log.debug("KML index loaded from %s (%d tiles)", path, len(index))
        return index
    started = time.monotonic()
    log.info("Indexing the tiling KML %s (once)", kml_path)
    index = build_index(kml_path)
    try:
        save_index(index, path, stamp)
    except (OSError, DiskFull) as exc:
        log.warning("Could not store the KML index at %s (%s): it will be rebuilt next run", path, exc)
    log.info("KML index of %d tiles made in %.1f s", len(index), time.monotonic() - started)
    return index
