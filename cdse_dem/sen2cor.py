"""Which geocells Sen2Cor asks for: every cell of the lon/lat rectangle around the tile's corners.

Sen2Cor (2.10 to 2.12, and 3) does not ask for the cells a tile's polygon overlaps. It
projects the four corners of the tile's UTM square to lon/lat, floors their extremes in its
own way, and asks for every cell of that rectangle; one cell it asks for and cannot find
sends the whole tile to flat terrain, silently (``../shared/docs/sen2cor.md``). Because UTM
squares are turned against the lon/lat grid, the rectangle holds cells the tile never
touches (5 % of all tiles; 56HKD asks for S37_E150 and S39_E149).

So this module states the rule as Sen2Cor applies it, quirks included: it is "what Sen2Cor
asks for", not what would be sensible. The planned set of a tile is this rectangle together
with the cells its true area overlaps (Sen2Cor's antimeridian quirk misses some of those, and
the downloader still fetches them), each cell carrying the reason it is there.

Pure code: the corners come from the grid arithmetic (equal to the KML's ``UTM_WKT`` for every
tile, as Sen2Cor takes them from the product's geocoding); no KML, no network.
"""

from collections.abc import Iterable, Sequence
from enum import StrEnum

from cdse_dem.geocells import Geocell, geocell

# Sen2Cor's test for a tile across ±180°: its corner longitudes spread over half the world.
ANTIMERIDIAN_SPAN = 180


class Coverage(StrEnum):
    """Which cells a tile gets (``--coverage``)."""

    SEN2COR = "sen2cor"  # the true cells and Sen2Cor's rectangle: a complete DEM for Sen2Cor
    FOOTPRINT = "footprint"  # the true cells only: the reference tool's set, for other processors


class Reason(StrEnum):
    """Why a cell is in a tile's plan (the summary's ``"reason"``)."""

    FOOTPRINT = "footprint"  # the tile's true area (or its KML polygon) overlaps the cell
    SEN2COR = "sen2cor"  # only Sen2Cor's rectangle holds it


def sen2cor_floor(value: float) -> int:
    """Sen2Cor's flooring of a bound: ``int(v) if v > 0 else int(v) - 1``.

    Like ``math.floor`` except at a negative whole number or exactly 0, which go one lower
    (-37.0 → -38, 0.0 → -1): Sen2Cor then asks for one more row or column of cells.
    """
    return int(value) if value > 0 else int(value) - 1


def rectangle_cells(lons: Sequence[float], lats: Sequence[float]) -> list[Geocell]:
    """The cells Sen2Cor asks for, given the tile's four corners in lon/lat; sorted.

    Across ±180° (``lonMax - lonMin >= 180``) Sen2Cor takes the columns
    ``range(-180, int(lonMin)) + range(int(lonMax), 180)`` with lonMin the most negative corner
    longitude and lonMax the most positive one: the column of the western-most corner west of
    180° is missed when it differs from that of lonMax (56 tiles, e.g. 60QYK). Reproduced as is.
    """
    lon_min, lon_max = min(lons), max(lons)
    lat_min, lat_max = sen2cor_floor(min(lats)), sen2cor_floor(max(lats))
    if lon_max - lon_min >= ANTIMERIDIAN_SPAN:
        columns = [*range(-180, int(lon_min)), *range(int(lon_max), 180)]
    else:
        columns = list(range(sen2cor_floor(lon_min), sen2cor_floor(lon_max) + 1))
    # Sen2Cor would also name cells that cannot exist: a corner exactly on -180° floors to
    # column -181, one exactly on +180° to column 180, and a latitude bound could leave
    # [-90, 89]. No DEM product (nor file name) exists there, so those are clipped to the
    # valid geocell ranges: latitude -90..89, longitude -180..179 (south-west corners).
    rows = range(max(lat_min, -90), min(lat_max, 89) + 1)
    columns = sorted({c for c in columns if -180 <= c <= 179})
    return [geocell(lat, lon) for lat in rows for lon in columns]


def sen2cor_cells(tile_ids: Sequence[str]) -> list[list[Geocell]]:
    """For each tile, the sorted cells Sen2Cor asks for; InputError for an id that is no tile."""
    from cdse_dem.footprint import corners_lonlat

    corners = corners_lonlat(tile_ids)
    return [rectangle_cells(c[:, 0].tolist(), c[:, 1].tolist()) for c in corners]


def planned_cells(true_cells: Iterable[Geocell], rectangle: Iterable[Geocell]) -> dict[Geocell, Reason]:
    """A tile's cells, sorted, each with its reason: the true cells are ``footprint``, the rest
    of Sen2Cor's rectangle ``sen2cor``."""
    reasons = dict.fromkeys(rectangle, Reason.SEN2COR)
    reasons.update(dict.fromkeys(true_cells, Reason.FOOTPRINT))
    return dict(sorted(reasons.items(), key=_south_to_north))


def _south_to_north(item: tuple[Geocell, Reason]) -> tuple[int, int]:
    """Geocell order as a plain tuple: sorting compares them in C, not with the dataclass's ``<``."""
    return item[0].lat, item[0].lon


def cells_with_reasons(tile_ids: Sequence[str], true_cells: Iterable[Iterable[Geocell]],
                       coverage: Coverage | str = Coverage.SEN2COR) -> list[dict[Geocell, Reason]]:
    """For each tile, its planned cells (sorted) with their reasons, from the cells its true area
    (or KML polygon) overlaps: with ``Coverage.SEN2COR`` Sen2Cor's rectangle is added."""
    true_cells = list(true_cells)
    rectangles = sen2cor_cells(tile_ids) if coverage == Coverage.SEN2COR else [[] for _ in true_cells]
    return [planned_cells(true, rectangle) for true, rectangle in zip(true_cells, rectangles, strict=True)]
