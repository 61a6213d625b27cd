"""The tiles of what the user has: an area (GeoJSON, WKT, a W,S,E,N box) or a point.

Users rarely hold a list of tile ids: a study site is a polygon in a GeoJSON file or a box, a
field campaign a few points. The tiles of an area are every Sentinel-2 tile whose footprint's
area overlaps it (their interiors meet: a tile that only touches it along an edge is not one);
the tiles of a point, every tile that covers it (usually 1 to 4: tiles overlap). Footprints
are the run's own (grid.FootprintFinder: the tiling KML's when it is there, else computed),
so an area is decided from the same outlines as the geocells of its tiles.

No footprint is made for a tile that cannot meet the area: every tile's bounds
(grid.grid_bounds, the whole grid in a fraction of a second) go into an STRtree once per
process, the tree names the tiles whose box meets the area, and only those get a footprint
and the exact test.

Areas are lon/lat degrees, as GeoJSON's are (RFC 7946): longitudes within [-180, 180], an area
across ±180° cut there into parts (RFC 7946 §3.1.9), or a box written with W > E. Nothing is
repaired silently: an invalid geometry (a self-intersecting ring) is refused with GEOS's reason
and where it is, since a "fixed" polygon may no longer be the area the user meant.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely
from shapely.errors import ShapelyError
from shapely.geometry import shape

from cdse_dem.errors import InputError, UsageError
from cdse_dem.fsutil import parse_json, read_input, text_of
from cdse_dem.grid import FootprintFinder, grid_bounds, read_wkt
from cdse_dem.settings import expand_user, kml_path_of
from cdse_dem.tiles import COMMAND_LINE, Entry, shown

log = logging.getLogger(__name__)

MAX_AREA_FILE = 32 * 2**20  # bytes: a country's outline at full detail is a few MB; tiles are 110 km wide
GRID_REACH = "the grid reaches from about 83.8°S to 84.6°N"
_BOUNDS_MARGIN = 1e-4  # degrees (~10 m) around each tile's box: the KML's vertices are within 0.2 m of it
_VALID = "Valid Geometry"

_NUMBER = r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*"
_BOX_RE = re.compile(rf"{_NUMBER}(?:,{_NUMBER}){{3}}")
_POINT_RE = re.compile(rf"{_NUMBER},{_NUMBER}")
_NUMERIC_RE = re.compile(r"[\d\s.,+-]*\d[\d\s.,+-]*")  # what a mistyped box or point looks like
_WKT_RE = re.compile(r"(?:SRID\s*=\s*\d+\s*;)?\s*(?:(?:MULTI)?(?:POINT|LINESTRING|POLYGON)|GEOMETRYCOLLECTION)"
                     r"\s*(?:ZM|Z|M)?\s*(?:\(|EMPTY)", re.I)
_REASON_RE = re.compile(r"(?P<what>.*)\[(?P<x>\S+) (?P<y>\S+)\]")
_GEOJSON_GEOMETRIES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                       "GeometryCollection")
_LONLAT_CRS = ("CRS84", "4326")  # the names a pre-RFC 7946 "crs" member may give lon/lat by


@dataclass(frozen=True)
class Area:
    """An area as given: its label (how the user wrote it) and its parts, checked lon/lat geometries."""

    label: str  # a file name, the box, the WKT cut short: what the log and the summary's entry name it by
    parts: tuple  # shapely geometries, none empty, each valid, within [-180, 180] × [-90, 90]

    @property
    def entry(self) -> str:
        return f"area {self.label}"


@dataclass(frozen=True)
class Point:
    """A point as given (``LAT,LON``: the order of --point) and its coordinates."""

    label: str
    lat: float
    lon: float

    @property
    def entry(self) -> str:
        return f"point {self.label}"


# What the API takes for one area and one point (the command line's strings included)
AreaLike = shapely.Geometry | Mapping | str | os.PathLike | tuple[float, float, float, float] | Area
PointLike = str | tuple[float, float] | Point


# --- reading an area ----------------------------------------------------------------------------

def area_of(value: AreaLike, *, base: Path | None = None) -> Area:
    """One area, in any form the API and the command line take; InputError saying what is wrong.

    ``value``: a shapely geometry; a GeoJSON-like mapping (Geometry, Feature or FeatureCollection);
    a ``(W, S, E, N)`` box; a ``pathlib.Path`` to a GeoJSON or WKT file; or a str as --aoi takes
    it: ``W,S,E,N``, a WKT geometry, inline GeoJSON, or the path of a file (relative to ``base``
    when given, as configuration.xml's paths are).
    """
    if isinstance(value, Area):
        return value
    if isinstance(value, shapely.Geometry):
        return _area(None, [("", value)], "the area")
    if isinstance(value, Mapping):
        return _area(None, _geojson_geometries(value, "GeoJSON"), "GeoJSON")
    if isinstance(value, os.PathLike):
        return read_area_file(Path(value))
    if isinstance(value, str):
        return _area_of_text(value, base)
    if _numbers(value, 4):
        west, south, east, north = value
        return box_area(west, south, east, north)
    raise UsageError("an area is a shapely geometry, a GeoJSON mapping, WKT, a (W, S, E, N) box or a file, "
                     f"not {type(value).__name__}")


def areas_of(value: AreaLike | list[AreaLike] | None) -> list[Area]:
    """The ``aoi=`` of the API: None, one area, or a list of them (a list of four numbers is one box)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and not _numbers(value, 4):
        return [area_of(item) for item in value]
    return [area_of(value)]


def _area_of_text(text: str, base: Path | None) -> Area:
    stripped = text.strip()
    label = shown(stripped)
    if _BOX_RE.fullmatch(stripped):
        west, south, east, north = (float(v) for v in stripped.split(","))
        return box_area(west, south, east, north, label=label)
    if _NUMERIC_RE.fullmatch(stripped):
        raise InputError(f"'{label}': a box is W,S,E,N, four numbers in degrees (e.g. 8.5,41.3,9.6,43.1)")
    if _WKT_RE.match(stripped):
        return _area(label, [("", _wkt(stripped, f"'{label}'"))], f"'{label}'")
    if stripped.startswith("{"):
        return _area(label, _geojson_geometries(_json(stripped, "GeoJSON"), "GeoJSON"), "GeoJSON")
    if not stripped:
        raise InputError("an empty area: give a GeoJSON or WKT file, a WKT geometry or a W,S,E,N box")
    path = expand_user(stripped, "area file", InputError)
    if base is not None and not path.is_absolute():
        path = base / path
    if not os.path.lexists(path):
        raise InputError(f"'{label}': no such file, and not a WKT geometry nor a W,S,E,N box")
    return read_area_file(path)


def read_area_file(path: Path) -> Area:
    """A GeoJSON or WKT file's area (told apart by its first character, not its name)."""
    text = text_of(read_input(path, "GeoJSON or WKT file", InputError, limit=MAX_AREA_FILE), path, InputError)
    head = text.lstrip()
    where = str(path)
    if head.startswith(("{", "[")):
        return _area(where, _geojson_geometries(_json(text, where), where), where)
    if _WKT_RE.match(head):
        return _area(where, [("", _wkt(head, where))], where)
    if not head:
        raise InputError(f"{path}: empty: no GeoJSON or WKT in it")
    raise InputError(f"{path}: not GeoJSON or WKT (it begins '{shown(head[:24])}')")


def box_area(west: float, south: float, east: float, north: float, *, label: str | None = None) -> Area:
    """A W,S,E,N box in degrees; W > E is a box across ±180° (two parts, one each side)."""
    label = label or ",".join(f"{v:g}" for v in (west, south, east, north))
    where = f"'{label}'"
    for name, value, limit in (("west", west, 180), ("south", south, 90), ("east", east, 180), ("north", north, 90)):
        if not -limit <= value <= limit:
            raise InputError(f"{where}: {name} {value:g} is outside -{limit}..{limit} (a box is W,S,E,N in degrees)")
    if south > north:
        raise InputError(f"{where}: south {south:g} is north of north {north:g} (a box is W,S,E,N)")
    spans = [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]
    parts = tuple(shapely.box(w, south, e, north) for w, e in spans if e > w)
    if south == north or not parts:
        raise InputError(f"{where}: the box has no area")
    return Area(label, parts)


def _wkt(text: str, where: str):
    try:
        return read_wkt(text)
    except ValueError as exc:
        raise InputError(f"{where}: not WKT ({exc})") from None


def _json(text: str, where: str):
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}:{exc.lineno}:{exc.colno}: not GeoJSON ({exc.msg})") from None
    except ValueError:  # nested too deeply for the parser
        raise InputError(f"{where}: not GeoJSON (nested too deeply)") from None


def _geojson_geometries(doc, where: str) -> list[tuple[str, object]]:
    """``(path in the document, geometry)`` of each geometry of a GeoJSON object; features without
    a geometry (``null``) add none."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("type"), str):
        raise InputError(f"{where}: not GeoJSON (an object with a \"type\" member)")
    _check_crs(doc, where)
    kind = doc["type"]
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise InputError(f"{where}: a FeatureCollection without a \"features\" list")
        found = []
        for number, feature in enumerate(features):
            found += _feature_geometry(feature, f"features[{number}]", where)
        return found
    if kind == "Feature":
        return _feature_geometry(doc, "", where)
    if kind in _GEOJSON_GEOMETRIES:
        return [("", _shape(doc, "", where))]
    raise InputError(f"{where}: \"{shown(kind)}\" is not a GeoJSON type")


def _feature_geometry(feature, path: str, where: str) -> list[tuple[str, object]]:
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise InputError(f"{where}: {path or 'the object'} is not a GeoJSON Feature")
    geometry = feature.get("geometry")
    if geometry is None:
        return []
    return [(f"{path}.geometry".lstrip("."), _shape(geometry, f"{path}.geometry".lstrip("."), where))]


def _shape(mapping, path: str, where: str):
    try:
        if not isinstance(mapping, Mapping) or mapping.get("type") not in _GEOJSON_GEOMETRIES:
            kind = mapping.get("type") if isinstance(mapping, Mapping) else type(mapping).__name__
            raise ValueError(f"{shown(str(kind))!r} is not a GeoJSON geometry type")
        return shape(mapping)
    except (ShapelyError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        detail = f"no {exc} member" if isinstance(exc, KeyError) else str(exc)
        raise InputError(f"{_at(where, path)}: not a GeoJSON geometry ({detail})") from None


def _check_crs(doc: Mapping, where: str) -> None:
    """The 2008 GeoJSON ``crs`` member, gone from RFC 7946: only a lon/lat one is understood."""
    crs = doc.get("crs")
    if crs is None:
        return
    name = crs.get("properties", {}).get("name") if isinstance(crs, Mapping) else None
    if not isinstance(name, str) or not name.upper().endswith(_LONLAT_CRS):
        raise InputError(f"{where}: coordinates in {shown(str(name or crs))}, not lon/lat: GeoJSON is WGS84 "
                         "longitude, latitude in degrees (RFC 7946); reproject it (e.g. ogr2ogr -t_srs EPSG:4326)")


def _area(label: str | None, geometries: list[tuple[str, object]], where: str) -> Area:
    """The area of these geometries, each checked: not empty, within lon/lat, valid. ``label`` None:
    an area given as an object, named by the start of its WKT."""
    parts = []
    for path, geometry in geometries:
        parts += _checked(geometry, _at(where, path))
    if not parts:
        raise InputError(f"{where}: the area is empty (no geometry with coordinates in it)")
    if label is None:
        whole = parts[0] if len(parts) == 1 else shapely.GeometryCollection(parts)
        label = shown(shapely.to_wkt(whole, rounding_precision=4))[:60]
    return Area(label, tuple(parts))


def _checked(geometry, where: str) -> list:
    """The geometry's parts (a GeometryCollection opened), each checked; InputError naming the first fault."""
    if geometry.geom_type == "GeometryCollection":
        return [part for member in shapely.get_parts(geometry) for part in _checked(member, where)]
    geometry = shapely.force_2d(geometry)
    if geometry.is_empty:
        return []
    xy = shapely.get_coordinates(geometry)
    if not np.isfinite(xy).all():
        raise InputError(f"{where}: coordinates that are not numbers (NaN or infinity)")
    west, south, east, north = geometry.bounds
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise InputError(
            f"{where}: coordinates outside longitude -180..180, latitude -90..90 (they reach "
            f"{west:g}..{east:g}, {south:g}..{north:g}): an area is lon/lat in degrees, as GeoJSON is (RFC 7946); "
            "one across ±180° is cut there into two parts")
    reason = shapely.is_valid_reason(geometry)
    if reason != _VALID:
        match = _REASON_RE.fullmatch(reason)
        if match:
            reason = f"{match['what'].lower()} at lon {float(match['x']):g}, lat {float(match['y']):g}"
        raise InputError(f"{where}: not a valid geometry: {reason} (not repaired here: fix it, e.g. with QGIS "
                         "'Fix geometries' or shapely.make_valid, and check the result is the area you mean)")
    for polygon in shapely.get_parts(geometry):
        if polygon.geom_type == "Polygon" and polygon.bounds[2] - polygon.bounds[0] > 180:
            log.warning("%s: a polygon %.0f° wide in longitude: an area across ±180° must be cut there into two "
                        "parts (RFC 7946 §3.1.9), or written as a W,S,E,N box with W > E",
                        where, polygon.bounds[2] - polygon.bounds[0])
            break
    return [geometry]


def _at(where: str, path: str) -> str:
    return f"{where}: {path}" if path else where


def _numbers(value, count: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


# --- reading a point ----------------------------------------------------------------------------

def point_of(value: PointLike) -> Point:
    """``'45.83,6.86'`` (as --point takes it) or a ``(lat, lon)`` pair; InputError when it is neither."""
    if isinstance(value, Point):
        return value
    if isinstance(value, str):
        label = shown(value)
        if not _POINT_RE.fullmatch(value.strip()):
            raise InputError(f"point '{label}': a point is LAT,LON, two numbers in degrees (e.g. 45.83,6.86)")
        lat, lon = (float(v) for v in value.split(","))
        label = label.replace(" ", "")
    elif _numbers(value, 2):
        lat, lon = (float(v) for v in value)
        label = f"{lat:g},{lon:g}"
    else:
        raise UsageError(f"a point is a (lat, lon) pair or 'LAT,LON', not {shown(repr(value))}")
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise InputError(f"point '{label}': latitude {lat:g} is outside -90..90 (a point is LAT,LON)")
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise InputError(f"point '{label}': longitude {lon:g} is outside -180..180 (a point is LAT,LON)")
    return Point(label, lat, lon)


def points_of(value: PointLike | list[PointLike] | None) -> list[Point]:
    """The ``points=`` of the API: None, one point, or a list of them, each as :func:`point_of` takes it."""
    if value is None:
        return []
    if isinstance(value, str) or _numbers(value, 2):
        return [point_of(value)]
    return [point_of(item) for item in value]


# --- the tiles ----------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _bounds_tree() -> tuple[np.ndarray, np.ndarray, shapely.STRtree]:
    """Every tile's box in an STRtree: (tile ids, the tile of each box, the tree). A tile across
    ±180° has a box on each side."""
    tiles, bounds = grid_bounds()
    west, south, east, north = (bounds + np.array([-1, -1, 1, 1]) * _BOUNDS_MARGIN).T
    across_west, across_east = west < -180, east > 180
    owner = np.concatenate([np.arange(len(tiles)), np.flatnonzero(across_west), np.flatnonzero(across_east)])
    box_west = np.concatenate([np.maximum(west, -180), west[across_west] + 360, np.full(across_east.sum(), -180.0)])
    box_east = np.concatenate([np.minimum(east, 180), np.full(across_west.sum(), 180.0), east[across_east] - 360])
    boxes = shapely.box(box_west, south[owner], box_east, north[owner])
    return np.array(tiles), owner, shapely.STRtree(boxes)


class TileIndex:
    """The tiles meeting an area or a point: candidates from the tree of every tile's bounds, then the
    exact test on their footprints, from ``finder`` (the KML's or computed). Holds nothing per call."""

    def __init__(self, finder: FootprintFinder):
        self.finder = finder

    def tiles_of(self, area: Area) -> list[str]:
        """The tiles whose footprint's interior meets the area's (touching along an edge is not overlapping)."""
        return self._matching(area.parts, interior=True)

    def tiles_at(self, point: Point) -> list[str]:
        """The tiles whose footprint covers the point (its edge included)."""
        return self._matching([shapely.Point(point.lon, point.lat)], interior=False)

    def _matching(self, geometries: Iterable, interior: bool) -> list[str]:
        tiles, owner, tree = _bounds_tree()
        geometries = np.array(list(geometries), dtype=object)
        which, boxes = tree.query(geometries, predicate="intersects")
        pairs = sorted(set(zip(which.tolist(), tiles[owner[boxes]].tolist(), strict=True)))
        if not pairs:
            return []
        candidates = sorted({tile for _, tile in pairs})
        footprint_of = dict(zip(candidates, self.finder.footprints(candidates), strict=True))
        left, right, of = [], [], []
        for geometry, tile in pairs:
            for part in footprint_of[tile].parts:
                left.append(geometries[geometry])
                right.append(part)
                of.append(tile)
        left_, right_ = np.array(left, dtype=object), np.array(right, dtype=object)
        shapely.prepare(geometries)
        hit = shapely.intersects(left_, right_)
        if interior:  # the interiors meet ⇔ they intersect and do more than touch
            met = np.flatnonzero(hit)
            hit[met] = ~shapely.touches(left_[met], right_[met])
        return sorted({tile for tile, h in zip(of, hit.tolist(), strict=True) if h})


def tiles_for_area(area: AreaLike, *, kml: str | os.PathLike | None = None) -> list[str]:
    """The Sentinel-2 tiles whose footprint's area overlaps ``area`` (touching along an edge does not
    count), sorted: what ``--aoi`` adds to a run.

    ``area``: a shapely geometry, a GeoJSON-like mapping, WKT, a ``(W, S, E, N)`` box in degrees
    (W > E: across ±180°), or a path (GeoJSON or WKT file), lon/lat as GeoJSON's (RFC 7946).
    ``kml``: the tiling KML whose polygons decide, as in :func:`cdse_dem.download`; None: the tool's
    auxiliary/ KML when it is there, else footprints computed from the grid.
    Raises :class:`cdse_dem.InputError` (exit status 2) for an area that cannot be used or that no
    tile covers.
    """
    checked = area_of(area)
    found = TileIndex(FootprintFinder(kml_path_of(kml))).tiles_of(checked)
    if not found:
        raise InputError(f"{checked.label}: no Sentinel-2 tile covers this area ({GRID_REACH})")
    return found


def entries_of(aoi: AreaLike | list[AreaLike] | None, points: PointLike | list[PointLike] | None,
               finder: FootprintFinder) -> list[Entry]:
    """The entries of a run's areas and points (``aoi=``, ``points=``, --aoi, --point): one per tile,
    each area's tiles in order, then each point's. InputError for an area or point that cannot be
    used or that no tile covers: a request that says where is wrong when it says nowhere."""
    areas, where = areas_of(aoi), points_of(points)
    if not areas and not where:
        return []
    index = TileIndex(finder)
    entries = []
    for item in (*areas, *where):
        if isinstance(item, Area):
            found, what = index.tiles_of(item), "area"
        else:
            found, what = index.tiles_at(item), "point"
        if not found:
            raise InputError(f"{item.entry}: no Sentinel-2 tile covers this {what} ({GRID_REACH})")
        log.info("%s: %d tile(s): %s", item.entry[0].upper() + item.entry[1:], len(found), ", ".join(found))
        entries += [Entry(item.entry, COMMAND_LINE, None, tile=tile) for tile in found]
    return entries
