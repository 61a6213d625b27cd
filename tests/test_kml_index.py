"""The KML index: built once by streaming, stored atomically, reloaded, rebuilt when stale or damaged."""

import logging
import os
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from cdse_dem import grid
from cdse_dem.errors import InputError
from cdse_dem.grid import FootprintFinder, index_path, iter_placemarks, open_index

UMA = [(7.5880861366, 50.5437323314), (9.1377697558, 50.5522106218), (9.1349705026, 49.5646762974),
       (7.6167627329, 49.5564878429), (7.5880861366, 50.5437323314)]
WCV_EAST = [(180, 71.0876285652), (177.4798274128, 71.0333833372), (177.1891727316, 72.0130130368),
            (180, 72.0738701495), (180, 71.0876285652)]
WCV_WEST = [(-180, 72.0738701495), (-179.6275206349, 72.0819346859), (-179.4954265798, 71.0984892104),
            (-180, 71.0876285652), (-180, 72.0738701495)]


def polygon_xml(ring) -> str:
    coords = " ".join(f"{lon},{lat},0" for lon, lat in ring)
    return (f"<Polygon><outerBoundaryIs><LinearRing><coordinates>\n{coords}\n"
            "</coordinates></LinearRing></outerBoundaryIs></Polygon>")


def placemark(name, *rings, description="<![CDATA[<b>EPSG</b> 32632]]>") -> str:
    return (f"<Placemark><name>{name}</name><description>{description}</description><MultiGeometry>"
            + "".join(polygon_xml(r) for r in rings)
            + "<Point><coordinates>8.36,50.05,0</coordinates></Point></MultiGeometry></Placemark>")


def write_kml(path, *placemarks) -> None:
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2"><Document>'
        "<Folder><name>Features</name>" + "".join(placemarks) + "</Folder></Document></kml>\n",
        encoding="utf-8",
    )


@pytest.fixture
def small_kml(tmp_path):
    path = tmp_path / "tiles.kml"
    write_kml(path, placemark("32UMA", UMA), placemark("01WCV", WCV_EAST, WCV_WEST),
              placemark("Legend"))  # not a tile: skipped
    return path


def test_first_use_builds_and_stores_the_index(small_kml, caplog):
    caplog.set_level(logging.INFO, logger="cdse_dem")
    index = open_index(small_kml)
    assert index_path(small_kml) == small_kml.parent / "tiles.kml.index.npz"
    assert index_path(small_kml).is_file()
    assert sorted(p.name for p in small_kml.parent.iterdir()) == ["tiles.kml", "tiles.kml.index.npz"]
    assert stat.S_IMODE(index_path(small_kml).stat().st_mode) == 0o644  # others sharing the KML read it too
    assert "Indexing the tiling KML" in caplog.text
    assert len(index) == 2 and index.tile_ids() == ["01WCV", "32UMA"]
    assert "32UMA" in index and "33TXF" not in index
    (uma,) = index.rings("32UMA")
    np.testing.assert_array_equal(uma, UMA)
    east, west = index.rings("01WCV")
    np.testing.assert_array_equal(east, WCV_EAST)
    np.testing.assert_array_equal(west, WCV_WEST)
    assert index.rings("33TXF") is None
    assert sorted(p.name for p in small_kml.parent.iterdir()) == ["tiles.kml", "tiles.kml.index.npz"]


def test_later_runs_load_the_index_without_parsing_the_kml(small_kml, monkeypatch):
    open_index(small_kml)

    def no_parse(_):
        raise AssertionError("the KML was parsed again")

    monkeypatch.setattr(grid, "build_index", no_parse)
    np.testing.assert_array_equal(open_index(small_kml).rings("32UMA")[0], UMA)


def test_a_changed_kml_is_indexed_again(small_kml, caplog):
    open_index(small_kml)
    write_kml(small_kml, placemark("32UMA", UMA))  # 01WCV gone
    os.utime(small_kml, ns=(1_000_000_000, 1_000_000_000))
    caplog.set_level(logging.INFO, logger="cdse_dem")
    index = open_index(small_kml)
    assert index.tile_ids() == ["32UMA"]
    assert "has changed since its index was made" in caplog.text
    assert open_index(small_kml).tile_ids() == ["32UMA"]


def test_a_same_size_same_mtime_edit_is_still_noticed(small_kml):
    open_index(small_kml)
    stat = small_kml.stat()
    text = small_kml.read_text()
    small_kml.write_text(text.replace("7.5880861366,50.5437323314", "7.5880861366,50.5437323315"))
    os.utime(small_kml, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert small_kml.stat().st_size == stat.st_size
    assert open_index(small_kml).rings("32UMA")[0][0, 1] == 50.5437323315


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a zip at all", b"PK\x03\x04 truncated"],
)
def test_a_damaged_index_is_never_trusted(small_kml, caplog, damage):
    open_index(small_kml)
    index_path(small_kml).write_bytes(damage)
    caplog.set_level(logging.WARNING, logger="cdse_dem")
    index = open_index(small_kml)
    assert index.tile_ids() == ["01WCV", "32UMA"]
    assert f"The KML index {index_path(small_kml)} is unreadable" in caplog.text
    assert open_index(small_kml).tile_ids() == ["01WCV", "32UMA"]  # rewritten whole


def test_an_index_whose_arrays_do_not_hold_together_is_rebuilt(small_kml, caplog):
    open_index(small_kml)
    path = index_path(small_kml)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["ring_start"] = arrays["ring_start"][:-1]  # one offset lost
    with path.open("wb") as f:
        np.savez(f, **arrays)
    caplog.set_level(logging.WARNING, logger="cdse_dem")
    assert open_index(small_kml).tile_ids() == ["01WCV", "32UMA"]
    assert "is unreadable" in caplog.text


def test_an_index_that_cannot_be_stored_costs_a_warning_not_a_failure(small_kml, monkeypatch, caplog):
    def refuse(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(grid, "save_index", refuse)
    caplog.set_level(logging.WARNING, logger="cdse_dem")
    assert open_index(small_kml).tile_ids() == ["01WCV", "32UMA"]
    assert "Could not store the KML index" in caplog.text
    assert not index_path(small_kml).exists()


def test_a_failed_write_leaves_neither_index_nor_temporary_file(small_kml, monkeypatch):
    def crash(*_, **__):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", crash)
    open_index(small_kml)
    assert sorted(p.name for p in small_kml.parent.iterdir()) == ["tiles.kml"]


@pytest.mark.parametrize(
    "content",
    ["this is not XML", "<kml><Document><Placemark><name>32UMA</name>", "<kml></kml>",
     "<kml><Placemark><name>32UMA</name><Polygon><outerBoundaryIs><LinearRing><coordinates>1,2,0 3"
     "</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark></kml>"],
)
def test_an_unreadable_kml_is_an_input_error_naming_it(tmp_path, content):
    path = tmp_path / "broken.kml"
    path.write_text(content)
    with pytest.raises(InputError, match=r"broken\.kml"):
        open_index(path)
    assert not index_path(path).exists()


def test_the_finder_falls_back_to_computed_footprints_for_a_broken_kml(tmp_path, caplog):
    path = tmp_path / "broken.kml"
    path.write_text("this is not XML")
    caplog.set_level(logging.WARNING, logger="cdse_dem")
    finder = FootprintFinder(path)
    assert finder.footprint("32UMA").source == "computed"
    assert "not a readable tiling KML" in caplog.text
    assert "computed from the grid instead" in caplog.text


def test_the_finder_computes_tiles_missing_from_the_kml(small_kml, caplog):
    caplog.set_level(logging.INFO, logger="cdse_dem")
    sources = [f.source for f in FootprintFinder(small_kml).footprints(["32UMA", "33TXF", "01WCV"])]
    assert sources == ["kml", "computed", "kml"]
    assert "Tiles not in the KML, computed instead: 33TXF" in caplog.text


def test_placemarks_stream_from_inside_a_zip(tmp_path, small_kml):
    archive_path = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(small_kml, "tiles.kml")
    with zipfile.ZipFile(archive_path) as archive, archive.open("tiles.kml") as stream:
        found = list(iter_placemarks(stream))
    assert [name for name, _ in found] == ["32UMA", "01WCV", "Legend"]
    assert [len(rings) for _, rings in found] == [1, 2, 0]


def test_the_build_script_reads_a_plain_kml(root, small_kml, tmp_path):
    output = tmp_path / "ids.bin"
    write_kml(small_kml, placemark("32UMA", UMA), placemark("01WCV", WCV_EAST, WCV_WEST))
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "build_tile_ids.py"), str(small_kml), "-o", str(output)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    from cdse_dem.tiles import unpack_tile_ids

    assert int.from_bytes(unpack_tile_ids(output.read_bytes()), "big").bit_count() == 2


def test_the_build_script_refuses_a_kml_with_names_that_are_not_tiles(root, small_kml, tmp_path):
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "build_tile_ids.py"), str(small_kml), "-o",
         str(tmp_path / "ids.bin")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode != 0
    assert "are not tile ids" in result.stderr
    assert not (tmp_path / "ids.bin").exists()
