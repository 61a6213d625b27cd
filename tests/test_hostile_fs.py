"""Issue 11, the filesystem and input half: a careless user and a hostile local world.

Each test is one row of the issue (3, 4, 10, 13, 14, 16, 17, 18, 20, 21, and the tile-list
messages), run through the real command line where a user would see it: the exit status, the
one-line message, the files on disk and their bytes. The last test runs every mode inside a
decoy tree and checks that nothing outside the output folder, the credentials folder and the
paths the user named is created, changed or removed.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulator import SimulatorConfig, User, start_simulator
from tests.helpers import (
    ENTRY,
    Result,
    check_consistent,
    dem_files,
    filled_tool_home,
    log_messages,
    run_cli,
    stored_credentials_env,
)

USER = "hostile.fs@example.com"
SECRET = "Kd4-hostile-fs-Pa55word-71qv"
JSON_NAME = "dict_filename_dem_id.json"
TILE = "32UMA"  # six geocells at 90 m


# --- the world: a tool home with stored credentials and 32UMA's six DEMs -------------------------

@pytest.fixture(scope="module")
def hsim(tmp_path_factory):
    config = SimulatorConfig(users=[User(USER, SECRET), User("demo@example.com", "demo")],
                             cache_dir=tmp_path_factory.getbasetemp() / "sim-cache")
    with start_simulator(config) as sim:
        yield sim


@pytest.fixture(scope="module")
def template(hsim, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hostile") / "home"
    return filled_tool_home(home, stored_credentials_env(hsim, home), USER, SECRET)


@dataclass
class World:
    root: Path  # the decoy tree around everything
    home: Path
    sim: object

    @property
    def out(self) -> Path:
        return self.home / "output_dir"

    @property
    def creds(self) -> Path:
        return self.home / "credentials"

    def env(self, **extra) -> dict:
        return stored_credentials_env(self.sim, self.home, **extra)

    def run(self, *args, **extra) -> Result:
        return run_cli(*args, env=self.env(**extra))

    def record(self) -> dict:
        return json.loads((self.out / JSON_NAME).read_text())


@pytest.fixture
def world(template, hsim, tmp_path) -> World:
    home = tmp_path / "home"
    shutil.copytree(template, home, symlinks=True)
    return World(tmp_path, home, hsim)


def errors(text: str) -> list[str]:
    return log_messages(text, "ERROR")


def warnings(text: str) -> list[str]:
    return log_messages(text, "WARNING")


def infos(text: str) -> list[str]:
    return log_messages(text, "INFO")


def assert_clean(result: Result) -> None:
    assert "Traceback" not in result.output
    assert SECRET not in result.output and "eyJ" not in result.output


def downloaded(sim, since: int) -> list[str]:
    """Product ids the download host served a file of (a zip, or a node file: not a listing) since
    request ``since`` of the log."""
    return [r.path.split("(")[1].split(")")[0] for r in sim.request_log()[since:]
            if r.server == "download" and r.status == 200 and r.path.endswith("/$value")]


def run_as_pid(args: list, env: dict, plant) -> Result:
    """The CLI in a process that first calls ``plant(pid)`` with its own pid, then becomes the tool
    (exec keeps the pid): how to put a file exactly where the tool names one after its pid."""
    script = ("import os, sys, json; exec(sys.argv[1]); plant(os.getpid()); "
              "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")
    proc = subprocess.run([sys.executable, "-c", script, plant, str(ENTRY), *map(str, args)],
                          env=dict(os.environ, **env), capture_output=True, text=True, timeout=120, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def write_test_link(target: Path, out: Path) -> str:
    """The ``plant`` of :func:`run_as_pid` that puts a symlink to ``target`` where the output folder's
    write test used to be created (``.write-test-<pid>``)."""
    return f"def plant(pid):\n    os.symlink({str(target)!r}, os.path.join({str(out)!r}, f'.write-test-{{pid}}'))\n"


# --- row 3: nothing the tool creates follows a symlink ------------------------------------------

@pytest.mark.parametrize("mode", [["--dry-run"], []], ids=["dry-run", "run"])
def test_a_symlink_named_like_the_write_test_file_leaves_its_target_whole(world, mode):
    victim = world.root / "victim.txt"
    victim.write_bytes(b"the user's precious file\n")
    plant = write_test_link(victim, world.out)
    result = run_as_pid(["--t", TILE, *mode], world.env(), plant)
    assert result.returncode == 0, result.output
    assert victim.read_bytes() == b"the user's precious file\n"
    assert_clean(result)


def test_a_summary_path_that_is_a_symlink_to_a_file_is_refused_and_both_stay(world):
    victim = world.root / "victim.json"
    victim.write_bytes(b"{\"mine\": true}\n")
    link = world.root / "summary.json"
    link.symlink_to(victim)
    result = world.run("--t", TILE, "--summary-json", link)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        f"{link}: cannot write the summary JSON (a symbolic link to a regular file: name the file itself)"]
    assert link.is_symlink() and victim.read_bytes() == b"{\"mine\": true}\n"
    assert_clean(result)


# --- row 4: a report into a device or a FIFO is written into, not replaced ---------------------

@pytest.fixture
def dev_stdout_guard():
    """Run as root, a tool that replaces /dev/stdout breaks it for the whole machine: put it back, then fail."""
    yield
    if not os.path.islink("/dev/stdout") and os.geteuid() == 0:
        os.unlink("/dev/stdout")
        os.symlink("/proc/self/fd/1", "/dev/stdout")
        pytest.fail("/dev/stdout was replaced by a regular file (restored)")


@pytest.mark.parametrize("option", ["--summary-json", "--kml-report"])
def test_a_report_to_dev_stdout_goes_to_stdout_and_the_device_link_stays(world, option, dev_stdout_guard):
    result = world.run("--t", TILE, "-q", option, "/dev/stdout")
    assert result.returncode == 0, result.output
    if option == "--summary-json":
        assert json.loads(result.stdout)["totals"]["geocells"] == 6  # -q: the JSON is all of stdout
    else:
        assert result.stdout.startswith("<kml") and "32UMA" in result.stdout
    assert os.path.islink("/dev/stdout") and os.readlink("/dev/stdout") == "/proc/self/fd/1"
    assert_clean(result)


def test_a_link_to_our_own_stdout_is_written_through_not_replaced(world):
    """What /dev/stdout is, but where replacing it would not need root (the bug: it was replaced)."""
    link = world.root / "stdout"
    link.symlink_to("/proc/self/fd/1")
    result = world.run("--t", TILE, "-q", "--summary-json", link)
    assert result.returncode == 0, result.output
    assert json.loads(result.stdout)["totals"]["geocells"] == 6
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    assert_clean(result)


@pytest.mark.parametrize("option", ["--summary-json", "--kml-report"])
def test_a_report_into_a_fifo_reaches_its_reader_and_the_fifo_stays(world, option):
    fifo = world.root / "report.fifo"
    os.mkfifo(fifo)
    received = []

    def reader():
        with open(fifo, "rb") as handle:  # blocks until the tool opens it for writing
            received.append(handle.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    result = world.run("--t", TILE, option, fifo)
    thread.join(timeout=30)
    assert result.returncode == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if option == "--summary-json":
        assert json.loads(received[0])["totals"]["geocells"] == 6
    else:
        assert received[0].startswith(b"<kml")
    assert_clean(result)


def test_a_fifo_nobody_reads_does_not_hang_the_run(world):
    fifo = world.root / "report.fifo"
    os.mkfifo(fifo)
    result = world.run("--t", TILE, "--summary-json", fifo)
    assert errors(result.stderr) == [f"{fifo}: cannot write the summary JSON (a FIFO that no process reads)"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert len(dem_files(world.out)) == 6
    assert_clean(result)


# --- row 10: a DEM member too large for a DEM, or not a regular file --------------------------

CELL = "Copernicus_DSM_30_N50_00_E007_00"  # 90 m
CELL_30 = "Copernicus_DSM_10_N50_00_E007_00"  # 30 m


def _zip_with(path: Path, info: zipfile.ZipInfo, data: bytes | None = None, size: int = 0) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ROOT/INSPIRE.xml", b"<xml/>")
        if data is not None:
            zf.writestr(info, data)
        else:
            with zf.open(info, "w", force_zip64=True) as member:
                chunk = bytes(1 << 20)
                for _ in range(size // len(chunk)):
                    member.write(chunk)
    return path


@pytest.mark.parametrize("cell, size, limit, resolution", [
    (CELL, 7 * (1 << 20), 7_000_000, 90), (CELL_30, 58 * (1 << 20), 60_000_000, 30)], ids=["90m", "30m"])
def test_a_dem_member_inflating_past_a_dem_is_refused_before_a_byte_is_written(tmp_path, cell, size, limit,
                                                                                resolution):
    from cdse_dem.dem_folder import extract_dem
    from cdse_dem.errors import DemError

    out = tmp_path / "out"
    out.mkdir()
    name = f"ROOT/{cell}/DEM/{cell}_DEM.tif"
    zip_path = _zip_with(tmp_path / "bomb.zip", zipfile.ZipInfo(name), size=size)
    with pytest.raises(DemError) as caught:
        extract_dem(zip_path, out, expected_name=f"{cell}_DEM.tif")
    assert str(caught.value) == (f"refusing {name} in {zip_path}: it inflates to {size:,} bytes, more than a DEM "
                                 f"at {resolution} m can be ({limit:,})")
    assert list(out.iterdir()) == []


def test_a_symlink_member_named_like_the_dem_is_refused(tmp_path):
    from cdse_dem.dem_folder import extract_dem
    from cdse_dem.errors import DemError

    out = tmp_path / "out"
    out.mkdir()
    name = f"ROOT/{CELL}/DEM/{CELL}_DEM.tif"
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = _zip_with(tmp_path / "link.zip", info, data=b"/etc/passwd")
    with pytest.raises(DemError) as caught:
        extract_dem(zip_path, out, expected_name=f"{CELL}_DEM.tif")
    assert str(caught.value) == f"refusing {name} in {zip_path}: a symbolic link, not a regular file"
    assert list(out.iterdir()) == []


def test_a_refused_member_fails_its_geocell_and_the_run_goes_on(tmp_path):
    """Through the fetcher, as a run meets it: that geocell is failed, with the reason, nothing on disk."""
    from types import SimpleNamespace

    from cdse_dem.dem_folder import NameIdCache
    from cdse_dem.fetch import Fetcher
    from cdse_dem.grid import Geocell
    from cdse_dem.planning import CellState, Status

    out = tmp_path / "out"
    out.mkdir()
    info = zipfile.ZipInfo(f"ROOT/{CELL}/DEM/{CELL}_DEM.tif")
    info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
    zip_path = _zip_with(out / ".download.cdse-tmp", info, data=b"/etc/passwd")
    state = CellState(Geocell(50, 7), f"{CELL}_DEM.tif", product=SimpleNamespace(id="p1"))
    fetcher = Fetcher(open_session=None, http=None, endpoints=None, out_dir=out, cache=NameIdCache(out),
                      workers=1)
    fetcher._extract_locked(state, SimpleNamespace(zip_path=zip_path, bytes=100))
    assert state.status == Status.FAILED and "a symbolic link, not a regular file" in state.error
    assert list(out.iterdir()) == []  # no DEM, no record, the zip removed


# --- row 13: files from another product than this run chose ----------------------------------

def test_files_of_another_delivery_are_fetched_again_and_the_log_says_so(world):
    before = world.record()
    since = len(world.sim.request_log())
    result = world.run("--t", TILE, "-d", "2021_1")
    assert result.returncode == 0, result.output
    fetched = downloaded(world.sim, since)  # before check_consistent fetches the reference bytes
    after = check_consistent(world.out, world.sim)
    assert set(after) == set(before) and all(after[name] != before[name] for name in before)
    assert sorted(fetched) == sorted(after.values())
    lines = [line for line in infos(result.stderr) if "this run chose" in line]
    assert sorted(lines) == sorted(f"{name} came from product {before[name]}; this run chose {after[name]}: "
                                   "downloading it again" for name in before)
    assert_clean(result)


def test_keep_existing_keeps_them_and_says_so_once(world):
    before = world.record()
    bytes_before = dem_files(world.out)
    since = len(world.sim.request_log())
    result = world.run("--t", TILE, "-d", "2021_1", "--keep-existing")
    assert result.returncode == 0, result.output
    assert world.record() == before and dem_files(world.out) == bytes_before
    assert downloaded(world.sim, since) == []
    assert [line for line in infos(result.stderr) if "--keep-existing" in line] == [
        "--keep-existing: 6 geocell(s) already present kept as they are"]
    assert_clean(result)


def test_a_rerun_with_the_same_choice_neither_searches_nor_downloads(world):
    before = world.record()
    since = len(world.sim.request_log())
    result = world.run("--t", TILE)
    assert result.returncode == 0, result.output
    assert world.record() == before
    records = world.sim.request_log()[since:]
    assert records == []  # known to come from this dataset: no search, no login, no download
    assert_clean(result)


def test_a_folder_without_provenance_is_compared_once_then_known(world):
    (world.out / "dict_filename_dem_dataset.json").unlink()  # as a folder filled by another tool
    before = world.record()
    since = len(world.sim.request_log())
    first = world.run("--t", TILE)
    assert first.returncode == 0, first.output
    records = world.sim.request_log()[since:]
    assert [r for r in records if r.server == "download" or r.grant_type] == []  # no login, no download
    assert any(r.server == "catalogue" and "/Products" in r.path for r in records)  # but compared
    assert world.record() == before
    since = len(world.sim.request_log())
    second = world.run("--t", TILE)
    assert second.returncode == 0, second.output
    assert world.sim.request_log()[since:] == []


# --- row 14: a recorded file that is not a whole DEM is fetched again --------------------------

@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_recorded_dem_is_fetched_again(world, damage):
    record = world.record()
    name = sorted(record)[0]
    good = (world.out / name).read_bytes()
    path = world.out / name
    if damage == "truncate":
        path.write_bytes(good[:100])
    else:
        path.write_bytes(os.urandom(len(good)))
    since = len(world.sim.request_log())
    result = world.run("--t", TILE)
    assert result.returncode == 0, result.output
    assert path.read_bytes() == good
    assert downloaded(world.sim, since) == [record[name]]  # that one only
    assert len([w for w in warnings(result.stderr) if w.startswith(f"{name} is recorded but is not a whole DEM (")
                and w.endswith("): downloading it again")]) == 1
    assert check_consistent(world.out) == record
    assert_clean(result)


# --- row 16: private files left readable by others --------------------------------------------

@pytest.mark.parametrize("name", ["credentials.yaml", "private_key.pem"])
def test_a_credentials_file_readable_by_others_is_named_and_made_private(world, name):
    path = world.creds / name
    path.chmod(0o644)
    result = world.run("--t", TILE)
    assert result.returncode == 0, result.output
    assert warnings(result.stderr) == [f"{path} was readable by others (mode 0644): now 0600"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert_clean(result)


def test_a_credentials_file_of_another_account_is_only_reported(world):
    path = world.creds / "private_key.pem"
    if os.geteuid() != 0:
        pytest.skip("giving a file to another account needs root")
    path.chmod(0o644)
    os.chown(path, 54321, -1)
    result = world.run("--t", TILE)
    assert result.returncode == 0, result.output
    assert warnings(result.stderr) == [f"{path} is readable by others (mode 0644) and belongs to another account: "
                                       "ask its owner to make it 0600"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert_clean(result)


# --- row 17: a configuration with an internal entity --------------------------------------------

def test_a_configuration_with_an_internal_entity_is_one_line_exit_2(world):
    config = world.root / "configuration.xml"
    config.write_text("""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE DEM_DOWNLOADER_CONFIGURATION_FILE [<!ENTITY coll "CCM">]>
<DEM_DOWNLOADER_CONFIGURATION_FILE>
  <DEM_Option>
    <Collection>&coll;</Collection>
    <Resolution>90</Resolution>
    <Elevation_Model>DGED</Elevation_Model>
    <Tiles_Input_File>DEFAULT</Tiles_Input_File>
    <DEM_Output_Directory>DEFAULT</DEM_Output_Directory>
  </DEM_Option>
</DEM_DOWNLOADER_CONFIGURATION_FILE>
""")
    result = world.run("--config", config)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        f"{config}:2: a DOCTYPE (DTD, entity declarations) is not allowed in a configuration file"]
    assert_clean(result)


# --- row 18: an output path that is not UTF-8 ------------------------------------------------

def test_an_output_path_that_is_not_utf8_is_written_as_the_filesystem_names_it(world):
    raw_out = os.fsencode(world.root) + b"/dem-\xff\xfe"
    summary, log_file = world.root / "summary.json", world.root / "run.log"
    proc = subprocess.run([os.fsencode(sys.executable), os.fsencode(ENTRY), b"--t", TILE.encode(), b"--o", raw_out,
                           b"--summary-json", os.fsencode(summary), b"--log-file", os.fsencode(log_file)],
                          env=dict(os.environ, **world.env()), capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr + log_file.read_bytes()
    data = summary.read_bytes()
    files = [c["file"] for t in json.loads(data.decode("utf-8", "surrogateescape"))["tiles"] for c in t["geocells"]]
    assert len(files) == 6 and all(os.fsencode(f).startswith(raw_out + b"/") for f in files)
    assert raw_out + b"/" in data  # the bytes of the path, as the filesystem has them
    assert len(dem_files(Path(os.fsdecode(raw_out)))) == 6


# --- row 20: ~ with no home ------------------------------------------------------------------

def test_a_tilde_with_an_empty_home_is_an_error_and_nothing_is_written_to_the_root(world):
    name = f"cdse-dem-test-{os.getpid()}-{os.urandom(4).hex()}"  # where '~/<name>' used to land: /<name>
    try:
        result = world.run("--t", TILE, "-o", f"~/{name}", HOME="")
        assert result.returncode == 2
        assert errors(result.stderr) == [
            f"~/{name}: cannot use it as the output folder (HOME is empty, so '~' names no folder)"]
        assert not os.path.exists(f"/{name}")
        assert_clean(result)
    finally:
        shutil.rmtree(f"/{name}", ignore_errors=True)  # a regression must not leave DEMs at the root


# --- row 21: a record that is not a regular file; a summary over the record ----------------------

def test_a_fifo_named_like_the_record_is_refused_without_hanging(world):
    record = world.out / JSON_NAME
    record.unlink()
    os.mkfifo(record)
    result = run_cli("--t", TILE, env=world.env(), timeout=60)
    assert result.returncode == 2
    assert errors(result.stderr) == [f"{record}: a FIFO (named pipe), not a regular file; this name is the output "
                                     "folder's record: move it away and run again"]
    assert stat.S_ISFIFO(os.lstat(record).st_mode)
    assert_clean(result)


def test_a_summary_pointed_at_the_record_is_refused(world):
    record = world.out / JSON_NAME
    before = record.read_bytes()
    result = world.run("--t", TILE, "--summary-json", record)
    assert result.returncode == 2
    assert errors(result.stderr) == [
        f"{record}: cannot write the summary JSON there: it is the output folder's record {JSON_NAME}"]
    assert record.read_bytes() == before
    assert_clean(result)


# --- the tile list: UTF-16, escapes, a huge line, U+2028 -------------------------------------

@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_tile_list_is_named_as_such_with_how_to_convert(world, encoding):
    tiles = world.root / "tiles.txt"
    tiles.write_bytes("32UMA\r\n31TCJ\r\n".encode(encoding))
    result = world.run("--i", tiles)
    assert result.returncode == 2
    assert errors(result.stderr) == [f"{tiles}: a UTF-16 text file, not UTF-8: convert it, e.g. "
                                     f"iconv -f UTF-16 -t UTF-8 '{tiles}' > tiles.txt (or save it as UTF-8)"]
    assert_clean(result)


def test_entries_are_shown_escaped_cut_and_numbered_by_newlines(world):
    tiles = world.root / "tiles.txt"
    huge = "Y" * 10_000_000
    tiles.write_text(f"32UMA\u2028X\n\x1b]0;owned\x07\x1b[2J\n{huge}\n32UMX\n31TCJ\n", encoding="utf-8")
    result = world.run("--i", tiles, "--dry-run")
    assert result.returncode == 1
    assert errors(result.stderr) == [
        f"{tiles}:1: '32UMA\\u2028X' is not a Sentinel-2 tile id or SAFE name",
        f"{tiles}:2: '\\x1b]0;owned\\x07\\x1b[2J' is not a Sentinel-2 tile id or SAFE name",
        f"{tiles}:3: '{'Y' * 120}… (10,000,000 characters)' is not a Sentinel-2 tile id or SAFE name",
        f"{tiles}:4: '32UMX' is not a Sentinel-2 tile id or SAFE name",
    ]
    assert "\x1b" not in result.output
    assert len(result.output) < 100_000
    assert_clean(result)


# --- nothing outside: a decoy tree around every mode --------------------------------------------

def _tree(root: Path, allowed: list[Path]) -> dict:
    """Every entry under ``root`` but the allowed ones: its kind, mode, owner, link target and content."""
    allowed_set = {p.absolute() for p in allowed}
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).absolute() not in allowed_set]
        for name in dirnames + filenames:
            path = here / name
            if path.absolute() in allowed_set:
                continue
            st = os.lstat(path)
            entry = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid)
            if not stat.S_ISDIR(st.st_mode):  # a folder's own times change with an allowed path in it
                entry += (st.st_size, st.st_mtime_ns)
            if stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            elif stat.S_ISREG(st.st_mode):
                entry += (hashlib.sha256(path.read_bytes()).hexdigest(),)
            seen[path] = entry
    return seen


def test_nothing_outside_the_output_credentials_and_named_paths_is_touched(world, dev_stdout_guard):
    root = world.root
    decoy = root / "decoy"
    decoy.mkdir()
    (decoy / "victim.txt").write_bytes(b"precious\n")
    (decoy / "victim.tif").write_bytes(b"not a DEM, not yours\n")
    os.mkfifo(decoy / "a.fifo")
    (decoy / "out-link").symlink_to(world.out)
    (root / "victim-link").symlink_to(decoy / "victim.txt")
    # symlinks inside the output folder pointing out, named like files the tool writes there
    (world.out / "Copernicus_DSM_30_N45_00_E009_00_DEM.tif").symlink_to(decoy / "victim.tif")
    (world.out / f"{JSON_NAME}.corrupt-19700101T000000").symlink_to(decoy / "victim.txt")
    reports = root / "reports"
    reports.mkdir()
    summary, kml, log_file = reports / "run.json", reports / "run.kml", reports / "run.log"
    config = root / "configuration.xml"
    config.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<DEM_DOWNLOADER_CONFIGURATION_FILE>
  <DEM_Option>
    <Collection>CCM</Collection>
    <Delivery_Id>2022_1</Delivery_Id>
    <Resolution>90</Resolution>
    <Elevation_Model>DGED</Elevation_Model>
    <Tiles_Input_File>tiles.txt</Tiles_Input_File>
    <DEM_Output_Directory>{world.out}</DEM_Output_Directory>
  </DEM_Option>
</DEM_DOWNLOADER_CONFIGURATION_FILE>
""")
    (root / "tiles.txt").write_text("32UMA\n# a comment\nT32TMT\n")
    allowed = [world.out, world.creds, summary, kml, log_file, Path("/dev/stdout")]
    before = _tree(root, allowed)
    assert before[decoy / "a.fifo"][0] == stat.S_IFIFO

    tilde = f"~/cdse-dem-decoy-{os.getpid()}-{os.urandom(4).hex()}"
    reports_args = ["--summary-json", summary, "--kml-report", kml, "--log-file", log_file]
    modes = [
        ["--t", TILE, "--dry-run", *reports_args],
        ["--t", TILE, *reports_args],
        ["--t", TILE, "-d", "2021_1", *reports_args],
        ["--t", TILE, "-d", "2023_1", "--keep-existing"],
        ["--config", config, *reports_args],
        ["--t", TILE, "--summary-json", "/dev/stdout"],
        ["--t", TILE, "--summary-json", world.out / JSON_NAME],  # refused
        ["--t", TILE, "--summary-json", root / "victim-link"],  # refused
        ["--t", TILE, "--kml-report", decoy / "out-link"],  # a folder: refused
        ["--t", TILE, "-o", tilde],  # HOME empty below: refused (it was /<name>)
    ]
    for args in modes:
        result = world.run(*args, HOME="" if tilde in args else str(root / "no-home"))
        at_root = os.path.exists(tilde[1:])
        shutil.rmtree(tilde[1:], ignore_errors=True)  # where a regression writes: removed, then failed
        assert not at_root, args
        assert result.returncode in (0, 1, 2), (args, result.output)
        assert_clean(result)
        assert _tree(root, allowed) == before, args
    # and the write test of the output folder, with a symlink waiting under the name it once had
    plant = write_test_link(decoy / "victim.txt", world.out)
    for args in (["--t", TILE, "--dry-run"], ["--t", TILE]):
        result = run_as_pid(args, world.env(HOME=str(root / "no-home")), plant)
        assert result.returncode == 0, (args, result.output)
        assert _tree(root, allowed) == before, args
    result = world.run("--reset", "--yes", HOME=str(root / "no-home"))
    assert result.returncode == 0, result.output
    assert _tree(root, allowed) == before
    assert (decoy / "victim.txt").read_bytes() == b"precious\n"


def test_the_plan_hook_replans_a_present_cell_once_and_reports_it():
    """mark_to_compare + apply_area: a present cell not known to come from this dataset is compared
    once (several areas may reach it), then planned again when the product differs; a cell the
    catalogue has nothing for stays present; a confirmed one is marked so."""
    from cdse_dem.catalogue import Product
    from cdse_dem.grid import Geocell
    from cdse_dem.planning import Status, TilePlan, apply_area, cells_to_search, mark_to_compare, start_plan
    from cdse_dem.tiles import Entry

    a, b, c, d = Geocell(49, 7), Geocell(49, 8), Geocell(50, 7), Geocell(50, 8)
    tiles = [TilePlan(Entry(t, "command line", None, tile=t), t, "computed", cells)
             for t, cells in (("AAAAA", [a, b]), ("BBBBB", [b, c, d]))]

    def product(cell, pid):
        return Product(pid, "n", cell, 10, None, None, "2021_1", "", "", "", True)

    plan = start_plan(tiles, lambda cell: cell.grid_id, lambda name: f"old-{name}")
    assert cells_to_search(plan) == []
    assert mark_to_compare(plan, lambda name: name == d.grid_id) == 3  # d is known to come from this dataset
    assert cells_to_search(plan) == [a, b, c]
    first = apply_area(plan, [a, b], {a: product(a, "new-a"), b: product(b, f"old-{b.grid_id}")})
    second = apply_area(plan, [b, c], {b: product(b, "never-compared-twice")})
    assert [(o.state.geocell, o.recorded_id) for o in first] == [(a, f"old-{a.grid_id}")]
    assert second == []
    assert plan.cells[a].status == Status.PLANNED and plan.cells[a].product_id == "new-a"
    assert plan.cells[b].status == Status.PRESENT and plan.cells[b].product_id == f"old-{b.grid_id}"
    assert plan.cells[b].confirmed
    assert plan.cells[c].status == Status.PRESENT and not plan.cells[c].confirmed  # nothing chosen: what is there stays
    assert plan.cells[d].status == Status.PRESENT and cells_to_search(plan) == []
