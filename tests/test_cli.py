"""The command line as users meet it: help, --reset first, dry runs, reports, stored credentials."""

import json
import re
import zipfile

from cdse_dem.credentials import KeyStore, current_os_user
from tests.helpers import DEMO_PASSWORD, DEMO_USER, downloads, logins, run_cli

OPTIONS = ["--config", "--r", "-r", "--resolution", "--m", "-m", "--model", "--o", "-o", "--output", "--i", "-i",
           "--input", "--t", "-t", "--tile", "--reset", "--yes", "-d", "--delivery", "--collection", "--dry-run",
           "--workers", "--max-minutes", "--summary-json", "-v", "--verbose", "-q", "--quiet", "--log-file",
           "--version", "--kml", "--kml-report", "--transfer"]


def test_help_opens_with_the_version_line_and_lists_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    assert re.match(r"DEM Downloader Version: \d+\.\d+\.\d+ Release Date: \d+-\w+-\d{4}\.\n", result.stdout)
    for option in OPTIONS:
        assert re.search(rf"(^|[\s,\[]){re.escape(option)}([\s,\]]|$)", result.stdout, re.M), option
    assert "exit status" in result.stdout and "130 interrupted" in result.stdout


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("DEM Downloader Version: ")


def test_bad_resolution_is_one_line_and_exit_2():
    result = run_cli("--r", "45", "--t", "32UMA")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cdse_copernicus_dem_downloader.py: error: argument --r/-r/--resolution: invalid choice: 45 "
        "(choose from 30, 90) (see --help)"]


def store_entry(home, os_user, username=DEMO_USER, password=DEMO_PASSWORD):
    KeyStore(home / "credentials").save(os_user, username, password)


def test_reset_comes_first_and_keeps_other_users(sim, tool_home, tmp_path):
    store_entry(tool_home, current_os_user())
    store_entry(tool_home, "someone-else", "other@example.com", "other-password")
    result = run_cli("--reset", "--yes", "--t", "32UMA", "--o", tmp_path / "dem", env=sim.env)
    assert result.returncode == 0, result.output
    assert "Tile_ID" not in result.output and not (tmp_path / "dem").exists()
    assert downloads(sim) == [] and logins(sim) == []
    store = KeyStore(tool_home / "credentials")
    assert store.load(current_os_user()) is None
    assert store.load("someone-else") == ("other@example.com", "other-password")


def test_reset_without_terminal_or_yes_is_refused_and_keeps_the_entry(tool_home):
    store_entry(tool_home, current_os_user())
    result = run_cli("--reset")
    assert result.returncode == 2
    assert KeyStore(tool_home / "credentials").load(current_os_user()) == (DEMO_USER, DEMO_PASSWORD)


def test_stored_credentials_are_used_without_prompt(sim, tool_home, tmp_path):
    store_entry(tool_home, current_os_user())
    result = run_cli("--t", "32UMA", "--o", tmp_path / "dem", env=sim.env)
    assert result.returncode == 0, result.output
    assert "User is known and id and password are retrieved" in result.stderr
    assert len(logins(sim)) == 1 and logins(sim)[0].user == DEMO_USER


def test_no_credentials_without_terminal_is_exit_2_before_any_request(sim, tool_home, tmp_path):
    result = run_cli("--t", "32UMA", "--o", tmp_path / "dem", env=sim.env)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "CDSE_USERNAME" in errors[0]
    assert sim.request_log() == []


def test_wrong_password_is_exit_2_with_a_plain_message(sim, tool_home, tmp_path):
    result = run_cli("--t", "32UMA", "--o", tmp_path / "dem",
                     env=dict(sim.env, CDSE_USERNAME=DEMO_USER, CDSE_PASSWORD="wrong-Secret-123"))
    assert result.returncode == 2
    assert "CDSE rejected the user name or password" in result.stderr
    assert "wrong-Secret-123" not in result.output and "Traceback" not in result.output


def test_dry_run_needs_no_credentials_and_writes_the_plan(sim, tool_home, tmp_path):
    summary = tmp_path / "plan.json"
    result = run_cli("--t", "32UMA", "--t", "24TWL", "--dry-run", "--o", tmp_path / "dem",
                     "--summary-json", summary, env=sim.env)
    assert result.returncode == 0, result.output
    assert not (tmp_path / "dem").exists()
    assert downloads(sim) == [] and logins(sim) == []
    plan = json.loads(summary.read_text())
    by_tile = {t["tile"]: t for t in plan["tiles"]}
    assert by_tile["32UMA"]["footprint_source"] == "computed"
    assert {c["status"] for c in by_tile["32UMA"]["geocells"]} == {"planned"}
    assert all(c["product_id"] for c in by_tile["32UMA"]["geocells"])
    assert {c["status"] for c in by_tile["24TWL"]["geocells"]} == {"sea"}
    assert "32UMA (footprint: computed): 6 geocells" in result.stdout
    assert "N50_E007  Copernicus_DSM_30_N50_00_E007_00_DEM.tif  planned" in result.stdout


def test_kml_report_shows_tiles_and_geocells_by_status(sim, tool_home, tmp_path):
    from fastkml import KML

    report = tmp_path / "run.kml"
    result = run_cli("--t", "32UMA", "--t", "24TWL", "--o", tmp_path / "dem", "--kml-report", report,
                     env=dict(sim.env, CDSE_USERNAME=DEMO_USER, CDSE_PASSWORD=DEMO_PASSWORD))
    assert result.returncode == 0, result.output
    text = report.read_text()
    kml = KML.from_string(text.encode())
    assert kml is not None
    assert text.count("#cell-downloaded") == 6 and text.count("#cell-sea") == 6
    assert "32UMA" in text and "24TWL" in text
    assert not zipfile.is_zipfile(report)
