"""Sen2Cor's DEM step, done with rasterio on folders the command line filled: does a tile get terrain?

This guards the tool's whole promise in our own terms. ``../shared/docs/sen2cor.md`` says what
Sen2Cor does with a DEM folder, and :func:`sen2cor_dem_step` does the same:

1. it asks for every cell of the lon/lat rectangle around the tile's four UTM corners (restated
   here from sen2cor.md, independently of ``cdse_dem.sen2cor``), by file name;
2. a cell its missing-tiles list names is skipped before the folder is looked at (zero heights
   there); a cell neither on the list nor in the folder fails the whole step: flat terrain;
3. the cells found are mosaicked in EPSG:4326 (bilinear, Int16), and the mosaic warped to the
   tile's UTM grid (cubic spline); no cell at all is "No DEM files found.": flat terrain.

Each folder is filled by the real command line from the simulator, which serves the real cell
lists; the missing-tiles list names only cells no Copernicus DEM dataset has (open sea). The
warped DEM must hold heights wherever the simulator served land in a cell Sen2Cor asked for.
"""

import numpy as np
import pytest

from cdse_dem.grid import utm_tile
from tests.helpers import ROOT, cli_env, run_cli
from tests.test_kml_all_tiles import SIDE, KmlTile, _rectangles_as_sen2cor_md_states_them

rasterio = pytest.importorskip("rasterio")
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import Affine, from_origin  # noqa: E402
from rasterio.warp import Resampling, reproject  # noqa: E402

CELLS = ROOT.parent / "shared" / "data"
MOSAIC_STEP = 1 / 1200  # degrees: 3", GLO-90's spacing (30 m cells are mosaicked at it too, to stay quick)
TILE_STEP = 300  # metres: the tile's UTM grid (Sen2Cor's is 20 m or 60 m; coarser here, to stay quick)
EDGE = 0.02  # degrees: pixels this near a cell's edge may blend with a sea neighbour; not judged


class DemStepFailed(AssertionError):
    """Where Sen2Cor gives up on the DEM and processes the tile with flat terrain."""


def grid_id(lat: int, lon: int) -> str:
    return f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}_{'E' if lon >= 0 else 'W'}{abs(lon):03d}"


def file_name(lat: int, lon: int, resolution: int) -> str:
    code = "10" if resolution == 30 else "30"
    lat_id, lon_id = grid_id(lat, lon).split("_")
    return f"Copernicus_DSM_{code}_{lat_id}_00_{lon_id}_00_DEM.tif"


def sen2cor_rectangle(tile: str) -> list[tuple[int, int]]:
    """The (lat, lon) cells Sen2Cor asks for (sen2cor.md's rule, as test_kml_all_tiles restates it)."""
    utm = utm_tile(tile)
    square = KmlTile(tile, utm.epsg, utm.x_min, utm.y_max, SIDE, SIDE, [])
    return sorted(_rectangles_as_sen2cor_md_states_them({tile: square})[tile])


def sen2cor_dem_step(folder, tile: str, resolution: int, missing_list: set[str]):
    """The tile's DEM on its UTM grid (``TILE_STEP`` m), and each pixel's lon/lat; DemStepFailed where
    Sen2Cor would go flat."""
    cells = sen2cor_rectangle(tile)
    used = []
    for lat, lon in cells:
        name = file_name(lat, lon, resolution)
        if name in missing_list:
            continue  # skipped before the folder is looked at
        if not (folder / name).is_file():
            raise DemStepFailed(f"{name} is neither in the folder nor on the missing-tiles list: flat terrain")
        used.append((lat, lon, folder / name))
    if not used:
        raise DemStepFailed("No DEM files found.")
    across = max(lon for _, lon in cells) - min(lon for _, lon in cells) >= 180

    def east_of_180(lon: float) -> float:  # across ±180° the mosaic runs on past 180° (PROJ's lon_wrap)
        return lon + 360 if across and lon < 0 else lon

    crs = CRS.from_proj4("+proj=longlat +datum=WGS84 +lon_wrap=180 +no_defs") if across else CRS.from_epsg(4326)
    west = min(east_of_180(lon) for _, lon in cells)
    east = max(east_of_180(lon) for _, lon in cells) + 1
    south, north = min(lat for lat, _ in cells), max(lat for lat, _ in cells) + 1
    mosaic = np.zeros((round((north - south) / MOSAIC_STEP), round((east - west) / MOSAIC_STEP)), dtype=np.int16)
    where = from_origin(west, north, MOSAIC_STEP, MOSAIC_STEP)
    for _, lon, path in used:
        with rasterio.open(path) as cell:
            # a 30 m cell read at GLO-90's posts first (a third of its rows and columns): the mosaic's step
            thirds = resolution == 30
            shape = ((cell.height - 1) // 3 + 1, (cell.width - 1) // 3 + 1) if thirds else (cell.height, cell.width)
            heights = cell.read(1, out_shape=shape)
            placed = (Affine.translation(east_of_180(lon) - lon, 0) @ cell.transform
                      @ Affine.scale(cell.width / shape[1], cell.height / shape[0]))
            part = np.zeros_like(mosaic)
            reproject(heights, part, src_transform=placed, src_crs=crs, dst_transform=where, dst_crs=crs,
                      resampling=Resampling.bilinear, dst_nodata=0)
            mosaic = np.where(part != 0, part, mosaic)
    utm = utm_tile(tile)
    size = round(SIDE / TILE_STEP)
    dem = np.zeros((size, size), dtype=np.float32)
    reproject(mosaic, dem, src_transform=where, src_crs=crs, dst_transform=from_origin(utm.x_min, utm.y_max,
              TILE_STEP, TILE_STEP), dst_crs=CRS.from_epsg(utm.epsg), resampling=Resampling.cubic_spline)
    from pyproj import Transformer

    centres = (np.arange(size) + 0.5) * TILE_STEP
    x, y = np.meshgrid(utm.x_min + centres, utm.y_max - centres)
    lon, lat = Transformer.from_crs(utm.epsg, 4326, always_xy=True).transform(x, y)
    return dem, lon, lat


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A simulator serving the real cell lists, and the cells it has a product for (at either resolution)."""
    from simulator import SimulatorConfig, start_simulator

    if not (CELLS / "copdem_glo30_cells.txt").is_file():
        pytest.skip(f"the real cell lists in {CELLS} are absent")
    land = set()
    for name in ("copdem_glo30_cells.txt", "copdem_glo90_cells.txt"):
        land |= set((CELLS / name).read_text().split())
    sim = start_simulator(SimulatorConfig(cache_dir=tmp_path_factory.getbasetemp() / "sim-cache", cells_dir=CELLS))
    yield sim, land
    sim.stop()


def folder_for(served, tmp_path, tile: str, resolution: int, *options: str):
    sim, _ = served
    out = tmp_path / "dem"
    run_cli("--r", str(resolution), "--t", tile, "-o", out, *options, env=cli_env(sim))  # its exit status: not judged
    return out


def assert_sen2cor_finds_terrain(served, folder, tile: str, resolution: int) -> None:
    """Every cell Sen2Cor asks for is in the folder or (no DEM anywhere) on its list, and the warped
    DEM holds heights wherever the simulator served land in those cells."""
    _, land = served
    cells = sen2cor_rectangle(tile)
    missing_list = {file_name(lat, lon, resolution) for lat, lon in cells if grid_id(lat, lon) not in land}
    dem, lon, lat = sen2cor_dem_step(folder, tile, resolution, missing_list)
    cell_lon, cell_lat = np.floor(lon).astype(int), np.floor(lat).astype(int)
    asked = {(la, lo) for la, lo in cells if grid_id(la, lo) in land}
    on_land = np.array([(la, (lo + 180) % 360 - 180) in asked for la, lo in zip(cell_lat.ravel(), cell_lon.ravel(),
                                                                                 strict=True)]).reshape(dem.shape)
    inside = (lon % 1 > EDGE) & (lon % 1 < 1 - EDGE) & (lat % 1 > EDGE) & (lat % 1 < 1 - EDGE)
    judged = on_land & inside
    assert judged.sum() > 1000, "the tile should cover land the simulator serves"
    flat = judged & (dem <= 0)
    assert not flat.any(), f"{flat.sum()} of {judged.sum()} land pixels have no height"


def test_a_tile_across_the_antimeridian_gets_terrain_from_both_sides(served, tmp_path):
    tile = "01WCP"  # Chukotka: land in columns 178, 179 and -180
    assert {lon for _, lon in sen2cor_rectangle(tile)} == {-180, 178, 179}
    assert_sen2cor_finds_terrain(served, folder_for(served, tmp_path, tile, 90), tile, 90)


def test_a_tile_at_30m_gets_terrain(served, tmp_path):
    assert_sen2cor_finds_terrain(served, folder_for(served, tmp_path, "32UMA", 30), "32UMA", 30)


def test_a_tile_whose_gaps_were_filled_gets_terrain(served, tmp_path):
    folder = folder_for(served, tmp_path, "38TNL", 30, "--fill-gaps")
    assert_sen2cor_finds_terrain(served, folder, "38TNL", 30)


def test_without_fill_gaps_a_tile_with_gaps_would_go_flat(served, tmp_path):
    folder = folder_for(served, tmp_path, "38TNL", 30)
    with pytest.raises(DemStepFailed, match=r"Copernicus_DSM_10_N40_00_E044_00_DEM\.tif is neither in the folder"):
        assert_sen2cor_finds_terrain(served, folder, "38TNL", 30)
