"""Every tile of ESA's tiling KML against the computed footprints and their geocells.

The KML is read here with a plain regular expression over its text, independently of
cdse_dem.grid (whose output is compared to it). Two things the KML does differently
from the true tile, and which these tests measure and explain rather than hide:
- its edges are straight lines in lon/lat between the corners, while the true tile (a UTM
  square) has curved edges in lon/lat; near the poles they part by up to ~2.4 km;
- across ±180° its cut vertices are interpolated linearly in lon/lat on those straight edges.
The arbiter is the KML's own UTM_WKT square in its own EPSG: a geocell belongs to a tile
when its area overlaps that square.
"""

import random
import re
from functools import cache

import numpy as np
import pytest

from cdse_dem.grid import Geocell, computed_footprints, geocells_of_each, open_index
from cdse_dem.tiles import all_tile_ids
from tests.helpers import KmlTile, parse_tiling_kml

SIDE = 109_800.0
ONE_METRE = 1.0
NUMERICAL_AREA = 1e-9  # deg²: overlaps this small are rounding, not geography
KML_TILES = 56_686  # Placemarks in the official KML

def _report(capsys, text: str) -> None:
    """Shown in the pytest output (not captured), so `make test` tells the numbers."""
    with capsys.disabled():
        print(f"\n{text}")


@pytest.fixture(scope="module")
def kml(real_kml) -> dict[str, KmlTile]:
    return parse_tiling_kml(real_kml.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def computed(kml):
    return dict(zip(kml, computed_footprints(list(kml)), strict=True))


@pytest.fixture(scope="module")
def cells_of_every_tile(kml, computed):
    """Each tile's geocells by name: of its computed (true) footprint, and of its KML polygons."""
    import shapely

    names = list(kml)
    from_computed = geocells_of_each(computed[n].parts for n in names)
    from_kml = geocells_of_each([shapely.Polygon(r) for r in kml[n].rings] for n in names)
    return dict(zip(names, from_computed, strict=True)), dict(zip(names, from_kml, strict=True))


def _corner_and_cut_vertices(tile: KmlTile):
    """The KML ring vertices without the closing repeat, split into corners and ±180° cuts."""
    vertices = np.concatenate([ring[:-1] for ring in tile.rings])
    at_cut = np.abs(vertices[:, 0]) == 180.0
    return vertices[~at_cut], vertices[at_cut]


@cache
def _to_utm(epsg: int):
    from pyproj import Transformer

    return Transformer.from_crs(4326, epsg, always_xy=True)


def _utm_distance_to_square(tile: KmlTile, lonlat: np.ndarray) -> np.ndarray:
    """Metres from lon/lat points to the boundary of the KML's UTM square (in its EPSG)."""
    x, y = _to_utm(tile.epsg).transform(lonlat[:, 0], lonlat[:, 1])
    x0, x1, y1, y0 = tile.x_min, tile.x_min + SIDE, tile.y_max, tile.y_max - SIDE
    dx = np.maximum.reduce([x0 - x, x - x1, np.zeros_like(x)])
    dy = np.maximum.reduce([y0 - y, y - y1, np.zeros_like(y)])
    outside = np.hypot(dx, dy)
    inside = np.minimum.reduce([x - x0, x1 - x, y - y0, y1 - y])
    return np.where(outside > 0, outside, np.abs(inside))


def _true_overlaps_m2(tile: KmlTile, cells: list[Geocell]) -> np.ndarray:
    """Area (m²) of each cell within the tile's UTM square: the cells densified, projected, clipped.

    Cells beyond the square's lon/lat extent (its edges densified, plus a 0.01° margin) overlap
    it by nothing and are not projected; across ±180° every cell is.
    """
    import shapely

    t = np.linspace(0.0, 1.0, 400, endpoint=False)
    ring_lon = np.concatenate([t, np.ones_like(t), 1 - t, np.zeros_like(t)])
    ring_lat = np.concatenate([np.zeros_like(t), t, np.ones_like(t), 1 - t])
    x, y = tile.x_min + SIDE * ring_lon, tile.y_max - SIDE * ring_lat
    lon, lat = _to_utm(tile.epsg).transform(x, y, direction="INVERSE")
    south, west = np.array([[c.lat, c.lon] for c in cells], dtype=np.float64).reshape(-1, 2).T
    near = np.ones(len(cells), dtype=bool)
    if np.ptp(lon) < 180:
        margin = 0.01
        near = (west < lon.max() + margin) & (west + 1 > lon.min() - margin)
        near &= (south < lat.max() + margin) & (south + 1 > lat.min() - margin)
    x, y = _to_utm(tile.epsg).transform(west[near, None] + ring_lon, south[near, None] + ring_lat)
    square = shapely.box(tile.x_min, tile.y_max - SIDE, tile.x_min + SIDE, tile.y_max)
    m2 = np.zeros(len(cells))
    m2[near] = shapely.area(shapely.intersection(shapely.polygons(np.stack([x, y], axis=-1)), square))
    return m2


def test_the_shipped_tile_list_is_exactly_the_kml(kml):
    assert len(kml) == KML_TILES
    assert set(all_tile_ids()) == set(kml)


def test_the_grid_arithmetic_gives_every_kml_square(kml, computed):
    from cdse_dem.grid import utm_tile

    wrong = []
    for name, tile in kml.items():
        utm = utm_tile(name)
        if (utm.epsg, utm.x_min, utm.y_max) != (tile.epsg, tile.x_min, tile.y_max):
            wrong.append(name)
        assert (tile.width, tile.height) == (SIDE, SIDE)
    assert wrong == []


def test_the_kml_index_holds_every_polygon_of_the_kml(real_kml, kml):
    index = open_index(real_kml)
    assert len(index) == KML_TILES
    got, want = [], []
    for name, tile in kml.items():
        rings = index.rings(name)
        assert len(rings) == len(tile.rings), name
        got += rings
        want += tile.rings
    assert [len(r) for r in got] == [len(r) for r in want]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))  # every vertex, in order


def test_every_kml_corner_is_within_a_metre_of_the_computed_footprint(capsys, kml, computed):
    import shapely
    from pyproj import Geod

    names = list(kml)
    rings = [ring[:-1] for name in names for ring in kml[name].rings]  # without the closing repeat
    tile_of_ring = np.repeat(np.arange(len(names)), [len(kml[name].rings) for name in names])
    vertices = np.concatenate(rings)
    tile_of_vertex = np.repeat(tile_of_ring, [len(ring) for ring in rings])
    corner = np.abs(vertices[:, 0]) != 180.0  # the ±180° cuts are not corners
    points = vertices[corner]
    # each tile's computed outline: its polygon's boundary, or the two of a tile across ±180°
    boundary_of_tile = shapely.boundary(np.array([computed[name].parts[0] for name in names], dtype=object))
    for i, name in enumerate(names):
        if len(computed[name].parts) > 1:
            boundary_of_tile[i] = shapely.multilinestrings([p.exterior for p in computed[name].parts])
    boundaries = boundary_of_tile[tile_of_vertex[corner]]
    # nearest in degrees, distance in metres: an upper bound on the true metric distance
    nearest = shapely.get_coordinates(
        shapely.shortest_line(shapely.points(points), np.array(boundaries, dtype=object))
    )[1::2]
    _, _, metres = Geod(ellps="WGS84").inv(points[:, 0], points[:, 1], nearest[:, 0], nearest[:, 1])
    _report(capsys, f"\nKML corners: {len(points)}, farthest from the computed footprint {metres.max():.3f} m")
    assert len(points) == 4 * KML_TILES
    assert metres.max() <= ONE_METRE


def test_antimeridian_parts_match_the_true_tile_and_the_kml_rule(capsys, kml, computed):
    crossing = [name for name, tile in kml.items() if len(tile.rings) == 2]
    assert len(crossing) == 298  # s2-grid.md
    assert sorted(len(computed[name].parts) for name in crossing) == [2] * 298
    assert {name for name, fp in computed.items() if len(fp.parts) == 2} == set(crossing)
    worst_true, worst_kml_rule, worst_kml_cut = 0.0, 0.0, (0.0, "")
    for name in crossing:
        tile, parts = kml[name], computed[name].parts
        for part in parts:
            xy = np.array(part.exterior.coords)
            assert xy[:, 0].min() >= -180 and xy[:, 0].max() <= 180
            # every computed vertex, the cut ones included, lies on the true tile edge
            worst_true = max(worst_true, _utm_distance_to_square(tile, xy).max())
        corners, cuts = _corner_and_cut_vertices(tile)
        continuous = corners.copy()
        continuous[continuous[:, 0] < 0, 0] += 360
        centre = continuous.mean(axis=0)
        order = np.argsort(np.arctan2(continuous[:, 1] - centre[1], continuous[:, 0] - centre[0]))
        quad = continuous[order]
        crossings = []
        for (lon_a, lat_a), (lon_b, lat_b) in zip(quad, np.roll(quad, -1, axis=0), strict=True):
            if (lon_a - 180) * (lon_b - 180) < 0:
                crossings.append(lat_a + (180 - lon_a) / (lon_b - lon_a) * (lat_b - lat_a))
        # the KML's cut latitudes are the straight lon/lat line between its corners...
        for lat in np.unique(cuts[:, 1]):
            worst_kml_rule = max(worst_kml_rule, min(abs(lat - c) for c in crossings) * 111_000)
        # ...so they lie off the true edge, by this much
        far = _utm_distance_to_square(tile, cuts).max()
        worst_kml_cut = max(worst_kml_cut, (far, name))
    _report(
        capsys,
        f"antimeridian: {len(crossing)} tiles; computed vertices within {worst_true:.3f} m of the true tile; "
        f"KML cut vertices are the straight-line rule within {worst_kml_rule:.3f} m and lie up to "
        f"{worst_kml_cut[0]:.0f} m ({worst_kml_cut[1]}) off the true edge",
    )
    assert worst_true <= ONE_METRE
    assert worst_kml_rule <= ONE_METRE


def test_geocells_of_every_tile_differ_from_the_kml_only_where_the_kml_leaves_the_true_tile(
    capsys, kml, cells_of_every_tile
):
    import shapely

    names = list(kml)
    from_computed, from_kml = cells_of_every_tile
    numerical, kml_strays, kml_misses, unexplained = [], [], [], []
    for name in names:
        mine, theirs = from_computed[name], from_kml[name]
        if mine == theirs:  # both sorted, each cell once
            continue
        only_kml, only_mine = sorted(set(theirs) - set(mine)), sorted(set(mine) - set(theirs))
        true_m2 = dict(zip(only_kml + only_mine, _true_overlaps_m2(kml[name], only_kml + only_mine), strict=True))
        kml_parts = [shapely.Polygon(r) for r in kml[name].rings]
        for cell in only_kml:
            area = sum(shapely.intersection(p, cell.polygon()).area for p in kml_parts)
            if area < NUMERICAL_AREA:
                numerical.append((name, cell))
            elif true_m2[cell] < 1.0:
                kml_strays.append((name, cell, area))
            else:
                unexplained.append((name, cell.grid_id, "the true tile overlaps it, computed missed it"))
        for cell in only_mine:
            if true_m2[cell] > 1.0:
                kml_misses.append((name, cell))
            else:
                unexplained.append((name, cell.grid_id, "computed has it, the true tile does not"))
    differing = {d[0] for d in numerical + kml_strays + kml_misses + unexplained}
    stray_examples = [(d[0], d[1].grid_id) for d in kml_strays[:3]]
    miss_examples = [(d[0], d[1].grid_id) for d in kml_misses[:3]]
    _report(
        capsys,
        f"geocells: {len(differing)} of {len(names)} tiles differ between KML and computed footprints:\n"
        f"  {len({d[0] for d in kml_strays})} tiles: the KML's straight edge strays outside the true tile into "
        f"a cell the tile does not overlap ({len(kml_strays)} cells, KML overlap up to "
        f"{max((d[2] for d in kml_strays), default=0):.2e} deg²; e.g. {stray_examples})\n"
        f"  {len({d[0] for d in kml_misses})} tiles: the true tile overlaps a cell the KML's straight edge "
        f"misses ({len(kml_misses)} cells; e.g. {miss_examples})\n"
        f"  {len(numerical)} cells: KML overlap under {NUMERICAL_AREA} deg² (rounding)\n"
        f"  unexplained: {len(unexplained)}",
    )
    assert unexplained == []


def test_computed_geocells_are_the_cells_overlapping_the_true_tile_on_a_sample(kml, computed):
    names = random.Random(4).sample(sorted(kml), 300)
    names += [n for n in ("32UMA", "01WCV", "58CEU", "24XWT", "01XDP", "01CDH") if n not in names]
    mine = geocells_of_each(computed[n].parts for n in names)
    for name, cells in zip(names, mine, strict=True):
        tile = kml[name]
        lon = np.concatenate([r[:, 0] for r in tile.rings])
        lat = np.concatenate([r[:, 1] for r in tile.rings])
        candidates = [
            Geocell(a, o)
            for a in range(int(np.floor(lat.min())) - 1, int(np.ceil(lat.max())) + 1)
            for o in range(int(np.floor(lon.min())) - 1, int(np.ceil(lon.max())) + 1)
            if -180 <= o <= 179 and -90 <= a <= 89
        ]
        if lon.max() - lon.min() > 180:  # across ±180°: the cells next to the line on both sides
            candidates = [c for c in candidates if c.lon >= 170 or c.lon <= -171]
        truth = sorted(c for c, m2 in zip(candidates, _true_overlaps_m2(tile, candidates), strict=True) if m2 > 1.0)
        assert cells == truth, name


# sen2cor.md's figures over all 56,686 tiles
TILES_ASKING_FOR_AN_UNTOUCHED_CELL = 2_830
TILES_ASKING_FOR_AN_UNTOUCHED_LAND_CELL = 1_092  # with a GLO-90 product
TILES_WITH_A_TRUE_CELL_OUTSIDE_THE_RECTANGLE = 56  # across ±180°, Sen2Cor's quirk


def _floor_as_sen2cor(values: np.ndarray) -> np.ndarray:
    """sen2cor.md, step 2: ``int(v) if v > 0 else int(v) - 1``, vectorised."""
    return np.where(values > 0, np.trunc(values), np.trunc(values) - 1).astype(int)


def _rectangles_as_sen2cor_md_states_them(kml: dict[str, KmlTile]) -> dict[str, set[tuple[int, int]]]:
    """sen2cor.md's rule written out again from its text, independently of cdse_dem.sen2cor:
    the four corners of the KML's own UTM_WKT square projected with pyproj, the extremes floored
    Sen2Cor's way, every (lat, lon) pair; across ±180° (``lonMax - lonMin >= 180``) the columns
    ``range(-180, int(lonMin)) + range(int(lonMax), 180)``. Cells outside -90..89 / -180..179
    (which no DEM has) left out."""
    from pyproj import Transformer

    names = list(kml)
    lon, lat = np.empty((len(names), 4)), np.empty((len(names), 4))
    by_epsg: dict[int, list[int]] = {}
    for i, name in enumerate(names):
        by_epsg.setdefault(kml[name].epsg, []).append(i)
    for epsg, rows in by_epsg.items():
        x0 = np.array([kml[names[i]].x_min for i in rows])[:, None]
        y1 = np.array([kml[names[i]].y_max for i in rows])[:, None]
        x = x0 + np.array([0, SIDE, SIDE, 0])  # UL, UR, LR, LL
        y = y1 - np.array([0, 0, SIDE, SIDE])
        lon[rows], lat[rows] = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
    lon_min, lon_max = lon.min(axis=1), lon.max(axis=1)
    west, east = _floor_as_sen2cor(lon_min), _floor_as_sen2cor(lon_max)
    south, north = _floor_as_sen2cor(lat.min(axis=1)), _floor_as_sen2cor(lat.max(axis=1))
    rectangles = {}
    for i, name in enumerate(names):
        if lon_max[i] - lon_min[i] >= 180:
            columns = [*range(-180, int(lon_min[i])), *range(int(lon_max[i]), 180)]
        else:
            columns = list(range(west[i], east[i] + 1))
        rectangles[name] = {(a, o) for a in range(south[i], north[i] + 1) for o in columns
                            if -90 <= a <= 89 and -180 <= o <= 179}
    return rectangles


def _glo90_cells(shared_data) -> set[tuple[int, int]]:
    cells = set()
    text = (shared_data / "copdem_glo90_cells.txt").read_text()
    for ns, lat, ew, lon in re.findall(r"([NS])(\d\d)_([EW])(\d\d\d)", text):
        cells.add((int(lat) * (1 if ns == "N" else -1), int(lon) * (1 if ew == "E" else -1)))
    return cells


def test_every_tile_plans_every_cell_sen2cor_asks_for_and_every_true_cell(capsys, kml, cells_of_every_tile,
                                                                           shared_data):
    """The planned set of each tile (cdse_dem.sen2cor, as the run builds it from the true and KML
    cells) is exactly Sen2Cor's rectangle, land and sea alike, with the tile's true and KML cells;
    every cell's reason is "footprint" when the tile (or its KML polygon) overlaps it, else "sen2cor"."""
    from cdse_dem.sen2cor import cells_with_reasons

    names = list(kml)
    from_computed, from_kml = cells_of_every_tile
    overlapped = {n: {(c.lat, c.lon) for c in (*from_computed[n], *from_kml[n])} for n in names}
    planned = cells_with_reasons(names, [sorted({*from_computed[n], *from_kml[n]}) for n in names])
    rectangles = _rectangles_as_sen2cor_md_states_them(kml)
    land = _glo90_cells(shared_data)
    unexplained, gained, untouched, untouched_land, outside = [], [], [], [], []
    for name, cells in zip(names, planned, strict=True):
        got = {(c.lat, c.lon): str(reason) for c, reason in cells.items()}
        true = {(c.lat, c.lon) for c in from_computed[name]}
        rectangle = rectangles[name]
        for cell in sorted((rectangle | true) - got.keys()):
            unexplained.append((name, cell, "not planned"))
        for cell, reason in got.items():
            why = "footprint" if cell in overlapped[name] else "sen2cor" if cell in rectangle else "neither"
            if reason != why:
                unexplained.append((name, cell, f"reason {reason}, should be {why}"))
        if "sen2cor" in got.values():
            gained.append(name)
        if rectangle - true:
            untouched.append(name)
            if (rectangle - true) & land:
                untouched_land.append(name)
        if true - rectangle:
            outside.append(name)
    _report(
        capsys,
        f"Sen2Cor's rectangle: {len(untouched)} of {len(names)} tiles ask for a cell they never touch, "
        f"{len(untouched_land)} of them a land cell with a GLO-90 product (e.g. {untouched_land[:4]}); "
        f"{len(gained)} tiles gain cells over today's set (true ∪ KML); {len(outside)} tiles across ±180° "
        f"have true cells outside the rectangle, still planned (e.g. {outside[:3]}); unexplained: {len(unexplained)}",
    )
    assert unexplained == []
    assert len(untouched) == TILES_ASKING_FOR_AN_UNTOUCHED_CELL
    assert len(untouched_land) == TILES_ASKING_FOR_AN_UNTOUCHED_LAND_CELL
    assert len(outside) == TILES_WITH_A_TRUE_CELL_OUTSIDE_THE_RECTANGLE
    assert {"56HKD", "34RCP", "38UQE", "47QMA", "01VFL"} <= set(untouched_land)  # sen2cor.md's examples
    assert "60QYK" in outside
    # a KML stray cell inside the rectangle is already "footprint": gained ⊆ asking for an untouched cell
    assert set(gained) <= set(untouched)
