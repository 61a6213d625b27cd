"""Extracting the DEM layer from product zips built here with zipfile, laid out as CDSE serves them."""

import os
import zipfile
from pathlib import Path

import pytest

from cdse_dem.dem_folder import extract_dem
from cdse_dem.errors import DemError

CELL = "Copernicus_DSM_30_N50_00_E007_00"
STEM = "DEM1_SAR_DGE_90_20110109T094723_20140326T001716_ADS_000000_4e2B"
DEM_BYTES = os.urandom(200_000) + b"end of the DEM layer"


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def product_members(dem_name: str = f"{CELL}_DEM.tif", root: str = f"{STEM}_1a2b3c4d") -> dict[str, bytes]:
    """The layout of a CCM product zip, with quick looks that share the DEM's name pattern."""
    return {
        f"{root}/INSPIRE.xml": b"<xml/>",
        f"{root}/{STEM}-ql.jpg": b"jpeg",
        f"{root}/{CELL}/{CELL}.xml": b"<xml/>",
        f"{root}/{CELL}/AUXFILES/{CELL}_EDM.tif": b"edm",
        f"{root}/{CELL}/AUXFILES/{CELL}_WBM.tif": b"wbm",
        f"{root}/{CELL}/PREVIEW/{CELL}_DEM_QL.tif": b"quick look",
        f"{root}/{CELL}/PREVIEW/{CELL}_DEM.tif": b"a decoy quick look with the DEM's own name",
        f"{root}/{CELL}/DEM/{dem_name}": DEM_BYTES,
        f"{root}/{CELL}/INFO/eula_F.pdf": b"pdf",
    }


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def out_dir(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


@pytest.mark.parametrize("dem_name", [f"{CELL}_DEM.tif", f"{CELL}_DEM.dt1", f"{CELL}_DEM.dt2"])
def test_only_the_dem_layer_is_written_flat_under_its_base_name(tmp_path, out_dir, dem_name):
    zip_path = make_zip(tmp_path / "product.zip", product_members(dem_name))

    result = extract_dem(zip_path, out_dir, expected_name=dem_name)

    assert result == out_dir / dem_name
    assert result.read_bytes() == DEM_BYTES
    assert listing(out_dir) == [dem_name]  # no quick look, no auxiliary layer, no temporary


def test_root_folder_without_suffix_and_stored_members(tmp_path, out_dir):
    members = product_members(root=STEM)
    zip_path = make_zip(tmp_path / "product.zip", members, zipfile.ZIP_STORED)

    assert extract_dem(zip_path, out_dir).read_bytes() == DEM_BYTES
    assert listing(out_dir) == [f"{CELL}_DEM.tif"]


def test_an_existing_file_is_replaced_whole(tmp_path, out_dir):
    (out_dir / f"{CELL}_DEM.tif").write_bytes(b"old")
    zip_path = make_zip(tmp_path / "product.zip", product_members())

    extract_dem(zip_path, out_dir)

    assert (out_dir / f"{CELL}_DEM.tif").read_bytes() == DEM_BYTES
    assert listing(out_dir) == [f"{CELL}_DEM.tif"]


def test_a_zip_without_dem_layer_is_an_error_naming_it(tmp_path, out_dir):
    members = {k: v for k, v in product_members().items() if "/DEM/" not in k}
    zip_path = make_zip(tmp_path / "no-dem.zip", members)

    with pytest.raises(DemError, match="no DEM layer") as err:
        extract_dem(zip_path, out_dir)

    assert str(zip_path) in str(err.value)
    assert listing(out_dir) == []


def test_two_dem_layers_are_an_error_naming_the_zip(tmp_path, out_dir):
    members = product_members()
    members[f"{STEM}/Copernicus_DSM_30_N51_00_E007_00/DEM/Copernicus_DSM_30_N51_00_E007_00_DEM.tif"] = b"x"
    zip_path = make_zip(tmp_path / "two.zip", members)

    with pytest.raises(DemError, match="several DEM layers") as err:
        extract_dem(zip_path, out_dir)

    assert str(zip_path) in str(err.value)
    assert listing(out_dir) == []


@pytest.mark.parametrize("evil", [
    f"../../{CELL}_DEM.tif",
    f"{STEM}/../../../{CELL}_DEM.tif",
    f"/tmp/{CELL}_DEM.tif",
    f"..\\..\\{CELL}_DEM.tif",
])
def test_a_path_traversal_member_is_refused_and_nothing_escapes(tmp_path, out_dir, evil):
    zip_path = make_zip(tmp_path / "evil.zip", {f"{STEM}/INSPIRE.xml": b"<xml/>", evil: b"evil"})

    with pytest.raises(DemError, match="unsafe member path") as err:
        extract_dem(zip_path, out_dir)

    assert str(zip_path) in str(err.value)
    assert listing(out_dir) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip", "out"]
    assert not Path(f"/tmp/{CELL}_DEM.tif").exists()


def test_a_product_for_another_geocell_is_refused(tmp_path, out_dir):
    zip_path = make_zip(tmp_path / "product.zip", product_members())

    with pytest.raises(DemError, match=r"Copernicus_DSM_30_N51_00_E007_00_DEM\.tif"):
        extract_dem(zip_path, out_dir, expected_name="Copernicus_DSM_30_N51_00_E007_00_DEM.tif")

    assert listing(out_dir) == []


def test_an_error_body_saved_as_zip_is_not_a_zip(tmp_path, out_dir):
    body = tmp_path / "product.zip"
    body.write_bytes(b'{"trace-id": "0123", "code": "DAT-ZIP-608", "message": "forbidden"}')

    with pytest.raises(DemError, match="not a readable zip") as err:
        extract_dem(body, out_dir)

    assert str(body) in str(err.value)
    assert listing(out_dir) == []


def test_a_damaged_member_fails_its_crc_and_leaves_nothing(tmp_path, out_dir):
    zip_path = make_zip(tmp_path / "product.zip", product_members(), zipfile.ZIP_STORED)
    raw = bytearray(zip_path.read_bytes())
    at = raw.find(b"end of the DEM layer")
    raw[at] ^= 0xFF  # one flipped byte inside the stored DEM member
    zip_path.write_bytes(bytes(raw))

    with pytest.raises(DemError, match="damaged") as err:
        extract_dem(zip_path, out_dir)

    assert str(zip_path) in str(err.value)
    assert listing(out_dir) == []


def test_a_full_disk_is_one_line_naming_the_folder_and_leaves_nothing(tmp_path, out_dir, monkeypatch):
    """The temporary's writes go to /dev/full, so the kernel itself answers ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is needed to get a real ENOSPC")
    from cdse_dem import fsutil

    created = []
    real_create = fsutil.create_temp_in

    def temp_on_full_disk(folder, final_name, mode=None):
        path, handle = real_create(folder, final_name, mode)
        handle.close()
        created.append(path)
        return path, open("/dev/full", "wb")  # closed by the atomic writer

    monkeypatch.setattr(fsutil, "create_temp_in", temp_on_full_disk)
    zip_path = make_zip(tmp_path / "product.zip", product_members())

    with pytest.raises(DemError) as err:
        extract_dem(zip_path, out_dir)

    message = str(err.value)
    assert "no space left" in message and str(out_dir) in message and "\n" not in message
    assert created and not created[0].exists()
    assert listing(out_dir) == []
