"""Setting DEM_Directory and DEM_Reference in Sen2Cor's L2A_GIPP.xml, and nothing else.

The GIPP below has Sen2Cor's shape (its 2.12 template: root with the schema attribute,
Common_Section with a comment after each setting, then Scene_Classification and
Atmospheric_Correction), plus what users' copies hold: an old value commented out, a CRLF
or BOM variant. The expected bytes are made by replacing the two elements' source text by
hand, so every other byte is checked to be the same.
"""

import os
import stat
from pathlib import Path

import pytest

from cdse_dem.errors import UsageError
from cdse_dem.sen2cor import check_gipp_option, gipp_lines, read_gipp, set_dem

GIPP = b"""<?xml version="1.0" encoding="UTF-8"?>
<Level-2A_Ground_Image_Processing_Parameter xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:noNamespaceSchemaLocation="L2A_GIPP.xsd">
  <Common_Section>
    <Log_Level>INFO</Log_Level>
    <!-- can be: NOTSET, DEBUG, INFO, WARNING, ERROR, CRITICAL. default: INFO -->
    <Nr_Threads>AUTO</Nr_Threads>
    <!-- Nr_Threads: AUTO or a number between 1 and max number of processors -->
    <!-- <DEM_Directory>dem/srtm</DEM_Directory> the old one -->
    <DEM_Directory>NONE</DEM_Directory>
    <!-- should be either a directory in the sen2cor home folder or 'NONE'. If NONE, no DEM will be used -->
    <DEM_Reference>http://data_public:GDdci@data.cgiar-csi.org/srtm/tiles/GeoTIFF/</DEM_Reference>
    <!-- disable, if not used -->
    <Generate_DEM_Output>FALSE</Generate_DEM_Output>
    <!-- FALSE: no DEM output, TRUE: store DEM in the AUX data directory -->
    <Generate_TCI_Output>TRUE</Generate_TCI_Output>
    <!-- FALSE: no TCI output, TRUE: store TCI in the IMAGE data directory -->
    <Generate_DDV_Output>FALSE</Generate_DDV_Output>
    <!-- FALSE: no DDV output, TRUE: store DDV in the QI_DATA directory -->
    <Downsample_20_to_60>TRUE</Downsample_20_to_60>
    <!-- TRUE: create additional 60m bands when 20m is processed -->
    <PSD_Scheme PSD_Version="14.9" PSD_Reference="S2-PDGS-TAS-DI-PSD-V14.9_Schema">
      <UP_Scheme_1C>S2_User_Product_Level-1C_Metadata</UP_Scheme_1C>
      <UP_Scheme_2A>S2_User_Product_Level-2A_Metadata</UP_Scheme_2A>
    </PSD_Scheme>
    <GIPP_Scheme>L2A_GIPP</GIPP_Scheme>
    <SC_Scheme>L2A_CAL_SC_GIPP</SC_Scheme>
    <AC_Scheme>L2A_CAL_AC_GIPP</AC_Scheme>
  </Common_Section>
  <Scene_Classification>
    <Filters>
      <Median_Filter>0</Median_Filter>
      <!-- Median Filter, 0: disabled, 3: 3x3 ... -->
    </Filters>
  </Scene_Classification>
  <Atmospheric_Correction>
    <Look_Up_Tables>
      <Aerosol_Type>RURAL</Aerosol_Type>
      <!-- RURAL, MARITIME, AUTO -->
      <Mid_Latitude>SUMMER</Mid_Latitude>
      <!-- SUMMER, WINTER, AUTO -->
      <Ozone_Content>0</Ozone_Content>
    </Look_Up_Tables>
    <Flags>
      <WV_Correction>1</WV_Correction>
      <Cirrus_Correction>FALSE</Cirrus_Correction>
      <DEM_Terrain_Correction>TRUE</DEM_Terrain_Correction>
      <!-- Use DEM for Terrain Correction, otherwise only used for WVP and AOT -->
      <BRDF_Correction>0</BRDF_Correction>
    </Flags>
  </Atmospheric_Correction>
</Level-2A_Ground_Image_Processing_Parameter>
"""
OLD_DIRECTORY = b"    <DEM_Directory>NONE</DEM_Directory>"
OLD_REFERENCE = b"<DEM_Reference>http://data_public:GDdci@data.cgiar-csi.org/srtm/tiles/GeoTIFF/</DEM_Reference>"


def expected(original: bytes, directory: bytes, reference: bytes) -> bytes:
    assert original.count(OLD_DIRECTORY) == 1 and original.count(OLD_REFERENCE) == 1
    return (original.replace(OLD_DIRECTORY, b"    <DEM_Directory>" + directory + b"</DEM_Directory>")
            .replace(OLD_REFERENCE, b"<DEM_Reference>" + reference + b"</DEM_Reference>"))


@pytest.mark.parametrize("variant", ["as shipped", "CRLF", "BOM"])
def test_only_the_two_values_change_and_the_original_is_kept(tmp_path, variant):
    original = {"as shipped": GIPP, "CRLF": GIPP.replace(b"\n", b"\r\n"), "BOM": b"\xef\xbb\xbf" + GIPP}[variant]
    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(original)
    out = tmp_path / "dem" / "CopernicusDEM90"
    assert set_dem(gipp, out, 90) is True
    assert gipp.read_bytes() == expected(original, str(out).encode(), b"CDSE-GLO-90")
    assert (tmp_path / "L2A_GIPP.xml.bak").read_bytes() == original


def test_a_second_run_keeps_the_first_backup_and_an_unchanged_gipp_is_not_rewritten(tmp_path):
    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(GIPP)
    set_dem(gipp, tmp_path / "a", 90)
    set_dem(gipp, tmp_path / "b", 30)
    assert gipp.read_bytes() == expected(GIPP, str(tmp_path / "b").encode(), b"CDSE-GLO-30")
    assert (tmp_path / "L2A_GIPP.xml.bak").read_bytes() == GIPP
    before = gipp.stat().st_ino
    assert set_dem(gipp, tmp_path / "b", 30) is False
    assert gipp.stat().st_ino == before


def test_a_path_is_escaped_for_xml_and_reads_back_through_a_parser(tmp_path):
    from lxml import etree

    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(GIPP)
    out = tmp_path / "R&D <dem> ü"
    set_dem(gipp, out, 90)
    assert b"R&amp;D &lt;dem&gt; \xc3\xbc" in gipp.read_bytes()
    assert etree.parse(str(gipp)).findtext("Common_Section/DEM_Directory") == str(out)
    assert gipp_lines(out, 90)[0] == f"<DEM_Directory>{tmp_path}/R&amp;D &lt;dem&gt; ü</DEM_Directory>"


@pytest.mark.parametrize("directory", [b"<DEM_Directory/>", b"<DEM_Directory>NONE</DEM_Directory >"])
def test_an_empty_element_and_a_missing_reference_are_written_in_place(tmp_path, directory):
    original = GIPP.replace(OLD_DIRECTORY, b"    " + directory).replace(OLD_REFERENCE + b"\n", b"")
    original = original.replace(b"    <!-- disable, if not used -->\n", b"")
    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(original)
    set_dem(gipp, Path("/data/dem"), 90)
    written = b"<DEM_Directory>/data/dem</DEM_Directory" + (b" >" if directory.endswith(b" >") else b">")
    assert gipp.read_bytes() == original.replace(
        b"    " + directory, b"    " + written + b"\n    <DEM_Reference>CDSE-GLO-90</DEM_Reference>")


def test_permissions_are_kept_and_a_symbolic_link_stays_a_link(tmp_path):
    real = tmp_path / "cfg" / "L2A_GIPP.xml"
    real.parent.mkdir()
    real.write_bytes(GIPP)
    os.chmod(real, 0o640)
    link = tmp_path / "gipp.xml"
    link.symlink_to(real)
    set_dem(link, Path("/data/dem"), 90)
    assert link.is_symlink()
    assert real.read_bytes() == expected(GIPP, b"/data/dem", b"CDSE-GLO-90")
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


@pytest.mark.parametrize(("content", "message"), [
    (b"<configuration><DEM_Directory>x</DEM_Directory></configuration>",
     "not a Sen2Cor GIPP: the root element is 'configuration', not 'Level-2A_Ground_Image_Processing_Parameter'"),
    (b"<Level-2A_Ground_Image_Processing_Parameter><Common_Section/></Level-2A_Ground_Image_Processing_Parameter>",
     "not a Sen2Cor GIPP: no Common_Section/DEM_Directory element"),
    (b"<Level-2A_Ground_Image_Processing_Parameter><DEM_Directory>x</DEM_Directory>"
     b"</Level-2A_Ground_Image_Processing_Parameter>", "not a Sen2Cor GIPP: no Common_Section/DEM_Directory"),
    (b"DEM_Directory=/data\n", "not a Sen2Cor GIPP: not well-formed XML"),
    (b"", "not a Sen2Cor GIPP: not well-formed XML"),
])
def test_a_file_that_is_not_a_gipp_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "x.xml"
    path.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        read_gipp(path)
    assert message in str(caught.value) and str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == content


def test_gipp_with_dted_is_refused_and_dted_alone_is_warned_about(tmp_path, caplog):
    with pytest.raises(UsageError) as caught:
        check_gipp_option(str(tmp_path / "L2A_GIPP.xml"), "DTED")
    assert "Sen2Cor (up to 2.12) cannot read the CDSE DTED files" in str(caught.value)
    with caplog.at_level("WARNING", logger="cdse_dem"):
        assert check_gipp_option(None, "DTED") is None
    assert "Sen2Cor (up to 2.12) cannot read the CDSE DTED files" in caplog.text


def test_at_the_end_a_gipp_that_stopped_being_one_is_an_error_and_left_alone(tmp_path, caplog):
    from cdse_dem.sen2cor import end_of_work

    gipp = tmp_path / "L2A_GIPP.xml"
    gipp.write_bytes(GIPP)
    assert end_of_work(str(gipp), tmp_path / "dem", 90, "DGED", complete=False) is True
    assert gipp.read_bytes() == GIPP
    gipp.write_bytes(b"<edited/>")  # changed by the user during a long run
    with caplog.at_level("INFO", logger="cdse_dem"):
        assert end_of_work(str(gipp), tmp_path / "dem", 90, "DGED", complete=True) is False
    assert f"<DEM_Directory>{tmp_path / 'dem'}</DEM_Directory>" in caplog.text
    assert "not a Sen2Cor GIPP" in caplog.text
    assert gipp.read_bytes() == b"<edited/>" and not (tmp_path / "L2A_GIPP.xml.bak").exists()
