"""One DEM for every Sentinel-2 processor: sen2like's GeoTIFF, FORCE's VRT and the quicklook (issue 20).

Two halves. Without a server: the outputs of tiles in several UTM zones, both hemispheres, across
the antimeridian and near both poles, made from geocells written with the simulator's terrain,
against the tiling KML (extent, EPSG) and against the geocells (heights). Through the command line
against the simulator: what the issue's "Must show" names, run as a user runs it.

Heights are compared with what GDAL reads from the geocells themselves: an output pixel must lie
within the heights of the geocell around the same place (the interpolation's reach), rounded.
"""

import json
import math
import mmap
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning

from cdse_dem import processors
from cdse_dem.grid import Geocell
from cdse_dem.planning import Status, TilePlan, start_plan
from cdse_dem.tiles import Entry
from tests.conftest import SHARED_DATA
from tests.helpers import ROOT, cli_env, log_messages, parse_tiling_kml, planned_geocells, run_cli, tile_geocells

SIDE = 109_800
# tile: what it stands for (all within the simulator's built-in cells, so no data folder is needed)
TILES = {
    "32UMA": "zone 32, northern mid-latitudes",
    "33KWP": "zone 33, southern hemisphere",
    "01WCP": "across the antimeridian (zone 01)",
    "24XWT": "band X, 81-83°N, towards the north pole",
    "58CEV": "band C, Antarctica, towards the south pole, with open sea",
}
REACH = 6  # source pixels around a point that a cubic spline (scaled when the grid is coarser) may use
OVERSHOOT = 0.1  # GDAL's cubic spline rings at a step of the terrain by a few per cent of its height


def kml_square(kml: Path, tile: str) -> tuple[int, tuple[float, float, float, float]]:
    """The tile's EPSG and the envelope (west, south, east, north) of its UTM_WKT, from its Placemark in the
    KML's text, read as tests/helpers.py reads the whole KML (independently of cdse_dem.grid)."""
    with open(kml, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as text:
        name = text.find(f"<name>{tile}</name>".encode())
        assert name >= 0, f"{tile} is not in the KML"
        start, end = text.rfind(b"<Placemark>", 0, name), text.find(b"</Placemark>", name) + len(b"</Placemark>")
        (found,) = parse_tiling_kml(text[start:end].decode()).values()
    return found.epsg, (found.x_min, found.y_max - found.height, found.x_min + found.width, found.y_max)


class Cells:
    """Heights of the geocells as GDAL reads them, looked up by lon/lat."""

    def __init__(self, cells):
        self.paths = {cell: path for cell, path in cells}
        self._open = {}

    def around(self, lon: float, lat: float, reach: int = REACH) -> tuple[float, float] | None:
        """The lowest and highest height within ``reach`` pixels of the point; None at sea (no cell)."""
        cell = Geocell(math.floor(lat), math.floor(lon) if lon < 180 else 179)
        path = self.paths.get(cell)
        if path is None:
            return None
        if cell not in self._open:
            with rasterio.open(path) as dataset:
                self._open[cell] = (dataset.read(1), dataset.transform)
        heights, transform = self._open[cell]
        col, row = ~transform @ (lon, lat)
        row, col = int(row), int(col)
        window = heights[max(row - reach, 0):row + reach + 1, max(col - reach, 0):col + reach + 1]
        return float(window.min()), float(window.max())


def sample_points(count: int, seed: int) -> np.ndarray:
    """Pixel (row, col) positions spread over a 1220-pixel tile."""
    return np.random.default_rng(seed).integers(0, SIDE // 90, size=(count, 2))


def assert_heights_agree(tif: Path, cells, points) -> int:
    """Each sampled pixel within the geocell heights around it (0 at sea); the number checked on land."""
    lookup = Cells(cells)
    with rasterio.open(tif) as dataset:
        data, transform, epsg = dataset.read(1), dataset.transform, dataset.crs.to_epsg()
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    on_land = 0
    for row, col in points:
        x, y = transform @ (col + 0.5, row + 0.5)
        lon, lat = to_lonlat.transform(x, y)
        span = lookup.around(lon, lat)
        value = int(data[row, col])
        if span is None:
            far = all(lookup.around(lon + dx, lat + dy) is None for dx in (-0.02, 0, 0.02) for dy in (-0.02, 0, 0.02))
            if far:  # open sea, away from any coast the spline reaches across
                assert value == 0, f"{tif.name} ({row}, {col}) at sea is {value}, not 0"
            continue
        low, high = span
        ring = OVERSHOOT * (high - low) + 1  # + 1: Int16 rounds
        assert low - ring <= value <= high + ring, f"{tif.name} ({row}, {col}) {lon:.4f}, {lat:.4f}: {value} " \
                                                   f"outside the geocell's {low:.1f}..{high:.1f}"
        on_land += 1
    return on_land


# --- without a server ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Each tile of TILES: its cells (written with the simulator's terrain), sen2like file and FORCE VRT."""
    folder = tmp_path_factory.mktemp("dem")
    out = tmp_path_factory.mktemp("outputs")
    found = {}
    for tile in TILES:
        cells = tile_geocells(tile, folder)
        tif = out / f"{tile}.TIF"
        tif.write_bytes(processors.sen2like_bytes(cells, tile, 90))
        vrt = out / f"MGRS_T{tile}.vrt"
        vrt.write_text(processors.force_vrt(cells, vrt, folder))
        found[tile] = cells, tif, vrt
    return found


@pytest.mark.parametrize("tile", TILES)
def test_the_sen2like_file_is_int16_on_the_tiles_epsg_and_exactly_its_kml_square(made, real_kml, tile):
    _, tif, _ = made[tile]
    epsg, envelope = kml_square(real_kml, tile)
    with rasterio.open(tif) as dataset:
        assert dataset.dtypes == ("int16",)
        assert dataset.crs.to_epsg() == epsg
        assert (dataset.width, dataset.height) == (1220, 1220)
        assert dataset.res == (90.0, 90.0)
        assert tuple(dataset.bounds) == envelope  # to the metre: both are whole metres


@pytest.mark.parametrize("tile", TILES)
def test_sen2like_heights_agree_with_the_geocells_and_sea_is_0(made, tile):
    cells, tif, _ = made[tile]
    on_land = assert_heights_agree(tif, cells, sample_points(300, seed=len(tile) + ord(tile[-1])))
    assert on_land > 100  # most of each of these tiles is land


def test_the_tile_across_the_antimeridian_is_whole_with_no_seam_at_180(made):
    cells, tif, _ = made["01WCP"]
    lookup = Cells(cells)
    with rasterio.open(tif) as dataset:
        data, transform = dataset.read(1), dataset.transform
        to_utm = Transformer.from_crs(4326, dataset.crs, always_xy=True)
    assert (data == 0).sum() == 0  # the simulator serves land on both sides of 180°: no hole anywhere
    checked = 0
    for lat in np.linspace(65.1, 66.9, 40):
        for lon in (179.99, 180.0, -179.99):  # ~450 m on either side of the line, and on it
            x, y = to_utm.transform(lon, lat)
            col, row = ~transform @ (x, y)
            if not (0 <= row < 1220 and 0 <= col < 1220):
                continue
            value = int(data[int(row), int(col)])
            assert value != 0
            if lon != 180.0:
                low, high = lookup.around(lon, lat, reach=REACH + 6)  # the field jumps at 180°: a wider reach
                ring = OVERSHOOT * (high - low) + 1
                assert low - ring <= value <= high + ring, (lon, lat, value, low, high)
            checked += 1
    assert checked > 60


@pytest.mark.parametrize("tile", ["32UMA", "01WCP", "58CEV"])
def test_the_force_vrt_reads_each_geocells_height_at_its_centre_and_nodata_at_sea(made, tile):
    cells, _, vrt = made[tile]
    with rasterio.open(vrt) as dataset:
        assert dataset.crs.to_epsg() == 4326
        assert dataset.nodata == processors.FORCE_NODATA
        east = dataset.bounds.right > 180  # across the antimeridian the VRT's longitudes run past 180°
        for cell, path in cells:
            lon = cell.lon + 0.5 + (360 if east and cell.lon < 0 else 0)
            (value,) = next(dataset.sample([(lon, cell.lat + 0.5)]))
            if path is None:
                assert value == processors.FORCE_NODATA, cell
                continue
            with rasterio.open(path) as geocell:
                (expected,) = next(geocell.sample([(cell.lon + 0.5, cell.lat + 0.5)]))
            assert value == expected, cell
    assert any(path is None for _, path in cells) == (tile == "58CEV")


def test_a_force_vrt_in_the_dem_folder_names_its_geocells_relative_to_it_and_moves_with_it(tmp_path):
    folder = tmp_path / "dem"
    folder.mkdir()
    cells = tile_geocells("32UMA", folder)
    vrt = folder / "MGRS_T32UMA.vrt"
    vrt.write_text(processors.force_vrt(cells, vrt, folder))
    names = re.findall(r'<SourceFilename relativeToVRT="1">([^<]+)</SourceFilename>', vrt.read_text())
    assert sorted(names) == sorted(path.name for _, path in cells)
    moved = folder.rename(tmp_path / "elsewhere")
    cell, path = cells[0]
    with rasterio.open(moved / vrt.name) as dataset, rasterio.open(moved / path.name) as geocell:
        point = [(cell.lon + 0.5, cell.lat + 0.5)]
        assert next(dataset.sample(point)) == next(geocell.sample(point))


def test_the_shaded_relief_lights_north_west_slopes_and_paints_sea_in_one_colour():
    x = np.arange(200, dtype=np.float64)
    heights = np.tile(np.where(x < 100, x * 20.0, (199 - x) * 20.0), (200, 1))  # a ridge running north-south
    sea = np.zeros(heights.shape, dtype=bool)
    sea[:, :10] = True
    rgb = processors.relief(heights.astype(np.float32), sea, 100.0)
    assert rgb.shape == (3, 200, 200) and rgb.dtype == np.uint8
    assert (rgb[:, :, :10] == np.array(processors.SEA_COLOUR, dtype=np.uint8)[:, None, None]).all()
    west_face, east_face = rgb[:, :, 50].astype(int).sum(), rgb[:, :, 150].astype(int).sum()
    assert west_face > east_face * 1.3  # the sun is in the north-west
    rgb = processors.relief(heights.T.astype(np.float32), np.zeros(heights.shape, dtype=bool), 100.0)  # east-west
    north_face, south_face = rgb[:, 50, :].astype(int).sum(), rgb[:, 150, :].astype(int).sum()
    assert north_face > south_face * 1.3


def plan_of(tiles: dict[str, list[tuple[Geocell, Path | None]]]):
    """A run's plan of these tiles and geocells, each geocell still to download."""
    plans = [TilePlan(Entry(tile, "test", None, tile), tile, "computed", [c for c, _ in cells])
             for tile, cells in tiles.items()]
    return start_plan(plans, lambda cell: cell.dem_file_name(90, "DGED"), lambda name: None)


def test_a_tiles_outputs_start_as_soon_as_its_last_geocell_lands(tmp_path):
    folder = tmp_path / "dem"
    folder.mkdir()
    tiles = {"32UMA": tile_geocells("32UMA", folder), "33KWP": tile_geocells("33KWP", folder)}
    plan = plan_of(tiles)
    outputs = processors.Outputs(force=tmp_path / "F", quicklook=tmp_path / "Q")
    builder = processors.Builder(outputs, plan, folder)
    first, *rest = tiles["32UMA"]
    for cell, _ in rest:  # landed, but the tile is not whole yet
        plan.cells[cell].status = Status.DOWNLOADED
        builder.cell_landed(cell)
    assert builder._futures == []
    plan.cells[first[0]].status = Status.DOWNLOADED
    builder.cell_landed(first[0])  # the last one
    (started,) = builder._futures
    started.result(timeout=60)
    assert sorted(p.name for p in tmp_path.glob("[FQ]/*")) == ["MGRS_T32UMA.vrt", "T32UMA_DEM.png"]
    assert all(plan.cells[c].status == Status.PLANNED for c, _ in tiles["33KWP"])  # still downloading
    assert set(builder.finish()) == {"32UMA"}


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the damaged file's, at its opening
def test_a_failed_output_keeps_the_file_there_and_leaves_no_temporary(tmp_path, caplog):
    folder = tmp_path / "dem"
    folder.mkdir()
    cells = tile_geocells("32UMA", folder)
    damaged = cells[0][1]
    damaged.write_bytes(damaged.read_bytes()[:2000])  # cut short: GDAL cannot read it
    plan = plan_of({"32UMA": cells})
    for state in plan.cells.values():
        state.status = Status.PRESENT
    outputs = processors.Outputs(sen2like=tmp_path / "s2l", resolution=90, dataset="COP-DEM_GLO-90-DGED__2024_1")
    (target,) = outputs.paths("32UMA").values()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"an earlier sen2like file")
    os.utime(target, ns=(1, 1))  # older than every geocell: to be made again
    builder = processors.Builder(outputs, plan, folder)
    builder.offer_complete()
    (result,) = builder.finish().values()
    assert result.states == {processors.Kind.SEN2LIKE: processors.FAILED}
    assert target.read_bytes() == b"an earlier sen2like file"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    (message,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert str(target) in message and "32UMA" in message and "\n" not in message


# --- through the command line, against the simulator ----------------------------------------------

MUST_SHOW = ("33TTG", "01WCQ", "32TNM")  # 32TNM: one of its geocells is open sea (N41_E010)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of the issue's command, ``--t 33TTG --t 01WCQ`` (and a coastal tile) with the three
    outputs; the real cell lists decide which geocells the simulator has."""
    from simulator import SimulatorConfig, start_simulator

    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent: the simulator knows 33TTG's geocells from it")

    base = tmp_path_factory.mktemp("run")
    with start_simulator(SimulatorConfig(cache_dir=tmp_path_factory.getbasetemp() / "sim-cache")) as sim:
        args = [a for tile in MUST_SHOW for a in ("--t", tile)]
        result = run_cli(*args, "--o", base / "dem", "--sen2like", base / "D", "--force", base / "F",
                         "--quicklook", base / "Q", "--summary-json", base / "summary.json", env=cli_env(sim))
        yield base, result, sim


def test_must_show_33ttg_sen2like_file_and_the_configuration_lines(run, real_kml):
    base, result, _ = run
    assert result.returncode == 0, result.output
    tif = base / "D" / "COP-DEM_GLO-90-DGED__2024_1" / "Copernicus_DSM_90m_33TTG.TIF"
    epsg, envelope = kml_square(real_kml, "33TTG")
    with rasterio.open(tif) as dataset:
        assert (dataset.dtypes, dataset.crs.to_epsg(), dataset.width, dataset.height) == (("int16",), 32633, 1220, 1220)
        assert epsg == 32633 and tuple(dataset.bounds) == envelope
    assert_heights_agree(tif, tile_cells_in(base / "dem", "33TTG"), sample_points(200, seed=3))
    info = log_messages(result.stderr, "INFO")
    assert "For sen2like, set these three lines in the [DEMRepository] section of its config.ini:" in info
    assert [line.strip() for line in info[info.index(
        "For sen2like, set these three lines in the [DEMRepository] section of its config.ini:") + 1:][:3]] == [
        f"dem_folder = {base / 'D'}", "dem_dataset = COP-DEM_GLO-90-DGED__2024_1", "src_dem_resolution = 90"]
    forced = info.index("For FORCE, set these three parameters in its Level-2 parameter file:")
    assert [line.strip() for line in info[forced + 1:forced + 4]] == [
        f"FILE_DEM = {base / 'F'}", "USE_DEM_DATABASE = TRUE", "DEM_NODATA = -32767"]


def tile_cells_in(folder: Path, tile: str) -> list[tuple[Geocell, Path | None]]:
    """The tile's geocells with their files in a folder a run filled (None: not there, open sea)."""
    files = [(cell, folder / cell.dem_file_name(90, "DGED")) for cell in planned_geocells(tile)]
    return [(cell, path if path.exists() else None) for cell, path in files]


def test_must_show_01wcq_has_no_seam_and_no_zeros_where_the_simulator_served_land(run):
    base, _, _ = run
    cells = tile_cells_in(base / "dem", "01WCQ")
    assert {c.grid_id for c, p in cells if p is not None} >= {"N66_W180", "N66_E179", "N67_W180", "N67_E179"}
    tif = base / "D" / "COP-DEM_GLO-90-DGED__2024_1" / "Copernicus_DSM_90m_01WCQ.TIF"
    with rasterio.open(tif) as dataset:
        assert (dataset.read(1) == 0).sum() == 0
    assert assert_heights_agree(tif, cells, sample_points(200, seed=5)) == 200


def test_must_show_the_force_vrt_of_33ttg_returns_the_geocells_heights_at_their_centres(run):
    base, _, _ = run
    with rasterio.open(base / "F" / "MGRS_T33TTG.vrt") as vrt:
        assert vrt.crs.to_epsg() == 4326 and vrt.nodata == -32767
        for cell, path in tile_cells_in(base / "dem", "33TTG"):
            with rasterio.open(path) as geocell:
                for lon, lat in ((cell.lon + 0.5, cell.lat + 0.5), (cell.lon + 0.25, cell.lat + 0.8)):
                    assert next(vrt.sample([(lon, lat)])) == next(geocell.sample([(lon, lat)]))


def test_sea_is_0_in_the_sen2like_file_and_nodata_in_the_force_vrt(run):
    base, _, _ = run
    sea = Geocell(41, 10)
    assert (sea, None) in tile_cells_in(base / "dem", "32TNM")
    with rasterio.open(base / "F" / "MGRS_T32TNM.vrt") as vrt:
        assert next(vrt.sample([(10.5, 41.5)]))[0] == -32767
    with rasterio.open(base / "D" / "COP-DEM_GLO-90-DGED__2024_1" / "Copernicus_DSM_90m_32TNM.TIF") as dataset:
        x, y = Transformer.from_crs(4326, dataset.crs, always_xy=True).transform(10.8, 41.5)
        assert next(dataset.sample([(x, y)]))[0] == 0


def test_must_show_a_quicklook_png_per_tile_with_relief_and_sea_in_one_colour(run):
    base, _, _ = run
    sea_colour = np.array(processors.SEA_COLOUR, dtype=np.uint8)[:, None]
    for tile in MUST_SHOW:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture
            png = rasterio.open(base / "Q" / f"T{tile}_DEM.png")
        with png:
            assert (png.driver, png.count, png.width, png.height) == ("PNG", 3, 1000, 1000)
            rgb = png.read().reshape(3, -1)
        is_sea = (rgb == sea_colour).all(axis=0)
        colours = (rgb[0].astype(np.uint32) << 16) | (rgb[1].astype(np.uint32) << 8) | rgb[2]
        assert len(np.unique(colours[~is_sea])) > 500  # shaded terrain, not a flat picture
        assert is_sea.any() == (tile == "32TNM")


def test_the_summary_json_names_each_tiles_outputs(run):
    base, _, _ = run
    summary = json.loads((base / "summary.json").read_text())
    for tile in summary["tiles"]:
        name = tile["tile"]
        assert tile["outputs"] == {
            "sen2like": str(base / "D" / "COP-DEM_GLO-90-DGED__2024_1" / f"Copernicus_DSM_90m_{name}.TIF"),
            "force": str(base / "F" / f"MGRS_T{name}.vrt"), "quicklook": str(base / "Q" / f"T{name}_DEM.png")}


def test_must_show_a_second_run_rewrites_nothing_and_a_replaced_geocell_rebuilds_only_its_tiles(run, tmp_path):
    base, _, sim = run
    outputs = {"sen2like": base / "D", "force": base / "F", "quicklook": base / "Q"}
    files = sorted(p for folder in outputs.values() for p in folder.rglob("*") if p.is_file())
    assert len(files) == 9
    before = {p: p.stat().st_mtime_ns for p in files}
    again = run_cli(*[a for tile in MUST_SHOW for a in ("--t", tile)], "--o", base / "dem",
                    *[a for kind, folder in outputs.items() for a in (f"--{kind}", folder)], env=cli_env(sim))
    assert again.returncode == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert "  sen2like: 0 written, 3 up to date" in again.stdout

    replaced = base / "dem" / "Copernicus_DSM_30_N66_00_W180_00_DEM.tif"  # a geocell of 01WCQ alone
    data = replaced.read_bytes()
    replaced.unlink()
    replaced.write_bytes(data)
    import cdse_dem  # a check needs no credentials, and makes the outputs too

    with pytest.MonkeyPatch.context() as patch:
        for name, value in sim.env.items():
            patch.setenv(name, value)
        result = cdse_dem.check(list(MUST_SHOW), base / "dem", **outputs)
    assert result.ready
    changed = sorted(p.name for p in files if p.stat().st_mtime_ns != before[p])
    assert changed == ["Copernicus_DSM_90m_01WCQ.TIF", "MGRS_T01WCQ.vrt", "T01WCQ_DEM.png"]
    assert {t.tile: set(t.output_states.values()) for t in result.tiles} == {
        "33TTG": {"up to date"}, "01WCQ": {"written"}, "32TNM": {"up to date"}}


# --- refused before any work -----------------------------------------------------------------------

WITHOUT_RASTERIO = ROOT / "tests" / "cli_without_rasterio.py"


def test_without_rasterio_an_output_exits_2_with_the_install_line_before_any_download(sim, tool_home, tmp_path):
    result = run_cli("--t", "32UMA", "--sen2like", tmp_path / "D", env=cli_env(sim), entry=WITHOUT_RASTERIO)
    assert result.returncode == 2, result.output
    (error,) = log_messages(result.stderr, "ERROR")
    assert error == ("--sen2like: needs rasterio (GDAL), which is not installed: "
                     "pip install 'cdse-copernicus-dem-downloader[processors]'")
    assert sim.request_log() == [] and not (tmp_path / "D").exists()
    plain = run_cli("--t", "32UMA", "--dry-run", env=cli_env(sim), entry=WITHOUT_RASTERIO)
    assert plain.returncode == 0, plain.output  # everything else works without it


@pytest.mark.parametrize("args, message", [
    (("--m", "DTED", "--sen2like", "{D}"), "--sen2like with --m DTED: sen2like's DEM is made from the DGED GeoTIFFs"),
    (("--dry-run", "--quicklook", "{D}"), "--dry-run writes nothing: it does not go with --quicklook"),
])
def test_an_output_that_cannot_be_made_is_refused_before_any_work(sim, tool_home, tmp_path, args, message):
    result = run_cli("--t", "32UMA", *[a.format(D=tmp_path / "D") for a in args], env=cli_env(sim))
    assert result.returncode == 2, result.output
    assert any(message in line for line in log_messages(result.stderr, "ERROR")), result.stderr
    assert sim.request_log() == []

