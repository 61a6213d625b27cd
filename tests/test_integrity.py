"""The DEM integrity check: whole DEMs of the named cell pass, anything else is named.

Files are written by GDAL (through rasterio) and by the simulator's own writers, so the check
is tested against real GeoTIFF/DTED producers, not against itself.
"""

from pathlib import Path

import numpy as np
import pytest

from cdse_dem.dem_folder import dem_problem, expected_shape
from cdse_dem.grid import Geocell

rasterio = pytest.importorskip("rasterio")


def _gdal_geotiff(path: Path, cell: Geocell, rows: int, cols: int, **profile) -> Path:
    """A DEM GeoTIFF as GDAL writes it: first sample on the cell's north-west corner."""
    from rasterio.transform import from_origin

    dx, dy = 1 / (cols - 1), 1 / (rows - 1)
    transform = from_origin(cell.lon - dx / 2, cell.lat + 1 + dy / 2, dx, dy)
    data = np.linspace(100, 900, rows * cols, dtype=np.float32).reshape(rows, cols)
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1, dtype="float32",
                       crs="EPSG:4326", transform=transform, **profile) as dst:
        dst.write(data, 1)
    return path


def _sim_geotiff(path: Path, cell: Geocell, rows: int, cols: int) -> Path:
    from simulator.geotiff import geotiff_bytes

    data = np.full((rows, cols), 250.0, dtype=np.float32)
    path.write_bytes(geotiff_bytes(data, cell.lon, cell.lat + 1, 1 / (cols - 1), 1 / (rows - 1)))
    return path


def _sim_dted(path: Path, cell: Geocell, rows: int, cols: int, level: int) -> Path:
    from simulator.dted import dted_bytes

    heights = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols) % 700
    path.write_bytes(dted_bytes(heights, cell.lat, cell.lon, level))
    return path


@pytest.mark.parametrize(("lat", "resolution", "shape"), [
    (49, 90, (1201, 1201)), (50, 90, (1201, 801)), (-51, 90, (1201, 801)), (-50, 90, (1201, 1201)),
    (69, 30, (3601, 1801)), (84, 30, (3601, 721)), (89, 90, (1201, 121)), (-90, 30, (3601, 361)),
])
def test_expected_shape_follows_the_product_handbook(lat, resolution, shape):
    assert expected_shape(Geocell(lat, 7), resolution) == shape


def test_a_gdal_geotiff_of_the_named_cell_passes(tmp_path):
    path = _gdal_geotiff(tmp_path / "Copernicus_DSM_30_N50_00_E007_00_DEM.tif", Geocell(50, 7), 1201, 801)
    assert dem_problem(path) is None


def test_a_compressed_tiled_geotiff_passes(tmp_path):
    path = _gdal_geotiff(tmp_path / "Copernicus_DSM_30_S26_00_W112_00_DEM.tif", Geocell(-26, -112), 1201, 1201,
                         compress="deflate", tiled=True, blockxsize=256, blockysize=256)
    assert dem_problem(path) is None


def test_the_simulators_geotiff_passes(tmp_path):
    path = _sim_geotiff(tmp_path / "Copernicus_DSM_30_N43_00_E002_00_DEM.tif", Geocell(43, 2), 1201, 1201)
    assert dem_problem(path) is None


@pytest.mark.parametrize("keep", [100, 5_000, 2_000_000, -1])
def test_a_truncated_geotiff_is_named_truncated_or_unreadable(tmp_path, keep):
    whole = _sim_geotiff(tmp_path / "whole.tif", Geocell(43, 2), 1201, 1201).read_bytes()
    path = tmp_path / "Copernicus_DSM_30_N43_00_E002_00_DEM.tif"
    path.write_bytes(whole[:keep])
    problem = dem_problem(path)
    assert problem is not None
    assert "truncated" in problem or "not a readable GeoTIFF" in problem


@pytest.mark.parametrize(("content", "words"), [
    (b"", "empty"),
    (b"<html><body>502 Bad Gateway</body></html>", "not a readable GeoTIFF"),
    (b"PK\x03\x04" + b"\0" * 200, "not a readable GeoTIFF"),
])
def test_a_file_that_is_no_geotiff_is_rejected(tmp_path, content, words):
    path = tmp_path / "Copernicus_DSM_30_N43_00_E002_00_DEM.tif"
    path.write_bytes(content)
    assert words in dem_problem(path)


def test_another_cells_raster_under_this_name_is_rejected(tmp_path):
    other = _gdal_geotiff(tmp_path / "x.tif", Geocell(44, 2), 1201, 1201)
    path = other.rename(tmp_path / "Copernicus_DSM_30_N43_00_E002_00_DEM.tif")
    assert "not on N43_E002" in dem_problem(path)


def test_a_raster_of_the_wrong_size_is_rejected(tmp_path):
    path = _gdal_geotiff(tmp_path / "Copernicus_DSM_30_N43_00_E002_00_DEM.tif", Geocell(43, 2), 61, 61)
    assert dem_problem(path) == "a 61×61 raster (a N43_E002 cell at 90 m is 1201×1201)"


def test_a_30m_name_holding_a_90m_raster_is_rejected(tmp_path):
    path = _gdal_geotiff(tmp_path / "Copernicus_DSM_10_N43_00_E002_00_DEM.tif", Geocell(43, 2), 1201, 1201)
    assert "3601×3601" in dem_problem(path)


def test_a_plain_tiff_without_georeferencing_is_rejected(tmp_path):
    import tifffile

    path = tmp_path / "Copernicus_DSM_30_N43_00_E002_00_DEM.tif"
    tifffile.imwrite(path, np.zeros((1201, 1201), dtype=np.float32))
    assert "not a GeoTIFF" in dem_problem(path)


def test_a_missing_file_and_a_folder_are_named(tmp_path):
    assert dem_problem(tmp_path / "Copernicus_DSM_30_N43_00_E002_00_DEM.tif") == "missing"
    folder = tmp_path / "Copernicus_DSM_30_N44_00_E002_00_DEM.tif"
    folder.mkdir()
    assert dem_problem(folder) == "not a regular file"


def test_a_whole_dted_passes_and_is_read_by_gdal(tmp_path):
    path = _sim_dted(tmp_path / "Copernicus_DSM_30_N50_00_E007_00_DEM.dt1", Geocell(50, 7), 1201, 801, 1)
    assert dem_problem(path) is None
    with rasterio.open(path) as src:
        assert (src.height, src.width) == (1201, 801)


def test_a_truncated_or_damaged_dted_is_rejected(tmp_path):
    path = _sim_dted(tmp_path / "Copernicus_DSM_30_S09_00_E026_00_DEM.dt1", Geocell(-9, 26), 1201, 1201, 1)
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])
    assert "a whole S09_E026 DTED is" in dem_problem(path)
    damaged = bytearray(whole)
    damaged[4000] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert "fails its checksum" in dem_problem(path)
    path.write_bytes(b"UHL1" + b" " * 5000)
    assert "not a DTED file" in dem_problem(path)


def test_a_dted_of_another_cell_or_level_is_rejected(tmp_path):
    other = _sim_dted(tmp_path / "x.dt1", Geocell(-10, 26), 1201, 1201, 1)
    path = other.rename(tmp_path / "Copernicus_DSM_30_S09_00_E026_00_DEM.dt1")
    assert "not S09_E026" in dem_problem(path)
    wrong_level = path.rename(tmp_path / "Copernicus_DSM_30_S09_00_E026_00_DEM.dt2")
    assert dem_problem(wrong_level) == "a .dt2 file at 90 m (expected .dt1)"


@pytest.mark.parametrize("keep", [None, 3_000_000, 300])
def test_a_node_file_under_its_temporary_name_is_checked_as_the_format_given(tmp_path, keep):
    """A file from the Nodes API is checked before its rename: the temporary name says nothing."""
    whole = _sim_geotiff(tmp_path / "whole.tif", Geocell(43, 2), 1201, 1201).read_bytes()
    temp = tmp_path / ".Copernicus_DSM_30_N43_00_E002_00_DEM.tif.123-abcdef01.cdse-tmp"
    temp.write_bytes(whole if keep is None else whole[:keep])
    assert "not a DEM file type" in dem_problem(temp, resolution=90, cell=Geocell(43, 2))
    problem = dem_problem(temp, resolution=90, cell=Geocell(43, 2), suffix=".tif")
    if keep is None:
        assert problem is None
    else:  # cut in the image data, or inside the header (before the strip offsets are whole)
        assert problem in ("truncated (3,000,000 bytes: image data reaches past the end)",
                           "a TIFF without image data")
