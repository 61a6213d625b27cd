"""Issue 23, the local half: other users of the machine, files that lie, files that are no files.

Each test is one row of the issue (1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 20; the
network rows are in test_hostile.py), run where a user meets it: the real command line against
the simulator (the exit status, the one line that explains it, the files on disk and their
bytes), or the Python API for the API's rows. The user's own files are checked byte for byte
after every run that could have touched them.
"""

import fcntl
import hashlib
import json
import logging
import os
import random
import resource
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from simulator import SimulatorConfig, start_simulator
from tests.helpers import (
    DEMO_PASSWORD,
    DEMO_USER,
    ENTRY,
    Result,
    check_consistent,
    cli_env,
    dem_files,
    log_messages,
    run_cli,
    whole_dem_bytes,
)

TILE = "32UMA"  # six geocells at 90 m
JSON_NAME = "dict_filename_dem_id.json"
PRECIOUS = b"the user's precious file: not one byte of it may change\n"
CELL = "Copernicus_DSM_30_N50_00_E007_00"
DEM = f"{CELL}_DEM.tif"
HANG_GUARD = 60  # seconds: only so that a regression cannot hang the suite; never a measured bound


@pytest.fixture(scope="module")
def lsim(tmp_path_factory):
    with start_simulator(SimulatorConfig(cache_dir=tmp_path_factory.getbasetemp() / "sim-cache")) as sim:
        yield sim


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "precious.txt"
    path.write_bytes(PRECIOUS)
    return path


def run(sim, *args, **env) -> Result:
    result = run_cli(*args, env=cli_env(sim, **env), timeout=HANG_GUARD)
    assert "Traceback" not in result.output, result.output
    return result


def errors(text: str) -> list[str]:
    return log_messages(text, "ERROR")


def warnings(text: str) -> list[str]:
    return log_messages(text, "WARNING")


def slot_folder(sim, base: Path) -> Path:
    """The account's slot folder under ``base``, named as the README says: a hash of the token URL and
    the user name (worked out here, not by the tool's own function)."""
    digest = hashlib.sha256(f"{sim.token_url}\0{DEMO_USER}".encode()).hexdigest()[:24]
    return base / digest


# --- row 1: another local user's slot folder, with links to the user's file ----------------------

def _links_to(folder: Path, victim: Path) -> None:
    for n in range(4):
        (folder / f"slot-{n}").symlink_to(victim)


@pytest.mark.parametrize("made", ["by another user", "writable by others", "a link to a folder",
                                  "under the system temp folder"])
def test_a_slot_folder_someone_else_made_is_refused_and_the_linked_file_stays_whole(lsim, tool_home, tmp_path,
                                                                                    victim, made):
    base = tmp_path / "slots"
    base.mkdir(mode=0o700)
    env = {"CDSE_DEM_SLOTS_DIR": str(base)}
    if made == "under the system temp folder":  # the default place, at a name anyone can foresee
        base = tmp_path / f"cdse-dem-slots-{os.getuid()}"
        base.mkdir(mode=0o700)
        env = {"CDSE_DEM_SLOTS_DIR": "", "TMPDIR": str(tmp_path)}
    folder = slot_folder(lsim, base)
    if made == "a link to a folder":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        folder.symlink_to(elsewhere)
        _links_to(elsewhere, victim)
    else:
        folder.mkdir(mode=0o700)
        _links_to(folder, victim)
        if made == "by another user" or made == "under the system temp folder":
            if os.geteuid() != 0:
                pytest.skip("giving a folder to another user needs root")
            os.chown(folder, 54321, 54321)
        else:
            folder.chmod(0o777)
    result = run(lsim, "--t", TILE, "--o", tmp_path / "dem", **env)
    assert result.returncode == 2
    problem = {"by another user": "a folder of another user (uid 54321)",
               "under the system temp folder": "a folder of another user (uid 54321)",
               "writable by others": "a folder others may write into (mode 0777)",
               "a link to a folder": "a symbolic link, not a folder"}[made]
    assert errors(result.stderr) == [f"{folder}: {problem}, so it cannot hold this account's download slots; remove "
                                     "it, or set CDSE_DEM_SLOTS_DIR to a folder of your own"]
    assert victim.read_bytes() == PRECIOUS
    assert not (tmp_path / "dem").exists() or dem_files(tmp_path / "dem") == {}


def test_links_in_the_users_own_slot_folder_are_refused_and_the_linked_file_stays_whole(lsim, tool_home, tmp_path,
                                                                                        victim):
    base = tmp_path / "slots"
    base.mkdir(mode=0o700)
    folder = slot_folder(lsim, base)
    folder.mkdir(mode=0o700)
    _links_to(folder, victim)
    result = run(lsim, "--t", TILE, "--o", tmp_path / "dem", CDSE_DEM_SLOTS_DIR=str(base))
    assert result.returncode == 2
    assert errors(result.stderr) == [f"{folder / 'slot-0'}: a symbolic link, not a download slot of this tool: left "
                                     f"alone; remove {folder} (it holds only slot locks) and run again"]
    assert victim.read_bytes() == PRECIOUS
    assert all((folder / f"slot-{n}").is_symlink() for n in range(4))


def test_a_slot_file_is_locked_but_never_written_into_or_truncated(lsim, tool_home, tmp_path):
    base = tmp_path / "slots"
    base.mkdir(mode=0o700)
    folder = slot_folder(lsim, base)
    folder.mkdir(mode=0o700)
    for n in range(4):
        (folder / f"slot-{n}").write_bytes(b"bytes that were here before\n")
    result = run(lsim, "--t", TILE, "--o", tmp_path / "dem", CDSE_DEM_SLOTS_DIR=str(base))
    assert result.returncode == 0, result.output
    assert {(folder / f"slot-{n}").read_bytes() for n in range(4)} == {b"bytes that were here before\n"}
    assert len(check_consistent(tmp_path / "dem")) == 6


# --- row 11: the slot folder's base is a regular file ---------------------------------------------

@pytest.mark.parametrize("where", ["CDSE_DEM_SLOTS_DIR", "the system temp folder"])
def test_a_slot_base_that_is_a_file_is_one_line_exit_2(lsim, tool_home, tmp_path, where):
    if where == "CDSE_DEM_SLOTS_DIR":
        base, env = tmp_path / "slots", {"CDSE_DEM_SLOTS_DIR": str(tmp_path / "slots")}
    else:
        base, env = tmp_path / f"cdse-dem-slots-{os.getuid()}", {"CDSE_DEM_SLOTS_DIR": "", "TMPDIR": str(tmp_path)}
    base.write_bytes(PRECIOUS)
    result = run(lsim, "--t", TILE, "--o", tmp_path / "dem", **env)
    assert result.returncode == 2
    assert errors(result.stderr) == [f"{base}: a regular file, not a folder, so it cannot hold this account's "
                                     "download slots; remove it, or set CDSE_DEM_SLOTS_DIR to a folder of your own"]
    assert base.read_bytes() == PRECIOUS


# --- row 12: another run (another user) holds every slot of the account ----------------------------

@pytest.fixture
def held_slots(lsim, tmp_path, monkeypatch):
    """All four slots of the demo account locked by someone else (open file descriptions of this process,
    as another user's run would hold them); the slot folder in CDSE_DEM_SLOTS_DIR."""
    base = tmp_path / "slots"
    base.mkdir(mode=0o700)
    folder = slot_folder(lsim, base)
    folder.mkdir(mode=0o700)
    held = []
    for n in range(4):
        fd = os.open(folder / f"slot-{n}", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(fd)
    monkeypatch.setenv("CDSE_DEM_SLOTS_DIR", str(base))
    yield folder
    for fd in held:
        os.close(fd)


def test_a_run_waiting_for_the_accounts_slots_says_so_each_minute_and_a_stop_ends_the_wait(lsim, tool_home, tmp_path,
                                                                                         held_slots, monkeypatch,
                                                                                         caplog):
    import cdse_dem
    from cdse_dem import fsutil

    monkeypatch.setattr(fsutil, "SLOT_WAIT_REPORT", 0.2)  # a minute in a real run
    lsim.clear_log()
    for name, value in lsim.env.items():
        monkeypatch.setenv(name, value)
    stop = threading.Event()
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("result", cdse_dem.download(
        [TILE], tmp_path / "dem", credentials=(DEMO_USER, DEMO_PASSWORD), stop=stop, workers=1)))
    with caplog.at_level(logging.INFO, logger="cdse_dem"):
        worker.start()
        while sum("Still waiting for a download connection" in r.getMessage() for r in caplog.records) < 2:
            assert worker.is_alive(), box
            time.sleep(0.05)
        stop.set()
        worker.join(HANG_GUARD)
    assert not worker.is_alive()
    result = box["result"]
    assert result.interrupted and result.exit_status == 130
    waits = [r.getMessage() for r in caplog.records if "Still waiting" in r.getMessage()]
    assert all(m.startswith("Still waiting for a download connection after ") and m.endswith(
        f" s: the 1 this CDSE account may have on this machine are all held by other runs (slot locks in {held_slots})")
        for m in waits)
    assert not [r for r in lsim.request_log() if r.server == "download"]


def test_sigterm_ends_a_command_line_waiting_for_the_accounts_slots(lsim, tool_home, tmp_path, held_slots):
    lsim.clear_log()
    env = dict(os.environ, **cli_env(lsim))
    proc = subprocess.Popen([sys.executable, str(ENTRY), "--t", TILE, "--o", str(tmp_path / "dem")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_GUARD
    while not [r for r in lsim.request_log() if r.grant_type == "password"]:  # logged in: the downloads wait
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.5)
    proc.terminate()
    _, stderr = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert not [r for r in lsim.request_log() if r.server == "download"]


# --- rows 2 and 13: a lock name in the output folder that is not a lock file ----------------------

def lock_name_holding(out: Path, name: str, kind: str, victim: Path) -> Path:
    """The lock file name of ``name`` in a new output folder ``out``, holding a link to ``victim`` or a folder."""
    out.mkdir()
    lock = out / f".{name}.cdse-lock"
    if kind == "a symbolic link":
        lock.symlink_to(victim)
    else:
        lock.mkdir()
    return lock


@pytest.mark.parametrize("kind", ["a symbolic link", "a folder"])
def test_a_geocell_lock_name_that_is_no_lock_file_fails_that_geocell_in_one_line(lsim, tool_home, tmp_path, victim,
                                                                                 kind):
    out = tmp_path / "dem"
    lock = lock_name_holding(out, DEM, kind, victim)
    result = run(lsim, "--t", TILE, "--o", out)
    assert result.returncode == 1
    assert errors(result.stderr) == [f"{DEM}: {lock}: {kind}, not a lock file of this tool: left alone; move it "
                                     "away and run again"]
    assert victim.read_bytes() == PRECIOUS
    assert lock.is_symlink() if kind == "a symbolic link" else lock.is_dir()
    record = json.loads((out / JSON_NAME).read_text())
    assert len(record) == 5 and DEM not in record
    assert set(dem_files(out)) == set(record)  # every DEM in the folder is recorded, and none is missing


@pytest.mark.parametrize("kind", ["a symbolic link", "a folder"])
def test_a_record_lock_name_that_is_no_lock_file_is_refused_before_any_work(lsim, tool_home, tmp_path, victim, kind):
    out = tmp_path / "dem"
    lock = lock_name_holding(out, JSON_NAME, kind, victim)
    lsim.clear_log()
    result = run(lsim, "--t", TILE, "--o", out)
    assert result.returncode == 2
    assert errors(result.stderr) == [f"{lock}: {kind}, not the lock file of the output folder's record: left alone; "
                                     "move it away and run again"]
    assert victim.read_bytes() == PRECIOUS
    assert lsim.request_log() == []
    assert sorted(p.name for p in out.iterdir()) == [lock.name]


def test_a_dem_that_cannot_be_recorded_is_taken_away_again(tmp_path):
    """The record's lock turning into a folder between the run's start and a geocell's end (row 13):
    the DEM just put in place is removed, its geocell failed; no DEM is left unrecorded."""
    import zipfile
    from types import SimpleNamespace

    from cdse_dem.dem_folder import NameIdCache
    from cdse_dem.fetch import Fetcher
    from cdse_dem.grid import Geocell
    from cdse_dem.planning import CellState, Status

    out = tmp_path / "out"
    out.mkdir()
    zip_path = out / ".download.zip.cdse-tmp"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr(f"ROOT/{CELL}/DEM/{DEM}", whole_dem_bytes(DEM))
    (out / f".{JSON_NAME}.cdse-lock").mkdir()
    state = CellState(Geocell(50, 7), DEM, product=SimpleNamespace(id="p1"))
    fetcher = Fetcher(open_session=None, http=None, endpoints=None, out_dir=out, cache=NameIdCache(out), workers=1)
    fetcher._extract_locked(state, SimpleNamespace(zip_path=zip_path, bytes=100))
    assert state.status == Status.FAILED
    assert state.error.startswith("cannot be recorded: ") and "a folder, not a lock file of this tool" in state.error
    assert sorted(p.name for p in out.iterdir()) == [f".{JSON_NAME}.cdse-lock"]


# --- row 5: GeoTIFFs and DTEDs whose bytes lie -------------------------------------------------------

def _ifd_entries(tif: bytes) -> dict[int, int]:
    """tag code -> the offset of its 12-byte entry in the first IFD (little-endian classic TIFF)."""
    first = struct.unpack_from("<I", tif, 4)[0]
    count = struct.unpack_from("<H", tif, first)[0]
    return {struct.unpack_from("<H", tif, first + 2 + 12 * n)[0]: first + 2 + 12 * n for n in range(count)}


def with_tag(tif: bytes, code: int, type_: int, count: int, value: bytes | None = None) -> bytes:
    """``tif`` with the entry of tag ``code`` given another type and count (and value or offset)."""
    at = _ifd_entries(tif)[code]
    data = bytearray(tif)
    struct.pack_into("<HI", data, at + 2, type_, count)
    if value is not None:
        data[at + 8: at + 12] = value
    return bytes(data)


SCALE, TIEPOINT = 33550, 33922
ODD_TAGS = {  # the red team's: a pixel scale of one value, a tie point of strings, ...
    "a pixel scale of one value": (SCALE, 12, 1, None),
    "a pixel scale of one short": (SCALE, 3, 1, b"\x05\x00\x00\x00"),
    "a tie point of strings": (TIEPOINT, 2, 48, None),
    "a tie point of one long": (TIEPOINT, 4, 1, b"\x07\x00\x00\x00"),
    "a tie point of rationals": (TIEPOINT, 5, 3, None),
    "a pixel scale of signed bytes": (SCALE, 6, 4, b"\x01\xff\x7f\x80"),
}


@pytest.mark.parametrize("odd", ODD_TAGS)
def test_a_geotiff_with_tags_of_odd_types_or_counts_is_not_a_whole_dem(tmp_path, odd):
    from cdse_dem.dem_folder import dem_problem

    path = tmp_path / DEM
    path.write_bytes(with_tag(whole_dem_bytes(DEM), *ODD_TAGS[odd]))
    assert dem_problem(path) is not None  # a reason, not an exception: the rationals read as a tie point at 0°, 0°


def test_a_recorded_geotiff_with_odd_tags_is_fetched_again_and_check_says_so(lsim, tool_home, tmp_path):
    out = tmp_path / "dem"
    assert run(lsim, "--t", TILE, "--o", out).returncode == 0
    record = check_consistent(out)
    good = (out / DEM).read_bytes()
    (out / DEM).write_bytes(with_tag(good, *ODD_TAGS["a pixel scale of one value"]))
    check = run(lsim, "--t", TILE, "--o", out, "--check")
    assert check.returncode == 1
    assert f"{DEM}: " in check.stdout and "not ready" in check.stdout
    again = run(lsim, "--t", TILE, "--o", out)
    assert again.returncode == 0, again.output
    assert [w for w in warnings(again.stderr) if w.startswith(f"{DEM} is recorded but is not a whole DEM")]
    assert (out / DEM).read_bytes() == good and check_consistent(out) == record


FUZZ_SEED = 23


def test_fuzzed_geotiffs_and_dteds_never_make_the_check_raise(tmp_path):
    """Row 5: 4,200 mutated files checked in under a second (0.85 s alone on the 2-core test machine), none raising.

    A whole 90 m GeoTIFF of N50_E007 (compressed: a few hundred bytes) and a whole 90 m DTED of
    N85_E007 (121 columns: 300 kB), mutated as a crafted file would be: random bytes in the header
    and tags (1,200 GeoTIFFs), every IFD entry given random types, counts and offsets (1,200),
    NaN, infinite and huge doubles in the pixel scale and tie point (300), cut at random lengths
    (300 of each format), random bytes in the DTED headers and records (900). The check must
    answer a reason or None, never raise. The files are rewritten in place through one open
    descriptor: creating a file per case would take most of the time.
    """
    from cdse_dem.dem_folder import dem_problem
    from simulator.dted import dted_bytes

    rng = random.Random(FUZZ_SEED)
    tif = whole_dem_bytes(DEM)
    dted_name = "Copernicus_DSM_30_N85_00_E007_00_DEM.dt1"
    dted = dted_bytes(np.full((1201, 121), 250, dtype=np.int16), 85, 7, 1)
    entries = list(_ifd_entries(tif).values())
    doubles = [at for code, at in _ifd_entries(tif).items() if code in (SCALE, TIEPOINT)]

    def bytes_changed(data: bytes, within: int) -> bytes:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(min(len(out), within))] = rng.randrange(256)
        return bytes(out)

    def entry_changed(data: bytes) -> bytes:
        out = bytearray(data)
        for at in rng.sample(entries, rng.randint(1, 3)):
            count = rng.choice([0, 1, 2, 3, 5, 6, 7, 48, 2**16, 2**31, rng.randrange(2**32)])
            struct.pack_into("<HII", out, at + 2, rng.randrange(0, 20), count, rng.choice([0, 8, 400, len(out) - 4,
                                                                                          rng.randrange(2**32)]))
        return bytes(out)

    def numbers_changed(data: bytes) -> bytes:
        out = bytearray(data)
        at = rng.choice(doubles)
        offset = struct.unpack_from("<I", out, at + 8)[0]
        count = struct.unpack_from("<I", out, at + 4)[0]
        k = rng.randrange(count)
        struct.pack_into("<d", out, offset + 8 * k, rng.choice([float("nan"), float("inf"), -float("inf"), 1e308,
                                                                 -1e308, 0.0, 5e-324]))
        return bytes(out)

    cases = ([(DEM, bytes_changed(tif, 700)) for _ in range(1200)]
             + [(DEM, entry_changed(tif)) for _ in range(1200)]
             + [(DEM, numbers_changed(tif)) for _ in range(300)]
             + [(DEM, tif[:rng.randrange(len(tif))]) for _ in range(300)]
             + [(dted_name, bytes_changed(dted, 3428 + 2414 * 2)) for _ in range(900)]
             + [(dted_name, dted[:rng.randrange(len(dted))]) for _ in range(300)])
    assert len(cases) == 4200
    answers: dict[str, int] = {}
    fds = {name: os.open(tmp_path / name, os.O_RDWR | os.O_CREAT, 0o600) for name in (DEM, dted_name)}
    try:
        for name, data in cases:
            os.ftruncate(fds[name], len(data))
            os.pwrite(fds[name], data, 0)
            problem = dem_problem(tmp_path / name)
            assert problem is None or isinstance(problem, str)
            kind = "whole" if problem is None else problem.split(" (")[0][:40]
            answers[kind] = answers.get(kind, 0) + 1
    finally:
        for fd in fds.values():
            os.close(fd)
    assert answers.get("whole", 0) < len(cases) / 2  # the mutations do break most files
    assert any(k.startswith("not a readable GeoTIFF") for k in answers) and any("DTED" in k for k in answers)


# --- row 17: a GeoTIFF with a NaN tie point or an infinite pixel scale ------------------------------

@pytest.mark.parametrize("value, which", [(float("nan"), "tie point"), (float("inf"), "pixel scale"),
                                          (-float("inf"), "tie point")])
def test_a_geotiff_with_numbers_that_are_not_finite_is_not_a_whole_dem(tmp_path, value, which):
    from cdse_dem.dem_folder import dem_problem

    tif = bytearray(whole_dem_bytes(DEM))
    at = _ifd_entries(bytes(tif))[TIEPOINT if which == "tie point" else SCALE]
    offset = struct.unpack_from("<I", tif, at + 8)[0]
    struct.pack_into("<d", tif, offset + (3 * 8 if which == "tie point" else 0), value)
    path = tmp_path / DEM
    path.write_bytes(bytes(tif))
    assert dem_problem(path) == "a GeoTIFF with a malformed georeference (too few values, or not finite numbers)"


# --- row 6: record files nested 100,000 deep --------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("name", [JSON_NAME, "open_sea_geocells.json", "dict_filename_dem_dataset.json"])
def test_a_record_file_nested_100000_deep_is_set_aside_or_rebuilt(lsim, tool_home, tmp_path, name):
    out = tmp_path / "dem"
    assert run(lsim, "--t", TILE, "--o", out).returncode == 0
    (out / name).write_bytes(DEEP)
    result = run(lsim, "--t", TILE, "--o", out)
    assert result.returncode == 0, result.output
    (warning,) = [w for w in warnings(result.stderr) if name in w]
    assert "nested too deeply" in warning
    if name == JSON_NAME:  # set aside, kept for the user, and a new one made
        (aside,) = [p for p in out.iterdir() if p.name.startswith(f"{JSON_NAME}.corrupt-")]
        assert aside.read_bytes() == DEEP
        aside.unlink()
    else:
        assert warning.endswith("): it is rebuilt")
    assert len(check_consistent(out)) == 6
    assert run(lsim, "--t", TILE, "--o", out).returncode == 0  # and every later run is a clean one


def test_a_lock_file_holding_deep_json_is_taken_over(tmp_path):
    from cdse_dem.fsutil import LockFile

    path = tmp_path / ".x.cdse-lock"
    path.write_bytes(b"[" * 10_000)
    lock = LockFile(path)
    assert lock.try_acquire() and lock.took_over == "an unknown process"
    lock.release()


# --- row 14: open_sea_geocells.json with entries that are no geocell -------------------------------

def test_sea_record_entries_that_are_no_geocell_are_ignored_with_one_warning(lsim, tool_home, tmp_path):
    out = tmp_path / "dem"
    assert run(lsim, "--t", TILE, "--o", out).returncode == 0
    sea = out / "open_sea_geocells.json"
    sea.write_text(json.dumps({"CCM DGED (every resolution and delivery)": [5, None, "N00_W030", "nowhere"]}))
    result = run(lsim, "--t", TILE, "--o", out)
    assert result.returncode == 0, result.output
    assert warnings(result.stderr) == [f"{sea}: 3 entries under 'CCM DGED (every resolution and delivery)' that are "
                                       "not a geocell (first: 5) ignored; they are searched again"]


# --- rows 7 and 8: every file the user names is a regular file, of a sensible size -------------------

@pytest.fixture
def gipp(tmp_path) -> Path:
    from tests.test_gipp import GIPP

    path = tmp_path / "L2A_GIPP.xml"
    path.write_bytes(GIPP)
    return path


NAMED_FILES = {  # option, what the message calls it, whether it needs --check, the cap
    "--sen2cor-missing-list": ("Sen2Cor missing-tiles list", True, 16 * 1024 * 1024),
    "--gipp": ("Sen2Cor GIPP", False, 4 * 1024 * 1024),
    "--i": ("tile list file", False, 128 * 1024 * 1024),
    "--config": ("configuration file", False, 1024 * 1024),
    "--kml": ("tiling KML", False, 512 * 1024 * 1024),
}


def _named(option: str, path: Path) -> list:
    return ["--check", "--t", TILE, option, path] if NAMED_FILES[option][1] else (
        [option, path] if option in ("--i", "--config") else ["--t", TILE, option, path])


@pytest.mark.parametrize("option", NAMED_FILES)
def test_a_fifo_no_one_writes_named_as_a_file_is_refused_without_blocking(lsim, tool_home, tmp_path, option):
    fifo = tmp_path / "named.fifo"
    os.mkfifo(fifo)
    result = run(lsim, *_named(option, fifo), "--o", tmp_path / "dem")
    assert result.returncode == 2
    assert errors(result.stderr) == [f"{fifo}: a FIFO (named pipe), not a {NAMED_FILES[option][0]} (a regular file)"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("option", NAMED_FILES)
def test_dev_zero_named_as_a_file_is_refused(lsim, tool_home, tmp_path, option):
    result = run(lsim, *_named(option, Path("/dev/zero")), "--o", tmp_path / "dem")
    assert result.returncode == 2
    assert errors(result.stderr) == [f"/dev/zero: a character device, not a {NAMED_FILES[option][0]} (a regular file)"]


@pytest.mark.parametrize("option", ["--sen2cor-missing-list", "--gipp", "--config"])
def test_a_named_file_larger_than_such_a_file_can_be_is_refused(lsim, tool_home, tmp_path, option):
    what, _, cap = NAMED_FILES[option]
    big = tmp_path / "big"
    with open(big, "wb") as handle:
        handle.truncate(cap + 1)  # sparse: no disk, no memory
    result = run(lsim, *_named(option, big), "--o", tmp_path / "dem")
    assert result.returncode == 2
    assert errors(result.stderr) == [f"{big}: too large for a {what} (over {cap:,} bytes)"]


def test_every_named_file_goes_through_the_one_check(tool_home):
    """The same rule for a tile list given to the API as a pathlib.Path."""
    import cdse_dem

    with pytest.raises(cdse_dem.UsageError) as refused:
        cdse_dem.plan(Path("/dev/zero"))
    assert str(refused.value) == "/dev/zero: a character device, not a tile list file (a regular file)"


# --- row 9: an output path the GIPP cannot hold ----------------------------------------------------

@pytest.mark.parametrize("name", [b"dem-\x01-bell", b"dem-\xff\xfe", b"dem-\x1b[2J"], ids=["control", "not-utf8",
                                                                                            "escape"])
def test_an_output_path_the_gipp_cannot_hold_is_refused_up_front_and_the_gipp_stays(lsim, tool_home, tmp_path, gipp,
                                                                                     name):
    from tests.test_gipp import GIPP

    out = os.fsencode(tmp_path) + b"/" + name
    lsim.clear_log()
    proc = subprocess.run([os.fsencode(sys.executable), os.fsencode(ENTRY), b"--t", TILE.encode(), b"--o", out,
                           b"--gipp", os.fsencode(gipp)], env=dict(os.environ, **cli_env(lsim)),
                          capture_output=True, timeout=HANG_GUARD, check=False)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, stderr
    (error,) = errors(stderr)
    assert error.endswith(", which Sen2Cor's GIPP cannot hold: choose another folder for --gipp (the GIPP is left "
                          "as it is)")
    assert ("a byte that is not UTF-8" if name == b"dem-\xff\xfe" else "a control character (\\x") in error
    assert "\x1b" not in stderr and "\x01" not in stderr
    assert gipp.read_bytes() == GIPP
    assert lsim.request_log() == [] and not os.path.exists(out)


def test_a_gipp_that_would_not_read_back_is_never_written(tmp_path, gipp):
    from cdse_dem.errors import DemError
    from cdse_dem.sen2cor import set_dem
    from tests.test_gipp import GIPP

    with pytest.raises(DemError, match="left unchanged: the output folder's path holds a control character"):
        set_dem(gipp, tmp_path / "dem\x0bvt", 90)
    assert gipp.read_bytes() == GIPP and sorted(p.name for p in tmp_path.iterdir()) == ["L2A_GIPP.xml"]


# --- row 10: L2A_GIPP.xml.bak is not a regular file -------------------------------------------------

@pytest.mark.parametrize("kind", ["a folder", "a link to the user's file", "a FIFO"])
def test_a_backup_name_that_is_no_file_is_passed_over_and_the_original_kept_under_a_free_one(lsim, tool_home, tmp_path,
                                                                                            gipp, victim, kind):
    from tests.test_gipp import GIPP

    backup = gipp.with_name("L2A_GIPP.xml.bak")
    if kind == "a folder":
        backup.mkdir()
    elif kind == "a FIFO":
        os.mkfifo(backup)
    else:
        backup.symlink_to(victim)
    out = tmp_path / "dem"
    result = run(lsim, "--t", TILE, "--o", out, "--gipp", gipp)
    assert result.returncode == 0, result.output
    kept = gipp.with_name("L2A_GIPP.xml.bak-1")
    assert kept.read_bytes() == GIPP
    assert gipp.read_bytes() != GIPP and f"<DEM_Directory>{out}</DEM_Directory>".encode() in gipp.read_bytes()
    assert [i for i in log_messages(result.stderr, "INFO") if "the original is kept as" in i] == [
        f"{gipp}: DEM_Directory and DEM_Reference set for this folder (the original is kept as {kept.name})"]
    assert victim.read_bytes() == PRECIOUS
    # a second run into another folder rewrites the GIPP again, and keeps the true original, not the first edit
    assert run(lsim, "--t", TILE, "--o", tmp_path / "dem2", "--gipp", gipp).returncode == 0
    assert f"<DEM_Directory>{tmp_path / 'dem2'}</DEM_Directory>".encode() in gipp.read_bytes()
    assert kept.read_bytes() == GIPP and not gipp.with_name("L2A_GIPP.xml.bak-2").exists()


# --- row 15: a GIPP in an encoding expat cannot take --------------------------------------------------

@pytest.mark.parametrize("encoding", ["Shift_JIS", "EUC-JP", "Big5"])
def test_a_gipp_in_a_multibyte_encoding_is_one_line_exit_2(lsim, tool_home, tmp_path, encoding):
    from tests.test_gipp import GIPP

    gipp = tmp_path / "L2A_GIPP.xml"
    data = GIPP.replace(b'encoding="UTF-8"', f'encoding="{encoding}"'.encode())
    gipp.write_bytes(data)
    result = run(lsim, "--t", TILE, "--o", tmp_path / "dem", "--gipp", gipp)
    assert result.returncode == 2
    assert errors(result.stderr) == [f"{gipp}: the GIPP is encoded in {encoding}, which cannot be rewritten byte for "
                                     "byte; save it as UTF-8 and run again"]
    assert gipp.read_bytes() == data


# --- row 16: ulimit -n 24 ----------------------------------------------------------------------------

def _with_open_files(limit: int, *args, sim) -> subprocess.CompletedProcess:
    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return subprocess.run([sys.executable, str(ENTRY), *map(str, args)], env=dict(os.environ, **cli_env(sim)),
                          capture_output=True, text=True, timeout=HANG_GUARD, preexec_fn=lower, check=False)


def test_too_few_open_files_is_one_line_saying_how_many_a_run_needs_and_that_many_is_enough(lsim, tool_home,
                                                                                              tmp_path):
    import re

    lsim.clear_log()
    args = ("--t", TILE, "--t", "31TCJ", "--o", tmp_path / "dem", "--transfer", "zip")
    proc = _with_open_files(24, *args, sim=lsim)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Too many open files" not in proc.stderr
    (error,) = errors(proc.stderr)
    said = re.fullmatch(r"this process may open only 24 files at once \(ulimit -n\), \d+ of them open already: a run "
                        r"with 4 worker\(s\) needs up to (\d+); raise the limit \(ulimit -n \1\)", error)
    assert said, error
    assert lsim.request_log() == []
    # and the number it says is enough: the same run under that limit completes
    proc = _with_open_files(int(said[1]), *args, sim=lsim)
    assert proc.returncode == 0, proc.stderr
    assert len(check_consistent(tmp_path / "dem")) == 10


def test_a_dry_run_fits_in_24_open_files(lsim, tool_home, tmp_path):
    proc = _with_open_files(24, "--t", TILE, "--dry-run", sim=lsim)
    assert proc.returncode == 0, proc.stderr


# --- row 20: the Python API's arguments and its progress callback --------------------------------------

@pytest.mark.parametrize("arguments, message", [
    (dict(output_dir=b"/tmp/dem"), "the output folder must be a path as str or os.PathLike, not bytes"),
    (dict(output_dir="/tmp/d\0em"), "'/tmp/d\\x00em': cannot use it as the output folder (a path cannot hold a NUL "
                                    "character)"),
    (dict(output_dir=None), "download needs an output_dir"),
    (dict(tiles=None), "no tile id, SAFE name, area or point to process"),
    (dict(tiles=[TILE, 32]), "tiles must be tile ids or SAFE names (str), or a pathlib.Path to a tile list file, not "
                             "a int among them"),
    (dict(progress="a bar"), "progress must be a function of (done, total), not str"),
    (dict(stop=True), "stop must be a threading.Event, not bool"),
    (dict(kml=42), "the tiling KML must be a path (str or os.PathLike), not int"),
    (dict(gipp=b"L2A_GIPP.xml"), "the Sen2Cor GIPP must be a path as str or os.PathLike, not bytes"),
])
def test_bad_api_arguments_are_a_usage_error_up_front(tool_home, tmp_path, arguments, message):
    import cdse_dem

    call = dict(tiles=[TILE], output_dir=tmp_path / "dem", credentials=(DEMO_USER, DEMO_PASSWORD))
    call.update(arguments)
    with pytest.raises(cdse_dem.UsageError) as refused:
        cdse_dem.download(call.pop("tiles"), call.pop("output_dir"), **call)
    assert str(refused.value) == message
    assert not (tmp_path / "dem").exists()


def test_a_progress_callback_that_raises_ends_the_run_as_an_error_naming_it(lsim, tool_home, tmp_path, monkeypatch):
    import cdse_dem

    for name, value in lsim.env.items():
        monkeypatch.setenv(name, value)
    calls = []

    def my_progress(done, total):
        calls.append(done)
        if done > 0:
            raise ZeroDivisionError("the chain's own bug")

    with pytest.raises(cdse_dem.DemError) as failed:
        cdse_dem.download([TILE], tmp_path / "dem", credentials=(DEMO_USER, DEMO_PASSWORD), progress=my_progress)
    assert str(failed.value) == (f"the progress callback {my_progress.__qualname__} raised ZeroDivisionError: the "
                                 "chain's own bug; the run was stopped")
    assert failed.value.exit_status == 1
    assert_recorded_as_said(tmp_path / "dem", failed.value.result)


def assert_recorded_as_said(out: Path, result) -> None:
    """The folder holds exactly the geocells the result says were downloaded, each recorded, nothing temporary."""
    downloaded = {Path(g.file).name: g.product_id for t in result.tiles for g in t.geocells if g.status == "downloaded"}
    record = json.loads((out / JSON_NAME).read_text()) if (out / JSON_NAME).exists() else {}
    assert record == downloaded
    records = (JSON_NAME, "dict_filename_dem_dataset.json", "open_sea_geocells.json")
    assert sorted(p.name for p in out.iterdir() if p.name not in records) == sorted(downloaded)


def test_stop_works_while_the_progress_callback_blocks(lsim, tool_home, tmp_path, monkeypatch):
    import cdse_dem

    for name, value in lsim.env.items():
        monkeypatch.setenv(name, value)
    stop, blocked, never = threading.Event(), threading.Event(), threading.Event()

    def stuck(done, total):
        if done:
            blocked.set()
            never.wait(HANG_GUARD)  # a chain's callback stuck on its own lock

    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("result", cdse_dem.download(
        [TILE], tmp_path / "dem", credentials=(DEMO_USER, DEMO_PASSWORD), progress=stuck, stop=stop)))
    worker.start()
    assert blocked.wait(HANG_GUARD)
    stop.set()
    worker.join(HANG_GUARD)
    never.set()
    assert not worker.is_alive()
    result = box["result"]
    assert result.interrupted or result.ok  # the downloads did not wait for the callback: they may be done
    assert_recorded_as_said(tmp_path / "dem", result)
