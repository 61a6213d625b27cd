"""Tile id syntax and existence, and the shipped tile list."""

import subprocess
import sys
import zipfile

import pytest

from cdse_dem.errors import InputError, UsageError
from cdse_dem.tiles import (
    TILE_IDS_FILE,
    all_tile_ids,
    check_tile,
    is_sentinel2_tile,
    normalize_tile_id,
    pack_tile_ids,
    unpack_tile_ids,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("32UMA", "32UMA"),
        (" 32uma\n", "32UMA"),
        ("T32UMA", "32UMA"),
        ("t01wcv", "01WCV"),
        ("60XWQ", "60XWQ"),
        ("58CEU", "58CEU"),
        ("01XEQ", "01XEQ"),  # well-formed, though not a tile
    ],
)
def test_well_formed_ids_are_normalized(text, expected):
    assert normalize_tile_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "32UM",
        "32UMAA",
        "2UMA",
        "00UMA",  # zone 0
        "61UMA",  # zone 61
        "32AMA",  # band A (polar, not Sentinel-2)
        "32YMA",  # band Y
        "32IMA",  # band I skipped
        "32OMA",  # band O skipped
        "32UIA",  # column I skipped
        "32UMO",  # row O skipped
        "32UMW",  # row W beyond V
        "32 UMA",
        "TT32UMA",
        "S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912.SAFE",
    ],
)
def test_malformed_ids_are_rejected(text):
    assert normalize_tile_id(text) is None
    assert not is_sentinel2_tile(text)
    with pytest.raises(InputError, match="is not a Sentinel-2 tile id"):
        check_tile(text)


@pytest.mark.parametrize(
    "tile",
    ["32UMA", "33TXF", "31TCJ", "01WCV", "01KAB", "01WCP", "58CEU", "58CEV", "24XWT", "34SCH", "24TWL",
     "33KWP", "30SYJ", "31VEF", "60XWQ", "01CCV", "t32uma"],
)
def test_tiles_of_the_kml_exist(tile):
    assert is_sentinel2_tile(tile)
    check_tile(tile)  # no exception


@pytest.mark.parametrize(
    "tile",
    [
        "01XEQ",  # the row north of 01XEP: beyond the grid's last row
        "32UMH",  # band U has rows A-G and U-V in zone 32, not H
        "32VMA",  # row A of zone 32 lies in band U, not V
        "01CAA",
        "32UJA",  # column J is 100-200 km easting: not a tile in band U
    ],
)
def test_well_formed_ids_that_are_not_tiles(tile):
    assert normalize_tile_id(tile) == tile
    assert not is_sentinel2_tile(tile)
    with pytest.raises(InputError) as raised:
        check_tile(tile)
    assert str(raised.value) == f"'{tile}' is not a Sentinel-2 tile"
    assert isinstance(raised.value, UsageError) and raised.value.exit_status == 2


def test_01XEP_is_a_tile_of_the_official_kml(kml_zip):
    """The reference tool's sample list calls 01XEP a tile that does not exist; ESA's KML has it."""
    with zipfile.ZipFile(kml_zip) as archive, archive.open(archive.namelist()[0]) as stream:
        text = stream.read().decode()
    assert text.count("<name>01XEP</name>") == 1
    assert "<name>01XEQ</name>" not in text
    assert is_sentinel2_tile("01XEP")


def test_the_shipped_list_has_every_tile_once():
    tiles = list(all_tile_ids())
    assert len(tiles) == len(set(tiles)) == 56_686  # Placemarks in the official KML
    assert tiles[0] == "01CCV"  # zone 01, band C: the KML's first placemark
    assert all(normalize_tile_id(t) == t for t in tiles)
    assert TILE_IDS_FILE.stat().st_size < 4096  # commit-size small


def test_pack_and_unpack_round_trip():
    data = pack_tile_ids(["32UMA", "T01WCV", "32uma"])
    bitmap = unpack_tile_ids(data)
    assert int.from_bytes(bitmap, "big").bit_count() == 2
    with pytest.raises(ValueError, match="bad magic"):
        unpack_tile_ids(b"nonsense")
    damaged = data[:-4] + bytes(4)
    with pytest.raises(ValueError, match="damaged"):
        unpack_tile_ids(damaged)
    with pytest.raises(ValueError, match="not a Sentinel-2 tile id"):
        pack_tile_ids(["32UMA", "hello"])


def test_tiles_module_loads_without_heavy_imports(root):
    code = (
        "import sys, time; t = time.perf_counter(); import cdse_dem.tiles as t_;"
        " ok = t_.is_sentinel2_tile('32UMA'); dt = time.perf_counter() - t;"
        " heavy = [m for m in ('numpy', 'shapely', 'pyproj', 'lxml', 'fastkml') if m in sys.modules];"
        " print(ok, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True []"


def test_the_build_script_reproduces_the_shipped_list_from_the_zip(root, kml_zip, tmp_path):
    output = tmp_path / "ids.bin"
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "build_tile_ids.py"), str(kml_zip), "-o", str(output)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "56686 tiles" in result.stdout
    assert output.read_bytes() == TILE_IDS_FILE.read_bytes()
