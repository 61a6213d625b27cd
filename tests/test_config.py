"""configuration.xml: validated against the schema, DEFAULT per element, paths relative to the file."""

import pytest

from cdse_dem.errors import ConfigError
from cdse_dem.settings import load_config
from tests.helpers import run_cli

GOOD = """<?xml version="1.0" encoding="UTF-8"?>
<DEM_DOWNLOADER_CONFIGURATION_FILE>
  <DEM_Option>
    <Collection>{collection}</Collection>
    <Resolution>{resolution}</Resolution>
    <Elevation_Model>DTED</Elevation_Model>
    <Tiles_Input_File>lists/tiles.txt</Tiles_Input_File>
    <DEM_Output_Directory>DEFAULT</DEM_Output_Directory>
  </DEM_Option>
</DEM_DOWNLOADER_CONFIGURATION_FILE>
"""


def write(tmp_path, text, name="configuration.xml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_guide_example_without_delivery_is_valid(tmp_path):
    cfg = load_config(write(tmp_path, GOOD.format(collection="COP-DEM", resolution="90")))
    assert (cfg.collection, cfg.resolution, cfg.model, cfg.delivery) == ("COP-DEM", 90, "DTED", None)
    assert cfg.tiles_file == tmp_path / "lists" / "tiles.txt"
    assert cfg.output_dir is None


def test_shipped_default_configuration_is_valid(root):
    cfg = load_config(root / "configuration" / "configuration.xml")
    assert (cfg.collection, cfg.resolution, cfg.model, cfg.delivery, cfg.tiles_file, cfg.output_dir) == (
        None, None, None, None, None, None)


def test_schema_violation_names_file_and_line(tmp_path):
    path = write(tmp_path, GOOD.format(collection="CCM", resolution="45"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}:5: ")
    assert "Resolution" in message and "45" in message


def test_malformed_xml_names_file_and_line(tmp_path):
    path = write(tmp_path, "<?xml version='1.0'?>\n<DEM_DOWNLOADER_CONFIGURATION_FILE>\n  <DEM_Option>\n"
                           "</DEM_DOWNLOADER_CONFIGURATION_FILE>\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:4: malformed XML")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.xml")


@pytest.mark.parametrize("body, line", [
    (GOOD.format(collection="CCM", resolution="90").replace("<Resolution>90</Resolution>", ""), 3),
    (GOOD.format(collection="SRTM", resolution="90"), 4),
])
def test_cli_stops_before_login_with_exit_2(tmp_path, tool_home, body, line):
    path = write(tmp_path, body)
    result = run_cli("--config", path)
    assert result.returncode == 2
    errors = [row for row in result.stderr.splitlines() if "ERROR" in row]
    assert len(errors) == 1 and f"{path}:{line}: " in errors[0]
    assert "Traceback" not in result.output
    assert "access token" not in result.output


def test_cli_config_names_missing_tile_list(tmp_path, tool_home):
    path = write(tmp_path, GOOD.format(collection="CCM", resolution="90"))
    result = run_cli("--config", path, "--dry-run")
    assert result.returncode == 2
    assert f"{tmp_path / 'lists' / 'tiles.txt'}: tile list file not found" in result.stderr
