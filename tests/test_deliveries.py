"""CCM's nine deliveries: each one chosen by -d or by the configuration file, fetched end to end."""

from urllib.parse import parse_qs

import pytest
import requests

from cdse_copernicus_dem_downloader import build_parser
from cdse_dem.settings import load_config
from tests.helpers import check_consistent, cli_env, run_cli

NINE = ("2019_1", "2019_2", "2020_1", "2020_2", "2021_1", "2021_2", "2022_1", "2023_1", "2024_1")
CONFIG = """<?xml version="1.0" encoding="UTF-8"?>
<DEM_DOWNLOADER_CONFIGURATION_FILE>
  <DEM_Option>
    <Collection>CCM</Collection>
    <Delivery_Id>{delivery}</Delivery_Id>
    <Resolution>90</Resolution>
    <Elevation_Model>DGED</Elevation_Model>
    <Tiles_Input_File>DEFAULT</Tiles_Input_File>
    <DEM_Output_Directory>DEFAULT</DEM_Output_Directory>
  </DEM_Option>
</DEM_DOWNLOADER_CONFIGURATION_FILE>
"""


@pytest.mark.parametrize("delivery", NINE)
def test_every_delivery_is_valid_in_the_configuration_file(tmp_path, delivery):
    path = tmp_path / "configuration.xml"
    path.write_text(CONFIG.format(delivery=delivery))
    assert load_config(path).delivery == delivery


def test_every_delivery_is_accepted_by_d_and_the_default_is_the_newest():
    assert [build_parser().parse_args(["-d", d]).delivery for d in NINE] == list(NINE)
    help_text = run_cli("--help").stdout
    assert "2019_1..2024_1 (default 2024_1)" in help_text


def test_delivery_2021_2_end_to_end(sim, tool_home, tmp_path):
    out = tmp_path / "dem"
    result = run_cli("--t", "32UMA", "-d", "2021_2", "--o", out, env=cli_env(sim))
    assert result.returncode == 0, result.output
    record = check_consistent(out, sim)  # the files are the DEMs inside the zips served for these Ids
    assert len(record) == 6
    for product_id in record.values():
        attributes = requests.get(f"{sim.catalogue_url}/Products({product_id})?$expand=Attributes",
                                  timeout=30).json()["Attributes"]
        assert {a["Name"]: a["Value"] for a in attributes}["dataset"] == "COP-DEM_GLO-90-DGED/2021_2"
    filters = [parse_qs(r.query)["$filter"][0] for r in sim.request_log() if r.path.endswith("/Products")]
    assert filters and all("'COP-DEM_GLO-90-DGED/2021_2'" in f for f in filters)
