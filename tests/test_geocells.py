"""Geocells: names, files, and the cells real tiles need.

The expected cells of the known tiles are worked out by hand from the KML corner
coordinates (quoted in each case) and the shape of the UTM edges between them: an edge of
constant easting bends away from the central meridian as it goes poleward, so its extreme
longitudes are at its ends; an edge of constant northing is extreme in latitude at its ends
when the whole tile lies on one side of the central meridian.
"""

import pytest
import shapely

from cdse_dem.grid import Footprint, Geocell, geocell_of_footprint_wkt, geocell_of_name, parse_grid_id
from tests.helpers import computed_footprint, geocells_of


def ids(cells):
    return [c.grid_id for c in cells]


def grid(lats, lons):
    return sorted(parse_grid_id(f"{la}_{lo}") for la in lats for lo in lons)


def test_names_follow_the_south_west_corner():
    cell = Geocell(50, 7)
    assert cell.grid_id == "N50_E007"
    assert cell.name(90) == "Copernicus_DSM_30_N50_00_E007_00"
    assert cell.name(30) == "Copernicus_DSM_10_N50_00_E007_00"
    assert Geocell(-1, -180).grid_id == "S01_W180"
    assert Geocell(-1, -180).name(90) == "Copernicus_DSM_30_S01_00_W180_00"
    assert Geocell(0, 0).grid_id == "N00_E000"
    assert Geocell(-90, 179).grid_id == "S90_E179"
    assert Geocell(-78, 164).name(30) == "Copernicus_DSM_10_S78_00_E164_00"


def test_dem_file_names():
    cell = Geocell(49, 8)
    assert cell.dem_file_name(90, "DGED") == "Copernicus_DSM_30_N49_00_E008_00_DEM.tif"
    assert cell.dem_file_name(30, "DGED") == "Copernicus_DSM_10_N49_00_E008_00_DEM.tif"
    assert cell.dem_file_name(90, "DTED") == "Copernicus_DSM_30_N49_00_E008_00_DEM.dt1"
    assert cell.dem_file_name(30, "DTED") == "Copernicus_DSM_10_N49_00_E008_00_DEM.dt2"
    with pytest.raises(ValueError):
        cell.name(45)
    with pytest.raises(ValueError):
        cell.dem_file_name(90, "DSM")


def test_parse_grid_id():
    assert parse_grid_id("N50_E007") == Geocell(50, 7)
    assert parse_grid_id(" s01_w180 ") == Geocell(-1, -180)
    assert parse_grid_id("S90_E179") == Geocell(-90, 179)
    for bad in ("N50E007", "N50_E7", "X50_E007", "N90_E000", "N00_E180", "", "N50_E007_00"):
        with pytest.raises(ValueError):
            parse_grid_id(bad)


def test_cells_order_south_to_north_then_west_to_east():
    cells = [Geocell(50, 7), Geocell(49, 9), Geocell(49, -1), Geocell(-3, 100)]
    assert ids(sorted(cells)) == ["S03_E100", "N49_W001", "N49_E009", "N50_E007"]
    assert len({Geocell(1, 2), Geocell(1, 2)}) == 1


def test_geocell_of_name():
    assert geocell_of_name("Copernicus_DSM_30_N50_00_E007_00_DEM.tif") == (Geocell(50, 7), 90)
    assert geocell_of_name("/out/Copernicus_DSM_10_S01_00_W180_00_DEM.dt2") == (Geocell(-1, -180), 30)
    assert geocell_of_name("DEM1_SAR_DGE_30_20110216T174143_20140906T174215_ADS_000000_jSLP.DEM") is None


def test_geocell_of_a_product_footprint():
    geography = "geography'SRID=4326;POLYGON ((7 50, 8 50, 8 51, 7 51, 7 50))'"
    assert geocell_of_footprint_wkt(geography) == Geocell(50, 7)
    # half a 3" pixel of margin, as raster footprints often have
    margin = 1.5 / 3600
    wkt = (f"POLYGON (({-180 - margin} {-1 - margin}, {-179 + margin} {-1 - margin}, "
           f"{-179 + margin} {margin}, {-180 - margin} {margin}, {-180 - margin} {-1 - margin}))")
    assert geocell_of_footprint_wkt(wkt) == Geocell(-1, -180)
    assert geocell_of_footprint_wkt("POLYGON((-1.5e-4 -1e-4,1 0,1 1,0 1,-1.5e-4 -1e-4))") == Geocell(0, 0)
    assert geocell_of_footprint_wkt("POLYGON ((7 50, 9 50, 9 51, 7 51, 7 50))") is None  # two cells wide
    assert geocell_of_footprint_wkt("POLYGON ((7.5 50.5, 8.5 50.5, 8.5 51.5, 7.5 51.5, 7.5 50.5))") is None
    assert geocell_of_footprint_wkt("nonsense") is None
    assert geocell_of_footprint_wkt("SRID=4326;MULTIPOLYGON (((7 50, 8 50, 8 51, 7 51, 7 50)))") == Geocell(50, 7)


@pytest.mark.parametrize("footprint", [
    "geography'SRID=4326;POLYGON ((7 50, 8 50, 8 51, 7 51))'",  # ring not closed
    "geography'SRID=4326;POLYGON ((7 50, 8 50, 8 51, 7 51, 7 50)) 9 52'",  # trailing numbers
    "geography'SRID=4326;POINT (7.5 50.5)'",
    "geography'SRID=4326;POLYGON EMPTY'",
    "geography'SRID=4326;POLYGON ((nan 50, 8 50, 8 51, nan 51, nan 50))'",
    "",
])
def test_a_footprint_that_is_no_cell_sized_geometry_names_no_cell(footprint):
    assert geocell_of_footprint_wkt(footprint) is None


def test_a_polygon_on_degree_lines_takes_no_cell_it_only_touches():
    footprint = Footprint("test", (shapely.box(7, 49, 9, 51),), "computed")
    assert ids(geocells_of(footprint)) == ["N49_E007", "N49_E008", "N50_E007", "N50_E008"]
    corner_only = Footprint("test", (shapely.Polygon([(7, 49), (7.5, 48), (6.5, 48)]),), "computed")
    assert ids(geocells_of(corner_only)) == ["N48_E006", "N48_E007"]


def test_32UMA_needs_the_six_cells_of_the_guide():
    # KML: 7.588,50.544  9.138,50.552  9.135,49.565  7.617,49.556: far from every degree line
    cells = geocells_of(computed_footprint("32UMA"))
    assert cells == grid(["N49", "N50"], ["E007", "E008", "E009"])
    assert [c.name(90) for c in cells] == [
        "Copernicus_DSM_30_N49_00_E007_00", "Copernicus_DSM_30_N49_00_E008_00",
        "Copernicus_DSM_30_N49_00_E009_00", "Copernicus_DSM_30_N50_00_E007_00",
        "Copernicus_DSM_30_N50_00_E008_00", "Copernicus_DSM_30_N50_00_E009_00",
    ]


def test_33TXF():
    # KML: 16.199,41.546  17.515,41.524  17.477,40.536  16.181,40.557
    assert geocells_of(computed_footprint("33TXF")) == grid(["N40", "N41"], ["E016", "E017"])


def test_31TCJ():
    # KML: 0.496,44.226  1.870,44.248  1.889,43.259  0.537,43.238
    assert geocells_of(computed_footprint("31TCJ")) == grid(["N43", "N44"], ["E000", "E001"])


def test_01WCV_takes_cells_on_both_sides_of_the_antimeridian():
    # KML: 177.189,72.013  (180,72.074)  -179.628,72.082  -179.495,71.098  (180,71.088)  177.480,71.033
    footprint = computed_footprint("01WCV")
    assert len(footprint.parts) == 2
    assert geocells_of(footprint) == grid(["N71", "N72"], ["E177", "E178", "E179", "W180"])


def test_58CEU_in_antarctica_includes_the_20_m_strip_west_of_165_E():
    # x_min = 499,980: 20 m west of the central meridian 165°E, so the west edge runs at
    # 164.9991°; KML: 164.999,-77.477  169.526,-77.439  169.904,-78.419  164.999,-78.461
    assert geocells_of(computed_footprint("58CEU")) == grid(
        ["S79", "S78"], ["E164", "E165", "E166", "E167", "E168", "E169"]
    )


def test_24XWT_in_band_X():
    # KML: -39.002,83.748  -30.044,83.672  -31.240,82.699  -39.001,82.765. The west edge is
    # 20 m west of the central meridian -39° (cells W040); the east edge crosses 83°N near
    # -30.9°, so the southern row reaches W031 too.
    lons = ["W040", "W039", "W038", "W037", "W036", "W035", "W034", "W033", "W032", "W031"]
    assert geocells_of(computed_footprint("24XWT")) == grid(["N82", "N83"], lons)


def test_cell_polygon():
    assert Geocell(-1, -180).polygon().bounds == (-180.0, -1.0, -179.0, 0.0)


def test_01XEP_is_a_tile_of_open_arctic_sea(shared_data):
    # KML: -177.002,84.644  -166.581,84.555  -168.165,83.585  -177.002,83.661. The west edge is
    # 20 m west of the central meridian -177° (cells W178); the east edge crosses 84°N near
    # -167.5°, so the row N83 ends at W168 and the row N84 at W167.
    expected = grid(["N83"], [f"W{w}" for w in range(168, 179)]) + grid(["N84"], [f"W{w}" for w in range(167, 179)])
    cells = geocells_of(computed_footprint("01XEP"))
    assert cells == sorted(expected) and len(cells) == 23
    existing = set((shared_data / "copdem_glo90_cells.txt").read_text().split())
    assert len(existing) == 26_475
    assert not {c.grid_id for c in cells} & existing  # no DEM anywhere: all open sea
