"""Tile lists and SAFE names: every awkward entry gets the expected outcome."""

import pytest

from cdse_dem.errors import InputError
from cdse_dem.tiles import from_command_line, read_tile_list, tile_of, unique_tiles

NOT_TILE_OR_SAFE = "is not a Sentinel-2 tile id or SAFE name"


@pytest.mark.parametrize("text, tile", [
    ("32UMA", "32UMA"), (" 32uma ", "32UMA"), ("T32UMA", "32UMA"), ("t32uma", "32UMA"),
    ("S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912.SAFE", "32UMA"),
    ("S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912", "32UMA"),
    ("S2B_MSIL2A_20240816T094031_N0511_R036_T33TXF_20240816T114129.SAFE.zip", "33TXF"),
    ("S2B_MSIL2A_20240816T094031_N0511_R036_T33TXF_20240816T114129.zip", "33TXF"),
    ("S2C_MSIL1C_20250101T000000_N0511_R036_T31TCJ_20250101T000001.SAFE/", "31TCJ"),
    ("/data/in/S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912.SAFE", "32UMA"),
    ("C:\\data\\S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912.SAFE", "32UMA"),
    ("s2a_msil1c_20240712t102601_n0510_r108_t32uma_20240712t154912.safe", "32UMA"),
])
def test_valid_entries(text, tile):
    assert tile_of(text) == tile


@pytest.mark.parametrize("text", [
    "32UMAX", "32UM", "61UMA", "00UMA", "32IMA", "32UMW", "UMA32", "hello",
    "S2A_OPER_PRD_MSIL1C_PDMC_20160101T000000_R108_V20160101T000000_20160101T000000.SAFE",  # old long format
    "S2A_MSIL1C_20240712T102601_N0510_R108_20240712T154912.SAFE",  # no tile field
    "S2A_MSIL1C_20240712T102601_N0510_R108_T32UMAA_20240712T154912.SAFE",
    "S1A_IW_GRDH_1SDV_20240712T102601_20240712T102626_054743_06AA62_1A2B.SAFE",
])
def test_not_a_tile_or_safe_name(text):
    with pytest.raises(InputError) as err:
        tile_of(text)
    assert str(err.value) == f"'{text.strip()}' {NOT_TILE_OR_SAFE}"


@pytest.mark.parametrize("text, tile", [
    ("32TMA", "32TMA"), ("01CAA", "01CAA"),
    ("S2A_MSIL1C_20240712T102601_N0510_R108_T32TMA_20240712T154912.SAFE", "32TMA"),
])
def test_well_formed_but_not_a_sentinel2_tile(text, tile):
    with pytest.raises(InputError) as err:
        tile_of(text)
    assert str(err.value) == f"'{tile}' is not a Sentinel-2 tile"


def test_default_list_parses_into_the_expected_tiles(root):
    path = root / "configuration" / "input_tiles.txt"
    entries = read_tile_list(path)
    tiles = [e.tile for e in unique_tiles(entries)]
    assert tiles == ["32UMA", "01XEP", "34SCH", "24TWL", "24XWT", "01KAB", "01WCP", "58CEU", "58CEV", "33KWP",
                     "30SYJ"]
    invalid = [e.message for e in entries if e.error]
    assert invalid == [f"{path}:7: '32TMA' is not a Sentinel-2 tile"]
    assert entries[0].text.startswith("S2A_MSIL1C_") and entries[0].line == 4
    loose = next(e for e in entries if e.tile == "58CEV")
    assert loose.text == "t58cev" and loose.line == 14


def test_comments_blank_lines_and_duplicates(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("# header\n\n  32uma  # a comment\n#32UMB\n   \nT32UMA\n31TCJ#glued comment\nbad one\n")
    entries = read_tile_list(path)
    assert [(e.line, e.tile) for e in entries] == [(3, "32UMA"), (6, "32UMA"), (7, "31TCJ"), (8, None)]
    assert [e.tile for e in unique_tiles(entries)] == ["32UMA", "31TCJ"]
    assert entries[-1].message == f"{path}:8: 'bad one' {NOT_TILE_OR_SAFE}"


def test_command_line_entries_name_their_source():
    entries = from_command_line(["32UMA", "XXX"])
    assert entries[1].message == f"command line: 'XXX' {NOT_TILE_OR_SAFE}"


@pytest.mark.parametrize("content, message", [
    (b"", "holds no tile id or SAFE name"),
    (b"# only comments\n\n   \n", "holds no tile id or SAFE name"),
    (b"32UMA\n\x00\x01\x02binary", "2: not a text file (binary content)"),
    (b"32UMA\n\xff\xfe\xfa\n", "2: not a text file (not UTF-8)"),
])
def test_unusable_list_files(tmp_path, content, message):
    path = tmp_path / "list.txt"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_tile_list(path)
    assert str(err.value) in (f"{path}: {message}", f"{path}:{message}")


def test_list_file_that_is_a_folder_or_missing(tmp_path):
    with pytest.raises(InputError, match="is a folder, not a tile list file"):
        read_tile_list(tmp_path)
    with pytest.raises(InputError, match="tile list file not found"):
        read_tile_list(tmp_path / "missing.txt")
