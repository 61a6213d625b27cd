"""Starting from what the user has (issue 21): an area (--aoi), a point (--point), a folder of products (--i DIR).

The tiles an area or a point gets are checked against ESA's tiling KML read independently of the
library (tests.helpers.parse_tiling_kml: regular expressions over its text) and shapely used
directly over every one of its polygons, with no tree and no candidate filter: a tile belongs to an
area when its polygon's area overlaps it (they intersect and do more than touch), to a point when
its polygon covers it. The areas themselves are written here by hand (Corsica's outline, Fiji's box
across ±180°, the Balearic islands as a WKT multipolygon), and the command line is run as a user
runs it, with --dry-run against the simulator.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

import cdse_dem
from cdse_dem.areas import MAX_AREA_FILE, TileIndex, area_of, point_of
from cdse_dem.errors import ConfigError, InputError
from cdse_dem.grid import FootprintFinder, grid_bounds
from cdse_dem.settings import decide, load_config
from tests.helpers import cli_env, computed_footprint, log_messages, parse_tiling_kml, run_cli

# Corsica's coast, a point every few tens of km, anticlockwise (RFC 7946's right-hand rule)
CORSICA_RING = [[9.40, 43.01], [9.33, 42.90], [9.30, 42.68], [8.94, 42.64], [8.76, 42.57], [8.70, 42.27],
                [8.59, 42.13], [8.74, 41.92], [8.90, 41.67], [9.16, 41.39], [9.22, 41.37], [9.28, 41.59],
                [9.40, 41.86], [9.53, 42.20], [9.45, 42.70], [9.40, 43.01]]
CORSICA = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"name": "Corse"},
     "geometry": {"type": "Polygon", "coordinates": [CORSICA_RING]}},
    {"type": "Feature", "properties": {"note": "no geometry: skipped"}, "geometry": None}]}
FIJI_BOX = "177,-19.2,-178,-16"  # W > E: across ±180°
FIJI_PARTS = (shapely.box(177, -19.2, 180, -16), shapely.box(-180, -19.2, -178, -16))
BALEARICS = ("MULTIPOLYGON (((2.35 39.58, 2.95 39.35, 3.47 39.72, 3.20 39.95, 2.55 39.90, 2.35 39.58)),"
             " ((3.80 39.95, 4.30 39.82, 4.33 39.90, 3.85 40.07, 3.80 39.95)))")
MONT_BLANC = (45.83, 6.86)


def plan_tiles(stdout: str) -> list[str]:
    """The tiles of a --dry-run's plan, in its order: each has a line ``32TNN (footprint: kml): ...``."""
    return [line.split(" ", 1)[0] for line in stdout.splitlines() if " (footprint: " in line and line[0] != " "]


@pytest.fixture(scope="module")
def kml_tiles(real_kml):
    """Every KML polygon as shapely made it from the independent reading: (tile of each part, parts)."""
    kml = parse_tiling_kml(real_kml.read_text(encoding="utf-8"))
    names = [name for name, tile in kml.items() for _ in tile.rings]
    parts = np.array([shapely.Polygon(ring) for tile in kml.values() for ring in tile.rings], dtype=object)
    return np.array(names), parts


def overlapping(kml_tiles, *geometries) -> list[str]:
    names, parts = kml_tiles
    hit = np.zeros(len(parts), dtype=bool)
    for geometry in geometries:
        hit |= shapely.intersects(parts, geometry) & ~shapely.touches(parts, geometry)
    return sorted(set(names[hit].tolist()))


def covering(kml_tiles, lat: float, lon: float) -> list[str]:
    names, parts = kml_tiles
    return sorted(set(names[shapely.covers(parts, shapely.Point(lon, lat))].tolist()))


def dry_run(sim, *args: str):
    result = run_cli(*args, "--dry-run", "-q", env=cli_env(sim))
    assert result.returncode == 0, result.output
    return result


# --- the must-show: areas and a point, through the command line -------------------------------

@pytest.mark.parametrize("form", ["GeoJSON file (Corsica)", "W,S,E,N box across ±180° (Fiji)",
                                  "WKT multipolygon (Balearic islands)"])
def test_an_area_gets_exactly_the_tiles_whose_kml_polygons_overlap_it(form, sim, tool_home, tmp_path, real_kml,
                                                                      kml_tiles):
    if form.startswith("GeoJSON"):
        value = tmp_path / "corsica.geojson"
        value.write_text(json.dumps(CORSICA))
        geometries, label = [shape(CORSICA["features"][0]["geometry"])], str(value)
    elif form.startswith("W,S,E,N"):
        value, geometries, label = FIJI_BOX, FIJI_PARTS, FIJI_BOX
    else:
        value, geometries = BALEARICS, [shapely.from_wkt(BALEARICS)]
        label = f"{BALEARICS[:120]}… ({len(BALEARICS)} characters)"  # as every entry is quoted: cut short
    expected = overlapping(kml_tiles, *geometries)
    summary = tmp_path / "summary.json"

    result = dry_run(sim, "--aoi", str(value), "--kml", str(real_kml), "--summary-json", str(summary))

    assert sorted(plan_tiles(result.stdout)) == expected
    tiles = json.loads(summary.read_text())["tiles"]
    assert {t["tile"]: t["entry"] for t in tiles} == dict.fromkeys(expected, f"area {label}")
    assert {t["footprint_source"] for t in tiles} == {"kml"}
    if form.startswith("W,S,E,N"):  # both sides of the antimeridian
        assert {t[:2] for t in expected} >= {"01", "60"}


def test_mont_blanc_gets_the_tiles_that_cover_it_and_only_those(sim, tool_home, real_kml, kml_tiles):
    expected = covering(kml_tiles, *MONT_BLANC)
    assert 1 <= len(expected) <= 4

    result = dry_run(sim, "--point", "45.83,6.86", "--kml", str(real_kml))

    assert sorted(plan_tiles(result.stdout)) == expected


def test_a_point_starting_with_a_minus_is_written_with_an_equals_sign(sim, tool_home, kml_tiles, real_kml):
    refused = run_cli("--point", "-33.48,-62.96", "--dry-run", env=cli_env(sim))
    assert refused.returncode == 2
    assert "--point=-33.48,-62.96" in refused.stderr  # the error says how to write it

    result = dry_run(sim, "--point=-33.48,-62.96", "--kml", str(real_kml))
    assert sorted(plan_tiles(result.stdout)) == covering(kml_tiles, -33.48, -62.96)


def test_computed_footprints_give_the_same_tiles_as_the_kml(tool_home, kml_tiles):
    """Without the KML (none in the tool home) the tiles come from computed footprints: for these areas,
    well inside the tiles' overlaps, the same tiles."""
    assert cdse_dem.tiles_for_area(CORSICA) == overlapping(kml_tiles, shape(CORSICA["features"][0]["geometry"]))
    assert cdse_dem.tiles_for_area(FIJI_BOX) == overlapping(kml_tiles, *FIJI_PARTS)
    assert cdse_dem.tiles_for_area(BALEARICS) == overlapping(kml_tiles, shapely.from_wkt(BALEARICS))
    index = TileIndex(FootprintFinder(None))
    assert index.tiles_at(point_of(MONT_BLANC)) == covering(kml_tiles, *MONT_BLANC)


def test_every_kml_polygon_lies_within_the_bounds_the_tree_is_built_from(kml_tiles):
    """The tree of tile bounds must never leave out a tile that meets an area."""
    names, parts = kml_tiles
    bounds = dict(zip(*grid_bounds(), strict=True))
    assert set(bounds) == set(names.tolist())
    west, south, east, north = shapely.bounds(parts).T
    for i, tile in enumerate(names.tolist()):
        w, s, e, n = bounds[tile]
        if w < -180 or e > 180:  # across ±180°: the part is on one side, within the wrapped bounds
            w, e = (w + 360, e) if w < -180 else (w, e - 360)
            assert (west[i] >= w - 1e-5 and east[i] <= 180) or (west[i] >= -180 and east[i] <= e + 1e-5), tile
        else:
            assert w - 1e-5 <= west[i] and east[i] <= e + 1e-5, tile
        assert s - 1e-5 <= south[i] and north[i] <= n + 1e-5, tile


# --- a folder of products ---------------------------------------------------------------------

def test_a_folder_of_products_gives_the_tiles_of_its_products_and_counts_the_rest(sim, tool_home, tmp_path):
    folder = tmp_path / "l1c"
    for name in ("S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912.SAFE",
                 "S2B_MSIL1C_20240715T103629_N0510_R008_T31TCJ_20240715T124301.SAFE",
                 "S2A_MSIL2A_20240801T101031_N0511_R022_T33TXF_20240801T141502.SAFE"):
        (folder / name).mkdir(parents=True)
    (folder / "S2B_MSIL1C_20240722T102559_N0510_R108_T32UMA_20240722T123456.SAFE.zip").write_bytes(b"PK")
    (folder / "photos.zip").write_bytes(b"PK")
    (folder / "README").write_text("field notes\n")
    (folder / "old").mkdir()

    result = run_cli("--i", str(folder), "--dry-run", env=cli_env(sim))

    assert result.returncode == 0, result.output
    assert sorted(plan_tiles(result.stdout)) == ["31TCJ", "32UMA", "33TXF"]
    assert log_messages(result.stderr, "INFO").count(
        f"Reading products from {folder}: 4 product(s); 3 other entries ignored (not *.SAFE, *.SAFE.zip or *.zip "
        "named S2x_MSIL1C_... or S2x_MSIL2A_...)") == 1
    assert log_messages(result.stderr, "ERROR") == log_messages(result.stderr, "WARNING") == []


# --- combining, and where the tiles come from -------------------------------------------------

def test_areas_points_and_tiles_combine_and_each_tile_is_planned_once(sim, tool_home, tmp_path, monkeypatch):
    for name, value in sim.env.items():
        monkeypatch.setenv(name, value)
    corsica_tiles = cdse_dem.tiles_for_area(CORSICA)

    result = cdse_dem.plan([corsica_tiles[0], "31TCJ"], aoi=[CORSICA, (8.5, 41.3, 9.6, 43.1)],
                           points=[MONT_BLANC, (45.84, 6.87)])

    tiles = [(t.tile, t.entry) for t in result.tiles]
    assert len({tile for tile, _ in tiles}) == len(tiles)  # each once
    assert tiles[:2] == [(corsica_tiles[0], corsica_tiles[0]), ("31TCJ", "31TCJ")]  # as first asked for
    assert {tile for tile, entry in tiles if entry.startswith("area POLYGON")} == set(corsica_tiles[1:])
    assert {tile for tile, _ in tiles} >= set(cdse_dem.tiles_for_area((8.5, 41.3, 9.6, 43.1)))
    index = TileIndex(FootprintFinder(None))
    assert {tile for tile, entry in tiles if entry.startswith("point ")} == (
        set(index.tiles_at(point_of(MONT_BLANC))) - set(corsica_tiles) - {"31TCJ"})


def test_with_only_an_area_or_a_point_the_default_list_is_not_read(tool_home):
    from cdse_copernicus_dem_downloader import build_parser

    parse = build_parser().parse_args
    assert decide(parse(["--aoi", "8,41,9,42"]), None).tiles_file is None
    assert decide(parse(["--point", "45.83,6.86"]), None).tiles_file is None
    with_list = decide(parse(["--aoi", "8,41,9,42", "--i", "l.txt"]), None)
    assert (with_list.tiles_file, with_list.areas) == (Path("l.txt"), ("8,41,9,42",))
    overridden = decide(parse(["--config", "--aoi", "8,41,9,42", "--point", "45.83,6.86"]),
                        load_config(Path(__file__).parent.parent / "configuration" / "configuration.xml"))
    assert {"--aoi", "--point"} <= set(overridden.ignored) and overridden.areas == ()


CONFIG = """<?xml version="1.0" encoding="UTF-8"?>
<DEM_DOWNLOADER_CONFIGURATION_FILE>
  <DEM_Option>
    <Collection>DEFAULT</Collection>
    <Resolution>DEFAULT</Resolution>
    <Elevation_Model>DEFAULT</Elevation_Model>
    <DEM_Output_Directory>dem</DEM_Output_Directory>
    <Area>{area}</Area>
  </DEM_Option>
</DEM_DOWNLOADER_CONFIGURATION_FILE>
"""


def test_the_configuration_area_is_read_like_aoi_relative_to_the_file(tmp_path, tool_home):
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "corsica.geojson").write_text(json.dumps(CORSICA))
    path = tmp_path / "configuration.xml"
    path.write_text(CONFIG.format(area="sites/corsica.geojson"))

    config = load_config(path)

    assert config.area.label == str(tmp_path / "sites" / "corsica.geojson")
    settings = decide(argparse_namespace(), config)
    assert settings.tiles_file is None  # no Tiles_Input_File: the area alone names the tiles
    assert settings.areas == (config.area,)


def test_a_bad_configuration_area_names_the_file_and_line(tmp_path):
    path = tmp_path / "configuration.xml"
    path.write_text(CONFIG.format(area="8,43,9,41"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}:8: Area: '8,43,9,41': south 43 is north of north 41 (a box is W,S,E,N)"
    path.write_text(CONFIG.format(area=""))  # the schema: an Area is never blank
    with pytest.raises(ConfigError, match=r":8: .*Area"):
        load_config(path)


def argparse_namespace():
    from cdse_copernicus_dem_downloader import build_parser

    return build_parser().parse_args([])


# --- the forms an area takes --------------------------------------------------------------------

def test_every_form_of_one_area_gives_the_same_tiles(tmp_path, tool_home):
    box = (8.5, 41.3, 9.6, 43.1)
    polygon = shapely.box(*box)
    (tmp_path / "a.wkt").write_text(polygon.wkt + "\n")
    (tmp_path / "a.geojson").write_text(json.dumps(shapely.geometry.mapping(polygon)))
    forms = [box, list(box), "8.5, 41.3, 9.6, 43.1", polygon, shapely.geometry.mapping(polygon), polygon.wkt,
             f"SRID=4326;{polygon.wkt}", tmp_path / "a.wkt", str(tmp_path / "a.geojson"),
             json.dumps({"type": "Feature", "geometry": shapely.geometry.mapping(polygon), "properties": {}})]
    found = [cdse_dem.tiles_for_area(form) for form in forms]
    assert found == [found[0]] * len(forms) and len(found[0]) == 6


def test_an_area_cut_at_the_antimeridian_as_rfc7946_says_is_the_box_across_it(tool_home):
    cut = {"type": "MultiPolygon", "coordinates": [[[[177, -19.2], [180, -19.2], [180, -16], [177, -16], [177, -19.2]]],
                                                   [[[-180, -19.2], [-178, -19.2], [-178, -16], [-180, -16],
                                                     [-180, -19.2]]]]}
    assert cdse_dem.tiles_for_area(cut) == cdse_dem.tiles_for_area(FIJI_BOX)


def test_a_tile_that_only_touches_the_area_along_its_edge_is_not_one_of_its_tiles(tool_home):
    (part,) = computed_footprint("32UMA").parts
    ring = np.asarray(part.exterior.coords)
    a, b = ring[50], ring[51]  # one ~1 km chord of the tile's edge
    normal = np.array([b[1] - a[1], a[0] - b[0]])  # to the right of a→b: outside, the ring being anticlockwise
    normal *= 0.01 / np.hypot(*normal)
    outside = shapely.Polygon([a, b, (a + b) / 2 + normal])
    inside = shapely.Polygon([a, b, (a + b) / 2 - normal])
    assert shapely.touches(part, outside) and not shapely.touches(part, inside)

    assert "32UMA" not in cdse_dem.tiles_for_area(outside)
    assert "32UMA" in cdse_dem.tiles_for_area(inside)


def test_an_area_file_larger_than_the_cap_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr("cdse_dem.areas.MAX_AREA_FILE", 1000)
    path = tmp_path / "big.geojson"
    path.write_text(json.dumps(CORSICA) + " " * 1000)
    with pytest.raises(InputError) as error:
        area_of(path)
    assert str(error.value) == f"{path}: too large for a GeoJSON or WKT file (over 1,000 bytes)"
    assert MAX_AREA_FILE == 32 * 2**20


def test_a_geojson_in_another_crs_is_refused(tmp_path):
    doc = dict(CORSICA, crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}})
    with pytest.raises(InputError, match="coordinates in urn:ogc:def:crs:EPSG::3857, not lon/lat"):
        area_of(doc)
    doc["crs"]["properties"]["name"] = "urn:ogc:def:crs:OGC:1.3:CRS84"
    assert area_of(doc).parts


# --- bad input: one line, exit status 2, nothing written, nothing sent ------------------------

BOWTIE = {"type": "Polygon", "coordinates": [[[8, 41], [9, 42], [9, 41], [8, 42], [8, 41]]]}
METRES = {"type": "Polygon", "coordinates": [[[500000, 4600000], [600000, 4600000], [600000, 4700000],
                                              [500000, 4600000]]]}


def _bad_rows(folder: Path):
    """(arguments, the error line, or its start), each written into ``folder`` as needed."""

    def file(name: str, text: str) -> str:
        path = folder / name
        path.write_text(text)
        return str(path)

    empty_dir = folder / "no-products"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("x")
    (empty_dir / "photos.zip").write_bytes(b"PK")
    notes = file("notes.txt", "hello world\n")
    broken = file("broken.geojson", '{"type": "Polygon",\n  "coordinates": [[\n')
    bad_wkt = file("bad.wkt", "POLYGON ((8 41, 9 41, 9 42))\n")
    empty = file("empty.geojson", '{"type": "Polygon", "coordinates": []}')
    bowtie, metres = file("bowtie.geojson", json.dumps(BOWTIE)), file("utm.geojson", json.dumps(METRES))
    return {
        "not GeoJSON or WKT": (["--aoi", notes], f"{notes}: not GeoJSON or WKT (it begins 'hello world')"),
        "GeoJSON syntax": (["--aoi", broken], f"{broken}:3:1: not GeoJSON (Expecting value)"),
        "WKT syntax": (["--aoi", bad_wkt],
                       f"{bad_wkt}: not WKT (Points of LinearRing do not form a closed linestring)"),
        "empty geometry": (["--aoi", empty], f"{empty}: the area is empty (no geometry with coordinates in it)"),
        "self-intersecting": (["--aoi", bowtie],
                              f"{bowtie}: not a valid geometry: self-intersection at lon 8.5, lat 41.5 (not repaired"),
        "outside lon/lat": (["--aoi", metres], f"{metres}: coordinates outside longitude -180..180, latitude -90..90 "
                                              "(they reach 500000..600000, 4.6e+06..4.7e+06)"),
        "box S > N": (["--aoi", "8,43,9,41"], "'8,43,9,41': south 43 is north of north 41 (a box is W,S,E,N)"),
        "box not four numbers": (["--aoi", "8,41,9"], "'8,41,9': a box is W,S,E,N, four numbers in degrees"),
        "no such file": (["--aoi", "corsica.json"], "'corsica.json': no such file, and not a WKT geometry nor a "
                                                    "W,S,E,N box"),
        "area no tile covers": (["--aoi=-180,-90,180,-85"], "area -180,-90,180,-85: no Sentinel-2 tile covers this "
                                                            "area (the grid reaches from about 83.8°S to 84.6°N)"),
        "point outside": (["--point", "91,6.86"],
                          "point '91,6.86': latitude 91 is outside -90..90 (a point is LAT,LON)"),
        "point not two numbers": (["--point", "45.83"], "point '45.83': a point is LAT,LON, two numbers in degrees"),
        "point no tile covers": (["--point", "89.5,0"], "point 89.5,0: no Sentinel-2 tile covers this point (the "
                                                        "grid reaches from about 83.8°S to 84.6°N)"),
        "folder without products": (["--i", str(empty_dir)], f"{empty_dir}: holds no Sentinel-2 product"),
    }


BAD_NAMES = ["not GeoJSON or WKT", "GeoJSON syntax", "WKT syntax", "empty geometry", "self-intersecting",
             "outside lon/lat", "box S > N", "box not four numbers", "no such file", "area no tile covers",
             "point outside", "point not two numbers", "point no tile covers", "folder without products"]


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


@pytest.mark.parametrize("row", BAD_NAMES)
def test_bad_input_is_one_line_exit_2_nothing_written_nothing_sent(row, sim, tool_home, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args, message = _bad_rows(inputs)[row]
    before, home_before = _tree(tmp_path), _tree(tool_home)
    out, summary = tmp_path / "dem", tmp_path / "summary.json"

    result = run_cli(*args, "--o", str(out), "--summary-json", str(summary), env=cli_env(sim))

    assert result.returncode == 2, result.output
    errors = log_messages(result.stderr, "ERROR")
    assert len(errors) == 1 and errors[0].startswith(message), errors
    assert "Traceback" not in result.output
    assert _tree(tmp_path) == before and _tree(tool_home) == home_before  # no folder, no summary, no file changed
    assert sim.request_log() == []  # no search, no login


def test_points_as_the_api_takes_them():
    assert point_of("45.83, 6.86") == point_of((45.83, 6.86))
    assert point_of([-33.48, -62.96]).label == "-33.48,-62.96"
    with pytest.raises(InputError, match="longitude 190 is outside"):
        point_of((10, 190))


def test_the_kml_option_must_exist_when_areas_are_given(tmp_path):
    with pytest.raises(cdse_dem.UsageError, match="tiling KML not found"):
        cdse_dem.tiles_for_area(FIJI_BOX, kml=tmp_path / "absent.kml")


def test_wide_polygons_are_warned_about_as_a_likely_antimeridian_mistake(tool_home, caplog):
    naive = shapely.box(-179, -19, 179, -16)  # meant 179..-179 across ±180°, written the long way round
    caplog.set_level("WARNING")
    area_of(naive)
    assert "358° wide in longitude" in caplog.text


def test_folder_entries_are_read_by_name_only(tmp_path):
    os.mkfifo(tmp_path / "S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912.SAFE.zip")  # never opened
    from cdse_dem.tiles import read_product_folder

    assert [e.tile for e in read_product_folder(tmp_path)] == ["32UMA"]
