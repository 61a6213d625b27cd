"""Tile footprints: the grid arithmetic, the true curved outline, ±180°, and where they come from."""

import logging

import numpy as np
import pytest
import shapely
from pyproj import Geod, Transformer

from cdse_dem.errors import InputError
from cdse_dem.grid import FootprintFinder, computed_footprints, utm_tile
from tests.helpers import computed_footprint, geocells_of

GEOD = Geod(ellps="WGS84")

# s2-grid.md: 32UMA's KML polygon, and 01WCV's two parts
UMA_CORNERS = [(7.5880861366, 50.5437323314), (9.1377697558, 50.5522106218),
               (9.1349705026, 49.5646762974), (7.6167627329, 49.5564878429)]
WCV_EAST = [(180, 71.0876), (177.4798, 71.0334), (177.1892, 72.0130), (180, 72.0739)]
WCV_WEST = [(-180, 72.0739), (-179.6275, 72.0819), (-179.4954, 71.0985), (-180, 71.0876)]


def metres_to_nearest_vertex(polygon, lon, lat):
    coords = np.array(polygon.exterior.coords)
    _, _, d = GEOD.inv(np.full(len(coords), lon), np.full(len(coords), lat), coords[:, 0], coords[:, 1])
    return d.min()


@pytest.mark.parametrize(
    ("tile", "epsg", "x_min", "y_max"),
    [  # the KML's EPSG and UTM_WKT upper-left corners
        ("32UMA", 32632, 399960, 5600040),
        ("01WCV", 32601, 300000, 8000040),
        ("58CEU", 32758, 499980, 1400020),
        ("01KAB", 32701, 99960, 8200000),
        ("24XWT", 32624, 499980, 9300000),
        ("33TXF", 32633, 600000, 4600020),
        ("01CCV", 32701, 300000, 2000020),
    ],
)
def test_grid_arithmetic_gives_the_kml_square(tile, epsg, x_min, y_max):
    utm = utm_tile(tile)
    assert (utm.epsg, utm.x_min, utm.y_max) == (epsg, x_min, y_max)
    assert utm.corners()[2] == (x_min + 109_800, y_max - 109_800)


def test_32UMA_corners_match_the_kml_within_a_metre():
    footprint = computed_footprint("32UMA")
    assert footprint.tile == "32UMA" and footprint.source == "computed"
    (polygon,) = footprint.parts
    assert polygon.is_valid and polygon.exterior.is_ccw
    for lon, lat in UMA_CORNERS:
        assert metres_to_nearest_vertex(polygon, lon, lat) < 1.0


def test_the_computed_outline_follows_the_true_curved_edge():
    (polygon,) = computed_footprint("32UMA").parts
    coords = np.array(polygon.exterior.coords)
    assert len(coords) > 400  # a vertex every kilometre or so, not just the corners
    x, y = Transformer.from_crs(4326, 32632, always_xy=True).transform(coords[:, 0], coords[:, 1])
    on_edge = np.minimum.reduce([abs(x - 399960), abs(x - 509760), abs(y - 5600040), abs(y - 5490240)])
    assert on_edge.max() < 0.01
    # the lon/lat midpoint of the KML's straight north edge is not on the tile edge: ours is
    _, mid_y = Transformer.from_crs(4326, 32632, always_xy=True).transform(
        (UMA_CORNERS[0][0] + UMA_CORNERS[1][0]) / 2, (UMA_CORNERS[0][1] + UMA_CORNERS[1][1]) / 2
    )
    assert abs(mid_y - 5600040) > 10


def test_01WCV_is_cut_in_two_at_the_antimeridian():
    parts = computed_footprint("01WCV").parts
    assert len(parts) == 2
    east, west = sorted(parts, key=lambda p: -p.bounds[0])
    assert east.bounds[2] == 180.0 and west.bounds[0] == -180.0
    for part in parts:
        assert part.is_valid and part.exterior.is_ccw
        assert -180 <= part.bounds[0] and part.bounds[2] <= 180
    for lon, lat in WCV_EAST[1:3]:
        assert metres_to_nearest_vertex(east, lon, lat) < 20  # the guide rounds to 4 decimals
    for lon, lat in WCV_WEST[1:3]:
        assert metres_to_nearest_vertex(west, lon, lat) < 20
    # the cut vertices lie on the true north and south edges (y = 8,000,040 and 7,890,240)
    to_utm = Transformer.from_crs(4326, 32601, always_xy=True)
    for part in parts:
        coords = np.array(part.exterior.coords)
        cut = np.unique(coords[np.abs(coords[:, 0]) == 180], axis=0)
        _, y = to_utm.transform(cut[:, 0], cut[:, 1])
        assert len(cut) == 2
        assert np.allclose(sorted(y), [7_890_240, 8_000_040], atol=1.0)


def test_batch_and_single_agree_and_keep_order():
    tiles = ["32UMA", "01WCV", "t33txf", "32UMA"]
    batch = computed_footprints(tiles)
    assert [f.tile for f in batch] == ["32UMA", "01WCV", "33TXF", "32UMA"]
    for footprint in batch:
        single = computed_footprint(footprint.tile)
        assert len(single.parts) == len(footprint.parts)
        assert all(a.equals_exact(b, 0) for a, b in zip(single.parts, footprint.parts, strict=True))


@pytest.mark.parametrize("tile", ["01XEQ", "32UMH", "32 UMA", ""])
def test_not_a_tile_is_an_input_error(tile):
    with pytest.raises(InputError, match="is not a Sentinel-2 tile"):
        computed_footprint(tile)
    with pytest.raises(InputError):
        FootprintFinder(None).footprint(tile)


def test_without_kml_footprints_are_computed_and_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="cdse_dem")
    finder = FootprintFinder(tmp_path / "absent.kml")
    footprint = finder.footprint("32uma")
    assert footprint.source == "computed" and footprint.tile == "32UMA"
    assert f"Tiling KML not found at {tmp_path / 'absent.kml'}" in caplog.text
    assert "Footprint of 32UMA: computed" in caplog.text
    assert FootprintFinder(None).footprint("01WCV").source == "computed"


def test_with_the_real_kml_footprints_are_its_polygons(real_kml, caplog):
    caplog.set_level(logging.DEBUG, logger="cdse_dem")
    finder = FootprintFinder(real_kml)
    uma, wcv = finder.footprints(["32UMA", "01WCV"])
    assert uma.source == wcv.source == "kml"
    assert "Footprint of 32UMA: kml" in caplog.text
    (polygon,) = uma.parts
    assert sorted(polygon.exterior.coords[:-1]) == sorted(UMA_CORNERS)
    assert polygon.exterior.is_ccw
    east, west = sorted(wcv.parts, key=lambda p: -p.bounds[0])
    assert np.allclose(sorted(east.exterior.coords[:-1]), sorted(WCV_EAST), atol=1e-4)
    assert np.allclose(sorted(west.exterior.coords[:-1]), sorted(WCV_WEST), atol=1e-4)
    # a second finder loads the stored index instead of parsing the KML again
    assert (real_kml.parent / (real_kml.name + ".index.npz")).is_file()
    caplog.clear()
    assert FootprintFinder(real_kml).footprint("58CEU").source == "kml"
    assert "Indexing the tiling KML" not in caplog.text
    assert shapely.equals(
        FootprintFinder(real_kml).footprint("58CEU").parts[0], finder.footprint("58CEU").parts[0]
    )


def test_the_known_tiles_get_the_same_cells_from_the_kml(real_kml):
    from cdse_dem.grid import parse_grid_id

    def grid(lats, lons):
        return sorted(parse_grid_id(f"{a}_{o}") for a in lats for o in lons)

    finder = FootprintFinder(real_kml)
    expected = {
        "32UMA": grid(["N49", "N50"], ["E007", "E008", "E009"]),
        "31TCJ": grid(["N43", "N44"], ["E000", "E001"]),
        "01WCV": grid(["N71", "N72"], ["E177", "E178", "E179", "W180"]),
        "58CEU": grid(["S79", "S78"], ["E164", "E165", "E166", "E167", "E168", "E169"]),
    }
    for tile, cells in expected.items():
        footprint = finder.footprint(tile)
        assert footprint.source == "kml"
        assert geocells_of(footprint) == cells, tile
