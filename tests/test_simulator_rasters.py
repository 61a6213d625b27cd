"""Product zips of the simulator: their layout, and DEM layers that GDAL opens, georeferenced right."""

import hashlib
import io
import re
import threading
import zipfile

import numpy as np
import pytest
import rasterio
import requests

POINT = "OData.CSC.Intersects(area=geography'SRID=4326;POINT({lon} {lat})')"


def fetch(sim, collection, product_type, lon, lat, attribute="productType"):
    query = (f"Collection/Name eq '{collection}' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq "
             f"'{attribute}' and att/OData.CSC.StringAttribute/Value eq '{product_type}') and "
             + POINT.format(lon=lon, lat=lat))
    found = requests.get(f"{sim.catalogue_url}/Products", params={"$filter": query}, timeout=60).json()["value"]
    assert len(found) == 1, found
    token = requests.post(sim.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                               "username": "demo@example.com", "password": "demo"},
                          timeout=10).json()["access_token"]
    body = requests.get(f"{sim.download_url}/Products({found[0]['Id']})/$value",
                        headers={"Authorization": f"Bearer {token}"}, timeout=60).content
    return found[0], body


def dem_layer(body, tmp_path):
    archive = zipfile.ZipFile(io.BytesIO(body))
    names = [n for n in archive.namelist()
             if re.search(r"_DEM\.(tif|dt1|dt2)$", n) and "/PREVIEW/" not in n]
    assert len(names) == 1, archive.namelist()
    target = tmp_path / names[0].rsplit("/", 1)[1]
    target.write_bytes(archive.read(names[0]))
    return target


def check_cell(dataset, west, south):
    """Pixel-is-point rasters: the first and last samples sit on the cell's edges."""
    a, e = dataset.transform.a, dataset.transform.e
    assert a == pytest.approx(1 / (dataset.width - 1))
    assert e == pytest.approx(-1 / (dataset.height - 1))
    left, bottom, right, top = dataset.bounds
    assert left == pytest.approx(west - a / 2)
    assert right == pytest.approx(west + 1 + a / 2)
    assert top == pytest.approx(south + 1 - e / 2)
    assert bottom == pytest.approx(south + e / 2)
    assert dataset.crs.to_epsg() == 4326
    assert dataset.tags()["AREA_OR_POINT"] == "Point"


def test_dged_geotiff_is_float32_and_on_its_cell(sim, tmp_path):
    _, body = fetch(sim, "COP-DEM", "DGE_90", 7.5, 50.5)
    path = dem_layer(body, tmp_path)
    assert path.name == "Copernicus_DSM_30_N50_00_E007_00_DEM.tif"
    with rasterio.open(path) as ds:
        assert ds.driver == "GTiff"
        assert ds.dtypes == ("float32",)
        assert ds.width < ds.height  # above 50°N the columns thin out
        check_cell(ds, 7, 50)
        values = ds.read(1)
    assert np.isfinite(values).all()
    assert 0 < values.min() < values.max() < 9000
    assert values.std() > 10  # terrain-like, not flat


@pytest.mark.parametrize(("product_type", "suffix", "level", "lon", "lat"), [
    ("DTE_90", "dt1", "DTED1", -179.5, -16.5),
    ("DTE_30", "dt2", "DTED2", 8.5, 49.5),
])
def test_dted_opens_with_checksums_verified(sim, tmp_path, product_type, suffix, level, lon, lat):
    _, body = fetch(sim, "COP-DEM", product_type, lon, lat)
    path = dem_layer(body, tmp_path)
    assert path.suffix == f".{suffix}"
    with rasterio.Env(DTED_VERIFY_CHECKSUM="YES"), rasterio.open(path) as ds:
        assert ds.driver == "DTED"
        assert ds.tags()["DTED_NimaDesignator"] == level
        check_cell(ds, int(np.floor(lon)), int(np.floor(lat)))
        values = ds.read(1)
    assert values.dtype == np.int16
    assert values.std() > 10


def test_ccm_zip_layout_as_recorded(sim, tmp_path):
    product, body = fetch(sim, "CCM", "COP-DEM_GLO-90-DGED/2024_1", 8.5, 49.5, attribute="dataset")
    archive = zipfile.ZipFile(io.BytesIO(body))
    names = archive.namelist()
    root = product["Name"][: -len(".DEM")]  # hash included
    assert re.fullmatch(r"DEM1_SAR_DGE_90_\d{8}T\d{6}_\d{8}T\d{6}_ADS_000000_[A-Za-z0-9]{4}_[0-9a-f]{8}", root)
    assert all(n.startswith(root + "/") for n in names)
    relative = {n[len(root) + 1:] for n in names}
    top = {n for n in relative if "/" not in n}
    gsc = {n for n in top if re.fullmatch(r"GSC_CR_ESA_COP-DEM_GLO-90-DGED_\d{8}_\d{6}\.xml", n)}
    assert len(gsc) == 4 and top - gsc <= {"INSPIRE.xml"}
    cell = "Copernicus_DSM_30_N49_00_E008_00"
    layers = ["DEM", "EDM", "FLM", "HEM", "WBM", "SRC"]
    assert relative - top == {
        f"{cell}/{cell}.xml", f"{cell}/DEM/{cell}_DEM.tif",
        *(f"{cell}/AUXFILES/{cell}_{layer}.tif" for layer in ("EDM", "FLM", "WBM", "HEM")),
        f"{cell}/AUXFILES/{cell}_ACM.kml", f"{cell}/INFO/eula_F.pdf",
        *(f"{cell}/PREVIEW/{cell}_{layer}_QL.tif" for layer in layers),
        f"{cell}/PREVIEW/{cell}_QL.kml", f"{cell}/PREVIEW/{cell}_SRC.kml",
    }
    assert archive.read(f"{root}/{cell}/INFO/eula_F.pdf").startswith(b"%PDF")
    with rasterio.open(io.BytesIO(archive.read(f"{root}/{cell}/AUXFILES/{cell}_WBM.tif"))) as ds:
        check_cell(ds, 8, 49)
    with rasterio.open(io.BytesIO(archive.read(f"{root}/{cell}/AUXFILES/{cell}_HEM.tif"))) as ds:
        assert (ds.height, ds.width, ds.dtypes) == (1201, 1201, ("float32",))  # the DEM's raster


def test_the_inspire_file_is_there_sometimes(make_sim):
    sim = make_sim(duplicate_cells=())
    query = ("Collection/Name eq 'CCM' and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'gridId' and "
             "att/OData.CSC.StringAttribute/Value eq 'N49_E008') and contains(Name, '_90_')")
    found = requests.get(f"{sim.catalogue_url}/Products", params={"$filter": query, "$top": "100"},
                         timeout=60).json()["value"]
    token = requests.post(sim.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                               "username": "demo@example.com", "password": "demo"},
                          timeout=10).json()["access_token"]
    with_inspire = set()
    for product in found:
        body = requests.get(f"{sim.download_url}/Products({product['Id']})/$value",
                            headers={"Authorization": f"Bearer {token}"}, timeout=60).content
        names = zipfile.ZipFile(io.BytesIO(body)).namelist()
        with_inspire.add(f"{product['Name'][:-4]}/INSPIRE.xml" in names)
    assert with_inspire == {True, False}


@pytest.mark.parametrize(("product_type", "lon", "lat", "shape"), [
    ("DGE_30", 8.5, 49.5, (3601, 3601)), ("DGE_90", 7.5, 50.5, (1201, 801)),
    ("DTE_90", 8.5, 49.5, (1201, 1201)), ("DTE_30", 7.5, 50.5, (3601, 2401))])
def test_small_size_keeps_the_real_dimensions_in_small_files(sim, tmp_path, product_type, lon, lat, shape):
    product, body = fetch(sim, "COP-DEM", product_type, lon, lat)
    path = dem_layer(body, tmp_path)
    with rasterio.open(path) as ds:
        assert (ds.height, ds.width) == shape
        check_cell(ds, int(lon), int(lat))
        if ds.driver == "GTiff":
            assert ds.compression is not None and ds.compression.name.upper() == "DEFLATE"
            assert path.stat().st_size * 100 < shape[0] * shape[1] * 4
        values = ds.read(1)
    assert values.std() > 10
    assert product["ContentLength"] < 1_000_000


def test_cop_dem_zip_root_is_the_stem(sim):
    product, body = fetch(sim, "COP-DEM", "DGE_30", 8.5, 49.5)
    assert zipfile.ZipFile(io.BytesIO(body)).namelist()[0].split("/")[0] == product["Name"][: -len(".DEM")]


def test_neighbouring_cells_agree_on_their_shared_edge(sim, tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "e").mkdir()
    west = dem_layer(fetch(sim, "COP-DEM", "DGE_90", 7.5, 49.5)[1], tmp_path / "w")
    east = dem_layer(fetch(sim, "COP-DEM", "DGE_90", 8.5, 49.5)[1], tmp_path / "e")
    with rasterio.open(west) as w, rasterio.open(east) as e:
        np.testing.assert_allclose(w.read(1)[:, -1], e.read(1)[:, 0], rtol=1e-5)


def test_cells_on_either_side_of_the_antimeridian_agree_on_it_as_land_there_does(sim, tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "e").mkdir()
    west_of_180 = dem_layer(fetch(sim, "COP-DEM", "DGE_90", 179.5, 65.5)[1], tmp_path / "w")
    east_of_180 = dem_layer(fetch(sim, "COP-DEM", "DGE_90", -179.5, 65.5)[1], tmp_path / "e")
    with rasterio.open(west_of_180) as w, rasterio.open(east_of_180) as e:
        np.testing.assert_allclose(w.read(1)[:, -1], e.read(1)[:, 0], rtol=1e-5)


def test_realistic_sizes_are_the_real_dimensions(make_sim, tmp_path):
    sim = make_sim(size="realistic")
    for lat, height, width in ((49.5, 1201, 1201), (50.5, 1201, 801)):
        product, body = fetch(sim, "COP-DEM", "DGE_90", 7.5, lat)
        folder = tmp_path / str(lat)
        folder.mkdir()
        with rasterio.open(dem_layer(body, folder)) as ds:
            assert (ds.height, ds.width) == (height, width)
            check_cell(ds, 7, int(lat))
        assert product["ContentLength"] > 2 * height * width * 4  # the DEM and a HEM as large
        archive = zipfile.ZipFile(io.BytesIO(body))
        sizes = {n.rsplit("_", 1)[1]: archive.getinfo(n).file_size for n in archive.namelist()
                 if n.endswith(("_DEM.tif", "_HEM.tif")) and "/PREVIEW/" not in n}
        assert sizes["DEM.tif"] == sizes["HEM.tif"] > height * width * 4  # uncompressed, as recorded


def test_realistic_widths_by_latitude_band():
    from simulator.terrain import raster_shape

    assert [raster_shape(lat, 30, "realistic") for lat in (0, 49, 50, 60, 70, 80, 84, 85, -86)] == [
        (3601, 3601), (3601, 3601), (3601, 2401), (3601, 1801), (3601, 1201), (3601, 721), (3601, 721),
        (3601, 361), (3601, 361)]
    assert [raster_shape(lat, 90, "realistic") for lat in (10, -50, 55, 65, 75, 82, 88)] == [
        (1201, 1201), (1201, 1201), (1201, 801), (1201, 601), (1201, 401), (1201, 241), (1201, 121)]


def test_bytes_are_identical_across_caches_and_concurrent_generation(tmp_path):
    from simulator.cells import load_cells
    from simulator.products import ProductIndex
    from simulator.zips import ZipStore

    index = ProductIndex(load_cells(None), 0, ())
    product = index.products_in_cell((49, 8))[5]
    stores = [ZipStore(tmp_path / name, "small", 0) for name in ("a", "b")]
    results = []
    threads = [threading.Thread(target=lambda: results.append(stores[0].ensure(product))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other = stores[1].ensure(product)
    digests = {hashlib.md5(m.path.read_bytes()).hexdigest() for m in [*results, other]}
    assert len(digests) == 1
    assert digests == {other.md5}
    assert not list((tmp_path / "a").glob(".part-*"))
    for store in stores:
        store.close()


def test_shared_strips_read_back_sample_for_sample():
    """The small size's DEFLATE GeoTIFFs point repeated rows at one strip: GDAL reads every sample back."""
    from rasterio.io import MemoryFile

    from simulator.geotiff import geotiff_bytes
    from simulator.terrain import coarse_elevation

    for rows, cols in ((1201, 801), (3601, 3601)):
        field = coarse_elevation(50, 7, rows, cols, 0)
        constant = field.like(np.full(field.grid.shape, 1.5, dtype=np.float32))
        for raster in (field, constant):
            with MemoryFile(geotiff_bytes(raster, 7, 51, 1 / (cols - 1), 1 / (rows - 1))) as memory, \
                    memory.open() as ds:
                np.testing.assert_array_equal(ds.read(1), raster.expand())
