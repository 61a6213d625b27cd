"""The --kml-report picture, read back with fastkml as Google Earth or QGIS would read it."""

import zipfile

import pytest
from fastkml import KML

from cdse_dem.errors import UsageError
from cdse_dem.grid import Geocell
from cdse_dem.report import write_kml_report
from tests.helpers import computed_footprint

STATUS = {
    Geocell(49, 7): "downloaded",
    Geocell(49, 8): "present",
    Geocell(50, 9): "failed",
    Geocell(71, -180): "sea",
    Geocell(71, 177): "planned",
    Geocell(40, 44): "gap",
    Geocell(41, 44): "filled",
}


def read(path):
    document = KML.parse(path).features[0]
    folders = {f.name: f for f in document.features}
    return document, folders


def test_report_holds_tiles_and_cells_styled_by_status(tmp_path):
    path = tmp_path / "report.kml"
    write_kml_report(path, [computed_footprint("32UMA"), computed_footprint("01WCV")], STATUS, 90)
    document, folders = read(path)
    assert document.name == "Copernicus DEM 90 m geocells for 2 Sentinel-2 tiles"
    assert {s.id for s in document.styles} == {
        "tile", "cell-downloaded", "cell-present", "cell-sea", "cell-failed", "cell-planned", "cell-gap", "cell-filled",
    }
    colours = {s.id: s.styles[1].color for s in document.styles}
    assert colours["cell-failed"] == "600000ff"  # red (aabbggrr)
    assert colours["cell-downloaded"] == "6000c000"  # green
    assert sorted(folders) == [
        "Geocells downloaded (1)", "Geocells failed (1)", "Geocells filled (1)", "Geocells gap (1)",
        "Geocells planned (1)", "Geocells present (1)", "Geocells sea (1)", "Tiles",
    ]
    tiles = {p.name: p for p in folders["Tiles"].features}
    assert sorted(tiles) == ["01WCV", "32UMA"]
    assert tiles["32UMA"].geometry.geom_type == "Polygon"
    assert tiles["01WCV"].geometry.geom_type == "MultiPolygon"  # both sides of ±180°
    west, south, east, north = tiles["32UMA"].geometry.bounds
    assert (round(west, 2), round(south, 2), round(east, 2), round(north, 2)) == (7.59, 49.56, 9.14, 50.55)
    assert "grid arithmetic" in tiles["32UMA"].description
    (failed,) = folders["Geocells failed (1)"].features
    assert failed.name == "Copernicus_DSM_30_N50_00_E009_00"
    assert failed.style_url.url == "#cell-failed"
    assert failed.description == "N50_E009: failed"
    assert failed.geometry.bounds == (9.0, 50.0, 10.0, 51.0)
    (sea,) = folders["Geocells sea (1)"].features
    assert sea.name == "Copernicus_DSM_30_N71_00_W180_00"
    assert sea.geometry.bounds == (-180.0, 71.0, -179.0, 72.0)
    assert [p.name for p in tmp_path.iterdir()] == ["report.kml"]  # no temporary file left


def test_a_kmz_path_gives_a_zipped_report(tmp_path):
    path = tmp_path / "report.kmz"
    write_kml_report(path, [computed_footprint("32UMA")], {Geocell(49, 7): "downloaded"}, 30)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["doc.kml"]
        (tmp_path / "doc.kml").write_bytes(archive.read("doc.kml"))
    _, folders = read(tmp_path / "doc.kml")
    (cell,) = folders["Geocells downloaded (1)"].features
    assert cell.name == "Copernicus_DSM_10_N49_00_E007_00"


def test_an_unwritable_path_is_refused(tmp_path):
    with pytest.raises(UsageError, match="cannot write the KML report"):
        write_kml_report(tmp_path / "absent" / "r.kml", [], {}, 90)
