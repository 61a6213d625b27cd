"""Filling a gap: a GLO-30 file made from a GLO-90 product of the same cell (and back), without servers.

The source products are written by the simulator's own GeoTIFF and DTED writers (the files CDSE
serves, as it records them); what the fill writes is read back with tifffile, with GDAL (rasterio)
and with the DEM integrity check, as Sen2Cor and the tool itself read a folder.
"""

import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from cdse_dem import fetch
from cdse_dem.dem_folder import MAX_PRODUCT_BYTES, dem_problem
from cdse_dem.gapfill import FillError, fill_cell, resample
from cdse_dem.grid import Geocell
from cdse_dem.planning import CellState
from simulator.dted import dted_bytes
from simulator.geotiff import geotiff_bytes
from simulator.terrain import coarse_elevation, elevation

CELL = Geocell(40, 44)  # N40_E044: land that GLO-30 lacks (Armenia)


def source_zip(tmp_path, cell: Geocell, resolution: int, model: str = "DGED", *, compress: bool = False,
               named: Geocell | None = None):
    """A product zip laid out as CDSE's, whose DEM layer is ``cell``'s at ``resolution``; its heights."""
    rows = cols = 3601 if resolution == 30 else 1201
    if compress:  # the simulator's small size: a low-detail field, in DEFLATE strips
        field = coarse_elevation(cell.lat, cell.lon, rows, cols, seed=7)
        heights = field.expand()
    else:
        field = heights = elevation(cell.lat, cell.lon, rows, cols, seed=7)
    name = (named or cell).name(resolution)
    if model == "DGED":
        layer = geotiff_bytes(field, cell.lon, cell.lat + 1, 1 / (cols - 1), 1 / (rows - 1), compress=compress)
        member = f"{name}/DEM/{name}_DEM.tif"
    else:
        layer = dted_bytes(heights, cell.lat, cell.lon, 1 if resolution == 90 else 2)
        member = f"{name}/DEM/{name}_DEM.{'dt1' if resolution == 90 else 'dt2'}"
    path = tmp_path / f"{name}-{model}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"DEM1_SAR_DGE_{resolution}_X/{name}/PREVIEW/{name}_DEM_QL.tif", b"not the DEM")
        archive.writestr(f"DEM1_SAR_DGE_{resolution}_X/{member}", layer)
    return path, heights


def test_bilinear_takes_the_coarse_posts_as_they_are_and_stays_within_their_range_between():
    coarse = np.array([[0.0, 30.0, 30.0], [90.0, -3.0, 12.5], [7.0, 7.0, 1e4]], dtype=np.float32)
    fine = resample(coarse, 7, 7)
    assert fine.dtype == np.float32 and fine.shape == (7, 7)
    assert np.array_equal(fine[::3, ::3], coarse)
    assert fine[0, 1] == pytest.approx(10.0) and fine[1, 0] == pytest.approx(30.0)  # a third of the way
    for i in range(6):
        for j in range(6):  # every fine post within the range of the four coarse posts around it
            block = coarse[i // 3:i // 3 + 2, j // 3:j // 3 + 2]
            assert block.min() <= fine[i, j] <= block.max()


def test_whole_metres_are_interpolated_and_rounded_and_every_third_post_goes_back():
    coarse = np.array([[0, 3], [-6, 10]], dtype=np.int16)
    fine = resample(coarse, 4, 4)
    assert fine.dtype == np.int16 and fine.tolist()[0] == [0, 1, 2, 3]
    assert np.array_equal(resample(fine, 2, 2), coarse)
    with pytest.raises(FillError, match="cannot be resampled"):
        resample(coarse, 5, 5)


def test_a_glo30_geotiff_filled_from_glo90_is_a_whole_dem_of_the_cell_with_the_coarse_heights(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    source, coarse = source_zip(tmp_path, CELL, 90)
    out = tmp_path / "dem"
    out.mkdir()
    name = "Copernicus_DSM_10_N40_00_E044_00_DEM.tif"
    path = fill_cell(source, out, name, CELL, 30)
    assert path == out / name and sorted(p.name for p in out.iterdir()) == [name]
    assert dem_problem(path) is None
    with rasterio.open(path) as filled, rasterio.open(f"zip://{source}!/DEM1_SAR_DGE_90_X/"
                                                      f"{CELL.name(90)}/DEM/{CELL.name(90)}_DEM.tif") as real:
        heights = filled.read(1)
        assert (filled.height, filled.width, filled.count, filled.dtypes[0]) == (3601, 3601, 1, "float32")
        assert filled.crs.to_epsg() == real.crs.to_epsg() == 4326
        assert filled.tags()["AREA_OR_POINT"] == real.tags()["AREA_OR_POINT"] == "Point"
        assert filled.bounds.left == pytest.approx(44 - 0.5 / 3600)  # pixel-is-point: the posts on the edges
        assert filled.bounds.top == pytest.approx(41 + 0.5 / 3600)
        assert filled.res == pytest.approx((1 / 3600, 1 / 3600))
        assert np.array_equal(heights[::3, ::3], real.read(1))
    assert np.array_equal(heights[::3, ::3], coarse)
    with tifffile.TiffFile(path) as tif:  # as CDSE's: uncompressed, one row per strip
        assert (tif.pages.first.compression, tif.pages.first.rowsperstrip) == (1, 1)
    assert coarse.min() <= heights.min() and heights.max() <= coarse.max()
    assert not np.array_equal(heights[1::3, 1::3], heights[::3, ::3][:-1, :-1])  # interpolated, not repeated


def test_a_compressed_source_gives_a_compressed_fill_and_a_glo90_from_glo30_takes_every_third_post(tmp_path):
    source, fine = source_zip(tmp_path, CELL, 30, compress=True)
    path = fill_cell(source, tmp_path, CELL.dem_file_name(90, "DGED"), CELL, 90)
    assert dem_problem(path) is None
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.compression == 8 and page.shape == (1201, 1201)
        assert np.array_equal(page.asarray(), fine[::3, ::3])


def test_a_dted_level_2_filled_from_level_1_has_its_headers_and_checksums(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    cell = Geocell(55, 44)  # 50° to 60°: fewer columns than rows (801 at 90 m, 2401 at 30 m)
    rows, cols = 1201, 801
    coarse = elevation(cell.lat, cell.lon, rows, cols, seed=3)
    source = tmp_path / "source.zip"
    name90 = cell.name(90)
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr(f"X/{name90}/DEM/{name90}_DEM.dt1", dted_bytes(coarse, cell.lat, cell.lon, 1))
    name = cell.dem_file_name(30, "DTED")
    path = fill_cell(source, tmp_path, name, cell, 30)
    assert name.endswith(".dt2") and dem_problem(path) is None
    head = path.read_bytes()[:80 + 648]
    assert head[20:28] == b"00150010"  # 1.5" between columns, 1" between rows
    assert head[47:55] == b"24013601" and head[80 + 59:80 + 64] == b"DTED2"
    with rasterio.open(path) as filled:
        heights = filled.read(1)
        assert (filled.height, filled.width) == (3601, 2401)
        assert filled.bounds.left == pytest.approx(44 - 0.5 * 1.5 / 3600)
    assert np.array_equal(heights[::3, ::3], np.rint(coarse).astype(heights.dtype))


def test_a_source_of_another_cell_is_refused_and_leaves_no_file(tmp_path):
    source, _ = source_zip(tmp_path, CELL, 90, named=Geocell(41, 44))
    out = tmp_path / "dem"
    out.mkdir()
    with pytest.raises(FillError, match="not a DEM of N40_E044"):
        fill_cell(source, out, CELL.dem_file_name(30, "DGED"), CELL, 30)
    assert list(out.iterdir()) == []


def test_a_dted_source_cannot_make_a_geotiff(tmp_path):
    source, _ = source_zip(tmp_path, CELL, 90, "DTED")
    with pytest.raises(FillError, match="not the GeoTIFF"):
        fill_cell(source, tmp_path, CELL.dem_file_name(30, "DGED"), CELL, 30)
    assert not (tmp_path / CELL.dem_file_name(30, "DGED")).exists()


def test_a_source_whose_pixel_scale_is_not_finite_is_refused_before_anything_is_written(tmp_path):
    rows = cols = 1201
    heights = elevation(CELL.lat, CELL.lon, rows, cols, seed=7)
    name = CELL.name(90)
    source = tmp_path / "source.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr(f"DEM1_SAR_DGE_90_X/{name}/DEM/{name}_DEM.tif",
                         geotiff_bytes(heights, CELL.lon, CELL.lat + 1, float("nan"), 1 / (rows - 1)))
    out = tmp_path / "dem"
    out.mkdir()
    with pytest.raises(FillError, match="tag 33550 is not 3 finite numbers"):
        fill_cell(source, out, CELL.dem_file_name(30, "DGED"), CELL, 30)
    assert list(out.iterdir()) == []


def test_a_fill_source_s_zip_is_capped_by_its_own_resolution_not_the_file_s(tmp_path, monkeypatch):
    """A GLO-90 gap filled from a GLO-30 product: its zip (~9 times a GLO-90 one) may be a GLO-30 zip's size."""
    caps = []
    monkeypatch.setattr(fetch, "download_product", lambda *args, max_bytes, **kwargs: caps.append(max_bytes))
    fetcher = fetch.Fetcher(open_session=None, http=None, endpoints=None, out_dir=tmp_path, cache=None, workers=1)
    for source in (30, 90, None):  # None: a product whose type says no resolution goes by the file's
        product = SimpleNamespace(id=f"p{source}", resolution=source)
        fetcher._fetch(CellState(CELL, CELL.dem_file_name(90, "DGED"), product=product, fill_from="other"))
    assert caps == [MAX_PRODUCT_BYTES[30], MAX_PRODUCT_BYTES[90], MAX_PRODUCT_BYTES[90]]
