"""The bad-input matrix: each wrong thing a user can feed the tool, through the real command line.

Every row checks its exact message and exit status, and the same three promises:
- nothing lost: the tool home each test starts from holds stored credentials (an RSA-encrypted
  entry for this OS user) and an output folder with six DEMs of 32UMA and their JSON, made by a
  real run; after the row, every one of those files is still there, byte for byte (a row that
  must change one, such as the corrupt JSON, says how);
- no traceback;
- no secret printed: the account's password is distinctive (so finding it means it leaked), and
  no access token (a JWT, ``eyJ...``) or private key appears in anything the tool printed.
The unit-level checks of the same rules (tile_of, load_config, NameIdCache, KeyStore) are in
test_entries.py, test_config.py, test_cache.py and test_credentials.py; these are the whole process.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from simulator import Faults, SimulatorConfig, User, start_simulator
from tests.helpers import (
    ENTRY,
    NO_RETRY_WAITS,
    Result,
    check_consistent,
    dem_files,
    filled_tool_home,
    run_cli,
    stored_credentials_env,
)

USER = "matrix.user@example.com"
SECRET = "Qx7-distinctive-Pa55word-93zk"  # appears nowhere but in the simulator's account and the store
NOT_TILE = "is not a Sentinel-2 tile id or SAFE name"
NO_VALID = "no valid tile id or SAFE name to process"
RESET_HINT = "run the tool with --reset to store your credentials again"
SAFE = "S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912"
JSON_NAME = "dict_filename_dem_id.json"
PRESENT_32UMA = "32UMA (footprint: computed): 6 geocells, 0 to download, 6 present, 0 open sea"


# --- the world every row starts from -------------------------------------------------------------

@pytest.fixture(scope="module")
def matrix_sim(tmp_path_factory):
    # the demo account too: tests.helpers.served_dem fetches the reference bytes with it
    config = SimulatorConfig(users=[User(USER, SECRET), User("demo@example.com", "demo")],
                             cache_dir=tmp_path_factory.getbasetemp() / "sim-cache")
    with start_simulator(config) as sim:
        yield sim


@pytest.fixture(scope="module")
def template(matrix_sim, tmp_path_factory) -> Path:
    """A tool home with stored credentials and 32UMA's six DEMs downloaded by a real run."""
    home = tmp_path_factory.mktemp("matrix") / "home"
    return filled_tool_home(home, stored_credentials_env(matrix_sim, home), USER, SECRET)


@dataclass
class World:
    home: Path
    sim: object
    before: dict

    @property
    def out(self) -> Path:
        return self.home / "output_dir"

    def env(self, sim=None) -> dict:
        return stored_credentials_env(sim or self.sim, self.home)

    def run(self, *args, sim=None, entry=ENTRY) -> Result:
        return run_cli(*args, env=self.env(sim), entry=entry)

    def snapshot(self, *extra: Path) -> None:
        """Remember the bytes of every file of the home (and of ``extra`` files): all must survive."""
        self.before = _files(self.home)
        for path in extra:
            self.before.update(_files(path) if path.is_dir() else {path: path.read_bytes()})

    def assert_nothing_lost(self, *changed: Path) -> None:
        for path, data in self.before.items():
            if path in changed:
                continue
            assert path.is_file(), f"{path} was lost"
            assert path.read_bytes() == data, f"{path} was changed"


def _files(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def world(template, matrix_sim, tmp_path, monkeypatch) -> World:
    home = tmp_path / "home"
    shutil.copytree(template, home, symlinks=True)
    monkeypatch.setenv("CDSE_DEM_HOME", str(home))
    w = World(home, matrix_sim, {})
    w.snapshot()
    return w


def error_messages(text: str) -> list[str]:
    return [line.split("| ERROR ", 1)[1] for line in text.splitlines() if "| ERROR " in line]


def warning_messages(text: str) -> list[str]:
    return [line.split("| WARNING ", 1)[1] for line in text.splitlines() if "| WARNING " in line]


def assert_clean(world: World, result: Result, *changed: Path, extra_text: str = "") -> None:
    """The promises of every row: no traceback, no secret, nothing lost."""
    text = result.output + extra_text
    assert "Traceback" not in text
    assert SECRET not in text
    assert "eyJ" not in text  # no JWT (access or refresh token)
    assert "PRIVATE KEY" not in text
    world.assert_nothing_lost(*changed)


# --- tile ids and SAFE names ----------------------------------------------------------------

@pytest.mark.parametrize("entry", ["32UMAX", "32UM", "61UMA", "32IMA", "UMA32", "32 UMA", "T", "32UMA32UMB",
                                   "ｔ32uma", "%s%n", "../../etc/passwd"])
def test_malformed_tile_id(world, entry):
    result = world.run("--t", entry)
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"command line: '{entry}' {NOT_TILE}", NO_VALID]
    assert_clean(world, result)


def test_empty_tile_argument(world):
    result = world.run("--t", "  ")
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"command line: '' {NOT_TILE}", NO_VALID]
    assert_clean(world, result)


@pytest.mark.parametrize("entry, tile", [("32TMA", "32TMA"), ("01CAA", "01CAA"), ("t32tma", "32TMA"),
                                         (SAFE.replace("T32UMA", "T32TMA") + ".SAFE", "32TMA")])
def test_unknown_tile(world, entry, tile):
    result = world.run("--t", entry)
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"command line: '{tile}' is not a Sentinel-2 tile", NO_VALID]
    assert_clean(world, result)


@pytest.mark.parametrize("entry", [
    f"{SAFE}.SAFE", SAFE, f"{SAFE}.SAFE.zip", f"{SAFE}.zip", f"{SAFE}.SAFE/", f"{SAFE}.SAFE//",
    f"/data/in/{SAFE}.SAFE", f"./{SAFE}.SAFE", f"C:\\data\\{SAFE}.SAFE", f"  {SAFE}.SAFE  ", SAFE.lower() + ".safe",
    SAFE.replace("MSIL1C", "MSIL2A") + ".SAFE", SAFE.replace("S2A", "S2B"), SAFE.replace("S2A", "S2C"),
    "S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912_EXTRA1.SAFE",  # an added field
])
def test_odd_but_valid_safe_names(world, entry):
    result = world.run("--t", entry, "--dry-run")
    assert result.returncode == 0, result.output
    assert result.stdout.splitlines()[0] == PRESENT_32UMA
    assert error_messages(result.stderr) == []
    assert_clean(world, result)


@pytest.mark.parametrize("entry", [
    "S2A_OPER_PRD_MSIL1C_PDMC_20160101T000000_R108_V20160101T000000_20160101T000000.SAFE",  # old long format
    "S2A_MSIL1C_20240712T102601_N0510_R108_20240712T154912.SAFE",  # no tile field
    "S2A_MSIL1C_20240712T102601_N0510_R108_T32UMAA_20240712T154912.SAFE",
    "S2_MSIL1C_20240712T102601_N0510_R108_T32UMA_20240712T154912.SAFE",  # no unit letter
    "S2A_MSIL1B_20240712T102601_N0510_R108_T32UMA_20240712T154912.SAFE",  # not a user product
    "S1A_IW_GRDH_1SDV_20240712T102601_20240712T102626_054743_06AA62_1A2B.SAFE",
    f"{SAFE}.SAFE.tar",
    f"{SAFE}.SAFE/MTD_MSIL1C.xml",  # a file inside the product
    f"{SAFE}.S AFE",
    "S2A_MSIL1C_20240712T102601_N0510_R108_T32UMA_T31TCJ_20240712T154912.SAFE",  # two tiles: which one?
])
def test_names_that_are_not_safe_names(world, entry):
    result = world.run("--t", entry)
    assert result.returncode == 2, result.output
    assert error_messages(result.stderr) == [f"command line: '{entry}' {NOT_TILE}", NO_VALID]
    assert_clean(world, result)


def test_bad_lines_among_good_ones_are_all_reported_and_the_good_ones_run(world, tmp_path):
    listing = tmp_path / "tiles.txt"
    listing.write_text(f"# my tiles\n{SAFE}.SAFE\n32UMAX\n\n32TMA   # typo\nS2A_OPER_PRD_MSIL1C_PDMC_X.SAFE\n")
    world.snapshot(listing)
    result = world.run("--i", listing, "--dry-run")
    assert result.returncode == 1
    assert error_messages(result.stderr) == [
        f"{listing}:3: '32UMAX' {NOT_TILE}", f"{listing}:5: '32TMA' is not a Sentinel-2 tile",
        f"{listing}:6: 'S2A_OPER_PRD_MSIL1C_PDMC_X.SAFE' {NOT_TILE}"]
    assert result.stdout.splitlines()[0] == PRESENT_32UMA
    assert_clean(world, result)


# --- list files -----------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (b"", "{path}: holds no tile id or SAFE name"),
    (b"# only a comment\n\n   \n", "{path}: holds no tile id or SAFE name"),
    (b"32UMA\n\x00\x01\x02\x89PNG binary", "{path}:2: not a text file (binary content)"),
    (b"32UMA\n\xff\xfe\xfa\n", "{path}:2: not a text file (not UTF-8)"),
], ids=["empty", "comments-only", "binary", "not-utf8"])
def test_unusable_list_file(world, tmp_path, content, message):
    listing = tmp_path / "tiles.txt"
    listing.write_bytes(content)
    world.snapshot(listing)
    result = world.run("--i", listing)
    assert result.returncode == 2
    assert error_messages(result.stderr) == [message.format(path=listing)]
    assert_clean(world, result)


def test_a_folder_given_as_the_list_holds_no_product(world, tmp_path):
    folder = tmp_path / "l1c"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a product\n")
    result = world.run("--i", folder)
    assert result.returncode == 2
    assert error_messages(result.stderr) == [
        f"{folder}: holds no Sentinel-2 product (*.SAFE, *.SAFE.zip or *.zip named S2x_MSIL1C_... or "
        "S2x_MSIL2A_...); 1 other entry"]
    assert_clean(world, result)


def test_list_file_that_does_not_exist(world, tmp_path):
    result = world.run("--i", tmp_path / "nope.txt")
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"{tmp_path / 'nope.txt'}: tile list file not found"]
    assert_clean(world, result)


# --- configuration.xml ----------------------------------------------------------------------

CONFIG = """<?xml version="1.0" encoding="UTF-8"?>
<DEM_DOWNLOADER_CONFIGURATION_FILE>
  <DEM_Option>
    <Collection>CCM</Collection>
    <Resolution>{resolution}</Resolution>
    <Elevation_Model>DGED</Elevation_Model>
    <Tiles_Input_File>{tiles}</Tiles_Input_File>
    <DEM_Output_Directory>DEFAULT</DEM_Output_Directory>
  </DEM_Option>
</DEM_DOWNLOADER_CONFIGURATION_FILE>
"""


def _config_run(world, tmp_path, text):
    path = tmp_path / "configuration.xml"
    path.write_text(text)
    world.snapshot(path)
    return path, world.run("--config", path)


def test_config_that_is_malformed_xml(world, tmp_path):
    path, result = _config_run(world, tmp_path, CONFIG.format(resolution="90", tiles="DEFAULT").replace(
        "</DEM_Option>", ""))
    assert result.returncode == 2
    assert error_messages(result.stderr) == [
        f"{path}:10: malformed XML: Opening and ending tag mismatch: DEM_Option line 3 and "
        "DEM_DOWNLOADER_CONFIGURATION_FILE"]
    assert_clean(world, result)


def test_config_that_fails_the_schema(world, tmp_path):
    path, result = _config_run(world, tmp_path, CONFIG.format(resolution="45", tiles="DEFAULT"))
    assert result.returncode == 2
    assert error_messages(result.stderr) == [
        f"{path}:5: element 'Resolution': [facet 'enumeration'] The value '45' is not an element of the set "
        "{'DEFAULT', '90', '30'}"]
    assert_clean(world, result)


def test_config_that_names_a_missing_list(world, tmp_path):
    _, result = _config_run(world, tmp_path, CONFIG.format(resolution="90", tiles="lists/missing.txt"))
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"{tmp_path / 'lists' / 'missing.txt'}: tile list file not found"]
    assert_clean(world, result)


def test_config_that_does_not_exist_or_is_a_folder(world, tmp_path):
    result = world.run("--config", tmp_path / "nope.xml")
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"{tmp_path / 'nope.xml'}: configuration file not found"]
    folder = world.run("--config", tmp_path)
    assert folder.returncode == 2
    assert error_messages(folder.stderr) == [f"{tmp_path}: is a folder, not a configuration file"]
    assert_clean(world, result)
    assert_clean(world, folder)


# --- options --------------------------------------------------------------------------------

PROG = "cdse_copernicus_dem_downloader.py: error: "


@pytest.mark.parametrize("args, message", [
    (["--r", "45"], "argument --r/-r/--resolution: invalid choice: 45 (choose from 30, 90)"),
    (["--r", "ninety"], "argument --r/-r/--resolution: invalid int value: 'ninety'"),
    (["--m", "GeoTIFF"], "argument --m/-m/--model: invalid choice: 'GEOTIFF' (choose from 'DGED', 'DTED')"),
    (["--collection", "SRTM"], "argument --collection: invalid choice: 'SRTM' (choose from 'CCM', 'COP-DEM')"),
    (["--workers", "0"], "argument --workers: 0 is less than 1"),
    (["--max-minutes", "-5"], "argument --max-minutes: -5 is not 0 or more"),
    (["--t"], "argument --t/-t/--tile: expected one argument"),
], ids=["r45", "r-text", "model", "collection", "workers0", "minutes-negative", "t-without-value"])
def test_bad_option(world, args, message):
    result = world.run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"{PROG}{message} (see --help)\n"
    assert_clean(world, result)


@pytest.mark.parametrize("option, what, where, reason", [
    ("--summary-json", "cannot write the summary JSON", "missing/summary.json", "No such file or directory"),
    ("--summary-json", "cannot write the summary JSON", ".", "Is a directory"),
    ("--kml-report", "cannot write the KML report", "missing/report.kml", "No such file or directory"),
], ids=["summary-in-missing-folder", "summary-is-a-folder", "kml-report-in-missing-folder"])
def test_report_file_that_cannot_be_written(world, tmp_path, option, what, where, reason):
    path = tmp_path / where
    result = world.run("--t", "32UMA", "--dry-run", option, path)
    assert result.returncode == 2, result.output
    assert error_messages(result.stderr) == [f"{path}: {what} ({reason})"]
    assert_clean(world, result)


@pytest.mark.parametrize("where, reason", [("missing/run.log", "No such file or directory"),
                                           (".", "Is a directory")], ids=["in-missing-folder", "is-a-folder"])
def test_log_file_that_cannot_be_written(world, tmp_path, where, reason):
    path = tmp_path / where
    result = world.run("--t", "32UMA", "--dry-run", "--log-file", path)
    assert result.returncode == 2
    assert result.stderr == f"{path}: cannot write the log file ({reason})\n"  # before logging exists
    assert_clean(world, result)


def test_tiling_kml_that_does_not_exist(world, tmp_path):
    result = world.run("--t", "32UMA", "--dry-run", "--kml", tmp_path / "S2A_tiling.kml")
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"{tmp_path / 'S2A_tiling.kml'}: tiling KML not found"]
    assert_clean(world, result)


def test_tiling_kml_that_is_not_a_kml_falls_back_to_computed_footprints(world, tmp_path):
    kml = tmp_path / "S2A_tiling.kml"
    kml.write_bytes(b"\x00\x01 not a KML at all")
    world.snapshot(kml)
    result = world.run("--t", "32UMA", "--dry-run", "--kml", kml)
    assert result.returncode == 0, result.output
    assert warning_messages(result.stderr) == [
        f"{kml}: not a readable tiling KML (Start tag expected, '<' not found, line 1, column 1 (S2A_tiling.kml, "
        "line 1)); tile footprints are computed from the grid instead"]
    assert result.stdout.splitlines()[0] == PRESENT_32UMA
    assert_clean(world, result)


# --- the output folder ----------------------------------------------------------------------

def test_output_folder_that_is_a_file(world, tmp_path):
    target = tmp_path / "dem.txt"
    target.write_text("my notes\n")
    world.snapshot(target)
    result = world.run("--t", "32UMA", "--o", target)
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"{target}: the output folder is a file"]
    assert_clean(world, result)


def test_output_folder_inside_a_file(world, tmp_path):
    target = tmp_path / "dem.txt"
    target.write_text("my notes\n")
    world.snapshot(target)
    result = world.run("--t", "32UMA", "--o", target / "dem")
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"{target / 'dem'}: cannot create the output folder (Not a directory)"]
    assert_clean(world, result)


def _mount(options: str, where: Path) -> None:
    """Mount a tmpfs at ``where`` with ``options``, or skip saying why it cannot be done here."""
    where.mkdir(parents=True, exist_ok=True)
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs ({proc.stderr.strip() or proc.returncode})")


@pytest.fixture
def mounts():
    """Mount points made by a test, unmounted at teardown whatever happened."""
    made: list[Path] = []
    yield made
    for where in reversed(made):
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.fixture
def read_only_folder(tmp_path, mounts) -> Path:
    """An existing folder nobody can write into (as root, chmod is not enough: a read-only mount)."""
    where = tmp_path / "ro"
    where.mkdir()
    if os.name == "posix" and os.geteuid() != 0:
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
        return
    _mount("ro,size=64k", where)
    mounts.append(where)
    yield where


@pytest.mark.parametrize("inside", [False, True], ids=["is-read-only", "to-create-in-read-only"])
def test_read_only_output_folder(world, read_only_folder, inside):
    target = read_only_folder / "dem" if inside else read_only_folder
    result = world.run("--t", "32UMA", "--o", target)
    assert result.returncode == 2
    reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    what = "cannot create the output folder" if inside else "cannot write into the output folder"
    assert error_messages(result.stderr) == [f"{target}: {what} ({reason})"]
    assert_clean(world, result)


# --- the name → id JSON -----------------------------------------------------------------------

@pytest.mark.parametrize("content, why", [
    (b"{\"Copernicus_DSM_30_N49_00_E007_00_DEM.tif\": \"a", "it is not valid JSON (Unterminated string starting "
                                                           "at: line 1 column 46 (char 45))"),
    (b"\x00\x00garbage", "it is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    (b"[\"a list\"]", "it is not a flat {file name: product Id} object"),
    (b"{\"Copernicus_DSM_30_N49_00_E007_00_DEM.tif\": 42}", "it is not a flat {file name: product Id} object"),
], ids=["truncated", "binary", "a-list", "not-strings"])
def test_corrupt_json_is_set_aside_and_rebuilt(world, matrix_sim, content, why):
    record = world.out / JSON_NAME
    expected = json.loads(record.read_text())
    record.write_bytes(content)
    world.snapshot()
    result = world.run("--t", "32UMA")
    assert result.returncode == 0, result.output
    asides = sorted(world.out.glob(f"{JSON_NAME}.corrupt-*"))
    assert len(asides) == 1 and asides[0].read_bytes() == content  # kept for the user, as it was
    assert warning_messages(result.stderr) == [
        f"{record} is unusable ({why}): renamed to {asides[0].name}, starting a new one"]
    assert json.loads(record.read_text()) == expected  # rebuilt
    shutil.move(asides[0], world.home / asides[0].name)  # out of the way of the next check only
    assert check_consistent(world.out, matrix_sim) == expected
    assert_clean(world, result, record)


def test_json_that_is_a_folder_is_set_aside_and_rebuilt(world):
    record = world.out / JSON_NAME
    expected = json.loads(record.read_text())
    record.unlink()
    record.mkdir()
    (record / "note.txt").write_text("a folder where the JSON should be\n")
    world.snapshot()
    result = world.run("--t", "32UMA")
    assert result.returncode == 0, result.output
    asides = sorted(world.out.glob(f"{JSON_NAME}.corrupt-*"))
    assert len(asides) == 1 and (asides[0] / "note.txt").is_file()
    assert warning_messages(result.stderr) == [
        f"{record} is unusable (it cannot be read (Is a directory)): renamed to {asides[0].name}, starting a new one"]
    assert json.loads(record.read_text()) == expected
    assert_clean(world, result, record / "note.txt")


# --- credentials.yaml -----------------------------------------------------------------------

@pytest.mark.parametrize("content, reason", [
    ("entries: [unclosed\n", "expected ',' or ']', but got '<stream end>' at line 2"),
    ("- just\n- a list\n", "not a mapping"),
    ("version: 1\nentries:\n  root: {username: x}\n", "entry 'root' is malformed"),
    ("!!python/object/apply:os.system ['echo owned']\n",
     "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system' at line 1"),
], ids=["syntax", "list", "malformed-entry", "python-tag"])
def test_corrupt_credentials_yaml(world, content, reason):
    store = world.home / "credentials" / "credentials.yaml"
    store.write_text(content)
    world.snapshot()
    before = world.sim.request_log()
    result = world.run("--t", "31TCJ")
    assert result.returncode == 2
    assert error_messages(result.stderr) == [f"{store}: unreadable stored credentials ({reason}); {RESET_HINT}"]
    assert sorted(p.name for p in store.parent.iterdir()) == ["credentials.yaml", "private_key.pem"]
    assert [r for r in world.sim.request_log()[len(before):] if r.grant_type or r.server == "download"] == []
    assert_clean(world, result)


# --- the catalogue ----------------------------------------------------------------------------

def test_catalogue_that_never_answers_json(world, make_sim):
    # the retries without their waits (~15 s): test_catalogue.py checks those, in-process
    sim = make_sim(users=[User(USER, SECRET)], faults=Faults(catalogue_garbage_rate=1.0))
    result = world.run("--t", "31TCJ", sim=sim, entry=NO_RETRY_WAITS)
    assert result.returncode == 1
    assert error_messages(result.stderr) == [
        f"Tile 31TCJ: CDSE catalogue gave an answer that is not JSON after 6 tries ({sim.catalogue_url}/Products)"]
    assert "failed: Copernicus_DSM_30_N43_00_E000_00_DEM.tif" in result.stdout
    assert [r for r in sim.request_log() if r.grant_type or r.server == "download"] == []  # no login, no download
    assert_clean(world, result)


class _Refuses(BaseHTTPRequestHandler):
    """A catalogue that answers every search 400, as CDSE does to a filter it does not understand."""

    def do_GET(self):
        body = json.dumps({"detail": "Invalid filter: unknown function tolower"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_catalogue_that_answers_400(world):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = dict(world.env(), CDSE_CATALOGUE_URL=f"http://127.0.0.1:{server.server_port}/odata/v1")
        result = run_cli("--t", "31TCJ", env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert error_messages(result.stderr) == [
        "Tile 31TCJ: CDSE catalogue refused the search: HTTP 400 Invalid filter: unknown function tolower"]
    assert "CDSE catalogue gave" not in result.stderr  # a 400 is not retried
    assert_clean(world, result)


# --- a full disk ------------------------------------------------------------------------------

def _sizes(world: World) -> tuple[int, int]:
    """The largest zip (as the catalogue says) and the smallest DEM layer (on disk) of 32UMA's products."""
    import requests

    record = json.loads((world.out / JSON_NAME).read_text())
    zips = [requests.get(f"{world.sim.catalogue_url}/Products({pid})", timeout=30).json()["ContentLength"]
            for pid in record.values()]
    return max(zips), min(len(data) for data in dem_files(world.out).values())


def test_disk_full_while_extracting(world, tmp_path, mounts):
    zip_size, dem_size = _sizes(world)
    page = 4096
    # room for keep.txt (1 page) and the zip; then the DEM layer (more than 2 pages) does not fit
    room = (1 + -(-zip_size // page) + 2) * page
    assert dem_size > 2 * page
    disk = tmp_path / "small-disk"
    _mount(f"size={room}", disk)
    mounts.append(disk)
    keep = disk / "keep.txt"
    keep.write_text("already here\n")
    world.snapshot(keep)
    result = world.run("--t", "32UMA", "--o", disk, "--workers", "1", "--transfer", "zip")  # zip, then extraction
    assert result.returncode == 1, result.output
    assert error_messages(result.stderr) == [f"no space left to write in {disk} (No space left on device)"]
    assert dem_files(disk) == {}  # nothing half-written under a final name
    assert sorted(p.name for p in disk.iterdir()) == ["keep.txt"]  # no temporary, no zip left
    assert_clean(world, result)


def test_disk_full_while_downloading(world, tmp_path):
    """A file-size limit (RLIMIT_FSIZE, works without root): the first write past it fails with EFBIG."""
    out = tmp_path / "dem"
    script = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192)); os.execv(sys.executable, sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", script, sys.executable, str(ENTRY), "--t", "32UMA", "--o", str(out)],
                          env=dict(os.environ, **world.env()), capture_output=True, text=True, timeout=120,
                          check=False)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert result.returncode == 1, result.output
    assert error_messages(result.stderr) == [f"no space left to write in {out} (File too large)"]
    assert dem_files(out) == {}
    assert [p.name for p in out.iterdir()] == []
    assert_clean(world, result)


def test_every_row_starts_from_a_world_worth_losing(world):
    """The premise of 'nothing lost': stored credentials and six whole DEMs are really there."""
    names = {p.relative_to(world.home).as_posix() for p in world.before}
    assert {"credentials/credentials.yaml", "credentials/private_key.pem", f"output_dir/{JSON_NAME}"} <= names
    assert len(dem_files(world.out)) == 6
    stored = (world.home / "credentials" / "credentials.yaml").read_text()
    assert USER in stored and SECRET not in stored  # stored encrypted
