"""Precedence rules of the command line, each as the guide states it."""

from pathlib import Path

import pytest

from cdse_copernicus_dem_downloader import build_parser
from cdse_dem.settings import ConfigFile, decide


def parse(*argv):
    return build_parser().parse_args(list(argv))


def config_file(tmp_path, **values) -> ConfigFile:
    fields = dict(collection=None, delivery=None, resolution=None, model=None, tiles_file=None, output_dir=None)
    fields.update(values)
    return ConfigFile(path=tmp_path / "configuration.xml", **fields)


def test_config_overrides_every_data_option(tmp_path):
    args = parse("--config", "x.xml", "--r", "30", "--m", "DTED", "--t", "32UMA", "--i", "l.txt", "--o", "out",
                 "--collection", "COP-DEM", "-d", "2021_1")
    cfg = config_file(tmp_path, resolution=90, tiles_file=tmp_path / "tiles.txt", output_dir=tmp_path / "dem")
    settings = decide(args, cfg)
    assert settings.origin == "Configuration File"
    got = (settings.resolution, settings.model, settings.collection, settings.delivery)
    assert got == (90, "DGED", "CCM", "2024_1")
    assert settings.tile_args == ()
    assert settings.tiles_file == tmp_path / "tiles.txt"
    assert settings.output_dir == tmp_path / "dem"
    assert set(settings.ignored) == {"--r", "--m", "--t", "--i", "--o", "--collection", "--delivery"}


def test_config_default_elements_fall_back_one_by_one(tmp_path, tool_home):
    cfg = config_file(tmp_path, model="DTED")
    settings = decide(parse("--config"), cfg)
    got = (settings.resolution, settings.model, settings.collection, settings.delivery)
    assert got == (90, "DTED", "CCM", "2024_1")
    assert settings.tiles_file == tool_home / "configuration" / "input_tiles.txt"
    assert settings.output_dir == tool_home / "output_dir"


def test_bare_config_means_the_default_file():
    assert parse("--config").config == ""
    assert parse("--config", "my.xml").config == "my.xml"
    assert parse().config is None


def test_tile_wins_over_input():
    settings = decide(parse("--t", "32UMA", "--t", "31TCJ", "--i", "list.txt"), None)
    assert settings.tile_args == ("32UMA", "31TCJ")
    assert settings.tiles_file is None
    assert settings.ignored == ("--i",)


def test_input_file_when_no_tile():
    settings = decide(parse("--i", "list.txt"), None)
    assert settings.tiles_file == Path("list.txt")


def test_neither_tile_nor_input_reads_the_default_list(tool_home):
    settings = decide(parse(), None)
    assert settings.tiles_file == tool_home / "configuration" / "input_tiles.txt"
    assert settings.origin == "Command Line"


def test_defaults_are_ccm_2024_90m_dged(tool_home):
    settings = decide(parse("--t", "32UMA"), None)
    got = (settings.collection, settings.delivery, settings.resolution, settings.model)
    assert got == ("CCM", "2024_1", 90, "DGED")
    assert settings.output_dir == tool_home / "output_dir"


@pytest.mark.parametrize("argv, dest, value", [
    (["-r", "30"], "resolution", 30), (["--resolution", "30"], "resolution", 30),
    (["-m", "DTED"], "model", "DTED"), (["--model", "dted"], "model", "DTED"),
    (["-o", "d"], "output", "d"), (["--output", "d"], "output", "d"),
    (["-i", "f"], "input", "f"), (["--input", "f"], "input", "f"),
    (["-t", "32UMA"], "tile", ["32UMA"]), (["--tile", "32UMA"], "tile", ["32UMA"]),
    (["-d", "2020_1"], "delivery", "2020_1"), (["--delivery_id", "2020_1"], "delivery", "2020_1"),
    (["--collection", "cop-dem"], "collection", "COP-DEM"),
])
def test_long_and_short_names_of_the_newer_reference_version(argv, dest, value):
    assert getattr(parse(*argv), dest) == value
