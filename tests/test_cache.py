"""The name → id JSON of an output folder, and the atomic-write helpers under it."""

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cdse_dem import fsutil
from cdse_dem.dem_folder import NameIdCache
from cdse_dem.errors import DemError
from cdse_dem.fsutil import atomic_write_bytes, atomic_write_json, remove_stale_temporaries, temp_path_in

JSON = "dict_filename_dem_id.json"
A = "Copernicus_DSM_30_N50_00_E007_00_DEM.tif"
B = "Copernicus_DSM_30_N51_00_E007_00_DEM.tif"
ID_A = "0b4bd2a8-d8c3-5b3a-bd74-4e5b2a2f1b7c"
ID_B = "7d3ee7b0-1e2a-4a51-9c61-2f4d7d1b0e55"


@pytest.fixture
def out_dir(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def on_disk(out_dir: Path) -> dict:
    return json.loads((out_dir / JSON).read_text(encoding="utf-8"))


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- the JSON ------------------------------------------------------------------------------

def test_a_folder_without_json_starts_empty_and_each_record_is_on_disk_at_once(out_dir):
    cache = NameIdCache.load(out_dir)
    assert cache.entries() == {}
    assert not (out_dir / JSON).exists()

    cache.record(A, ID_A)
    assert on_disk(out_dir) == {A: ID_A}
    cache.record(B, ID_B)
    assert on_disk(out_dir) == {A: ID_A, B: ID_B}
    assert names(out_dir) == [JSON]  # no temporary left beside it

    assert NameIdCache.load(out_dir).product_id(B) == ID_B


def test_the_reference_tools_file_is_read_as_is(out_dir):
    (out_dir / JSON).write_text(json.dumps({A: ID_A}), encoding="utf-8")
    (out_dir / A).write_bytes(b"GeoTIFF")

    cache = NameIdCache.load(out_dir)

    assert cache.product_id(A) == ID_A
    assert cache.is_complete(A)


def test_complete_means_recorded_and_a_whole_file_under_its_final_name(out_dir):
    cache = NameIdCache.load(out_dir)
    (out_dir / A).write_bytes(b"GeoTIFF")
    assert not cache.is_complete(A)  # on disk but not recorded

    cache.record(A, ID_A)
    assert cache.is_complete(A)

    cache.record(B, ID_B)
    assert not cache.is_complete(B)  # recorded, no file
    (out_dir / B).write_bytes(b"")
    assert not cache.is_complete(B)  # an empty file is not a DEM
    assert cache.product_id("unknown.tif") is None


def test_a_hand_edited_entry_cannot_point_outside_the_folder(tmp_path, out_dir):
    outside = tmp_path / A
    outside.write_bytes(b"GeoTIFF")
    (out_dir / JSON).write_text(json.dumps({f"../{A}": ID_A}), encoding="utf-8")

    assert not NameIdCache.load(out_dir).is_complete(f"../{A}")


@pytest.mark.parametrize("content", [
    b"{not json",
    b"[\"a list\"]",
    json.dumps({A: {"nested": ID_A}}).encode(),
    json.dumps({A: 12}).encode(),
    b"\xff\xfe\x00garbage",
    b"",
])
def test_an_unusable_json_is_set_aside_with_a_warning_never_silently_emptied(out_dir, caplog, content):
    (out_dir / JSON).write_bytes(content)

    with caplog.at_level(logging.WARNING, logger="cdse_dem"):
        cache = NameIdCache.load(out_dir)

    assert cache.entries() == {}
    aside = [p for p in out_dir.iterdir() if p.name.startswith(f"{JSON}.corrupt-")]
    assert len(aside) == 1
    assert aside[0].read_bytes() == content  # kept intact for the user
    assert not (out_dir / JSON).exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(aside[0].name in w and JSON in w for w in warnings)

    cache.record(A, ID_A)
    assert on_disk(out_dir) == {A: ID_A}
    assert aside[0].read_bytes() == content


def test_setting_aside_twice_keeps_both_copies(out_dir):
    (out_dir / JSON).write_bytes(b"{first")
    NameIdCache.load(out_dir)
    (out_dir / JSON).write_bytes(b"{second")
    NameIdCache.load(out_dir)

    kept = sorted(p.read_bytes() for p in out_dir.iterdir() if ".corrupt-" in p.name)
    assert kept == [b"{first", b"{second"]


def test_records_from_many_threads_all_reach_the_file(out_dir):
    cache = NameIdCache.load(out_dir)
    expected = {f"Copernicus_DSM_30_N{t:02d}_00_E{i:03d}_00_DEM.tif": f"id-{t}-{i}"
                for t in range(8) for i in range(40)}
    items = sorted(expected.items())

    def worker(t):
        for name, pid in items[t::8]:
            cache.record(name, pid)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    assert on_disk(out_dir) == expected
    assert names(out_dir) == [JSON]


def test_a_write_that_fails_leaves_the_previous_json_whole(out_dir, monkeypatch):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is needed to get a real ENOSPC")
    cache = NameIdCache.load(out_dir)
    cache.record(A, ID_A)
    before = (out_dir / JSON).read_bytes()
    real_create = fsutil.create_temp_in

    def temp_on_full_disk(folder, final_name, mode=None):
        path, handle = real_create(folder, final_name, mode)
        handle.close()
        return path, open("/dev/full", "wb")  # closed by atomic_write_bytes

    monkeypatch.setattr(fsutil, "create_temp_in", temp_on_full_disk)

    with pytest.raises(DemError, match="no space left") as err:
        cache.record(B, ID_B)

    assert str(out_dir) in str(err.value)
    assert (out_dir / JSON).read_bytes() == before
    assert names(out_dir) == [JSON]


# --- the atomic-write helpers ----------------------------------------------------------------

def test_atomic_write_bytes_with_mode_gives_exactly_that_mode_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        atomic_write_bytes(tmp_path / "secret.yaml", b"key: value\n", mode=0o600)
    finally:
        os.umask(old)

    path = tmp_path / "secret.yaml"
    assert path.read_bytes() == b"key: value\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert names(tmp_path) == ["secret.yaml"]


def test_atomic_write_replaces_an_existing_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("old", encoding="utf-8")

    atomic_write_json(path, {"b": "2", "a": "1"})

    assert json.loads(path.read_text(encoding="utf-8")) == {"a": "1", "b": "2"}
    assert names(tmp_path) == ["data.json"]


def test_temporary_names_are_hidden_unique_and_never_look_like_a_dem(tmp_path):
    paths = {temp_path_in(tmp_path, A) for _ in range(100)}

    assert len(paths) == 100
    for p in paths:
        assert p.parent == tmp_path
        assert p.name.startswith(".")
        assert not p.name.endswith((".tif", ".dt1", ".dt2", ".json", ".zip"))


_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(os.name != "posix", reason="the holder script uses fcntl")
def test_stale_temporaries_are_judged_by_their_lock_never_by_pid_or_age(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    ours, handle = fsutil.create_temp_in(tmp_path, A)  # being written by this run: locked
    handle.write(b"in progress")
    seven_hours_ago = time.time() - 7 * 3600
    os.utime(ours, (seven_hours_ago, seven_hours_ago))  # silent for hours, but its writer is alive
    # a run in another PID namespace: the pid in the name means nothing here, its lock is held
    elsewhere = tmp_path / ours.name.replace(f".{os.getpid()}-", f".{dead_pid}-").replace(".tif.", ".tif.x.")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(elsewhere)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    cell_lock = tmp_path / f".{B}.cdse-lock"
    lock_holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(cell_lock)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert lock_holder.stdout.readline().strip() == "holding"
        # left by killed runs: nobody holds them, whatever pid their name carries (ours too)
        of_dead_run = tmp_path / ours.name.replace(f".{os.getpid()}-", f".{dead_pid}-")
        of_dead_run.write_bytes(b"left by a killed run")
        same_pid_dead = temp_path_in(tmp_path, B)
        same_pid_dead.write_bytes(b"left by a killed run whose pid is ours in this namespace")
        dead_lock = tmp_path / f".{A}.cdse-lock"
        dead_lock.write_text('{"pid": 1234, "host": "gone", "since": "then"}')
        keep = [tmp_path / A, tmp_path / ".hidden-user-file", tmp_path / f".{A}.123.tmp", tmp_path / JSON]
        for p in keep:
            p.write_bytes(b"user data")

        removed = remove_stale_temporaries(tmp_path)

        assert sorted(removed) == sorted([of_dead_run, same_pid_dead, dead_lock])
        assert names(tmp_path) == sorted([ours.name, elsewhere.name, cell_lock.name, *(p.name for p in keep)])
        handle.close()
    finally:
        for proc in (holder, lock_holder):
            proc.communicate("")
    fsutil.remove_quietly(ours)
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path)) == sorted([elsewhere.name, cell_lock.name])


def test_a_temporary_is_unlocked_once_renamed_into_place(tmp_path):
    temp, handle = fsutil.create_temp_in(tmp_path, A)
    with handle:
        handle.write(b"whole")
    fsutil.replace_into_place(temp, tmp_path / A)
    assert str(temp) not in fsutil._held
    assert names(tmp_path) == [A]
