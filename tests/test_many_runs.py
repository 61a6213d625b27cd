"""Many runs, one DEM folder, one account (issue 14): real processes against the simulator.

Nothing lost (the JSON merges every run's entries), nothing fetched twice (a geocell is fetched
under its lock, and taken as present when another run fetched it meanwhile), never more than
the account's 4 connections (a per-account slot pool on the machine), no session leaked (every
run logs out), and a run killed at any moment leaves nothing the next run waits for.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from cdse_dem import fsutil as fsutil_mod
from cdse_dem.dem_folder import NameIdCache
from tests.helpers import (
    DEMO_USER,
    ENTRY,
    ROOT,
    check_consistent,
    cli_env,
    downloads,
    logins,
    max_concurrent,
    run_cli,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and the holder scripts are POSIX")

TILES = ["32UMA", "32UNA", "32UPA", "32UMB", "32UNB", "32UPB"]
SLOW = 60_000  # bytes/s per connection: a small product (~11 kB) takes ~0.2 s, so runs overlap for real
SLOWER = 30_000  # runs started together still overlap when the machine is slow to start them
_HOLDER = """
import fcntl, json, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": "here", "since": "now"}).encode())
print("holding", flush=True)
sys.stdin.read()
"""


def logouts(sim) -> list:
    return [r for r in sim.request_log() if r.path.endswith("/openid-connect/logout")]


@pytest.fixture(autouse=True)
def _logging_restored():
    """Runs made in-process configure the ``cdse_dem`` loggers (no propagation): undo it after."""
    import logging

    logger = logging.getLogger("cdse_dem")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]


def tile_args(tiles) -> list[str]:
    return [arg for tile in tiles for arg in ("--t", tile)]


def expected_names(sim, tiles, tmp_path, capsys, monkeypatch) -> set[str]:
    """What a single run would need for ``tiles``, from its --dry-run plan (in-process: cheaper)."""
    import cdse_copernicus_dem_downloader as cli

    with monkeypatch.context() as env:
        for key, value in cli_env(sim).items():
            env.setenv(key, value)
        capsys.readouterr()
        assert cli.main(["--dry-run", *tile_args(tiles), "--o", str(tmp_path / "plan-only"), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[1] for line in lines if line.startswith("  ") and "_DEM." in line}


def served_layer(sim, product_id: str) -> tuple[str, bytes]:
    """The DEM layer of the zip the simulator serves for ``product_id``, read from its store
    directly: the same bytes as ``served_dem``, without a throttled download per product."""
    import re
    import zipfile

    product = sim.services.catalogue.index.by_id(product_id)
    with zipfile.ZipFile(sim.services.store.ensure(product).path) as archive:
        (member,) = [m for m in archive.namelist() if re.search(r"_DEM\.(tif|dt1|dt2)$", m) and "/PREVIEW/" not in m]
        return member.rsplit("/", 1)[-1], archive.read(member)


def consistent(out: Path, sim) -> dict:
    """``check_consistent`` (the JSON names exactly the whole files on disk, no leftovers), and
    every file byte-exact against what the simulator serves."""
    record = check_consistent(out)
    for name, product_id in record.items():
        assert served_layer(sim, product_id) == (name, (out / name).read_bytes())
    return record


def hold(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


# --- the locks themselves ------------------------------------------------------------------------

def test_a_lock_of_a_killed_process_is_taken_over_at_once_and_a_live_one_is_waited_for(tmp_path):
    path = fsutil_mod.lock_path_for(tmp_path, "cell")
    holder = hold(path)
    mine = fsutil_mod.LockFile(path)
    assert mine.try_acquire() is False  # alive: held

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    waits = []
    assert mine.acquire(on_wait=lambda: waits.append(1)) is True
    assert waits == []  # not waited out: taken over at once, and said so
    assert mine.took_over == f"process {holder.pid} on here since now"
    mine.release()
    assert not path.exists()  # released cleanly: no lock file left in the folder

    clean = fsutil_mod.LockFile(path)
    assert clean.try_acquire() and clean.took_over is None  # a lock released cleanly is no takeover
    clean.release()


def test_slots_bound_the_account_across_processes_and_come_back_when_a_holder_dies(tmp_path):
    pool = fsutil_mod.SlotPool.for_account("https://id.example/token", "Someone@Example.com", 2, base=tmp_path)
    assert "someone" not in str(pool.folder).lower()  # the user name never in clear
    other = hold(pool.folder / "slot-0")
    first = pool.acquire()
    assert first is not None and first.path.name == "slot-1"
    stop = threading.Event()
    stop.set()
    assert pool.acquire(stop=stop) is None  # both in use: nothing more for anyone
    other.send_signal(signal.SIGKILL)
    other.wait()
    second = pool.acquire(stop=stop)  # the dead holder's slot is free at once
    assert second is not None and second.path.name == "slot-0"
    first.release()
    second.release()


def test_a_file_system_without_locks_still_serves_one_run_and_sweeps_nothing(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from cdse_dem import fsutil

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fsutil_mod, "_warned", threading.Event())
    monkeypatch.setattr(fcntl, "flock", no_locks)
    left = tmp_path / ".x_DEM.tif.123-0badcafe.cdse-tmp"
    left.write_bytes(b"another run's, maybe alive")
    fsutil.atomic_write_bytes(tmp_path / "a.json", b"{}")
    with fsutil_mod.LockFile(fsutil_mod.lock_path_for(tmp_path, "cell")):
        pass
    assert fsutil.remove_stale_temporaries(tmp_path) == []  # cannot tell: removes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == [left.name, "a.json"]
    assert [r.levelname for r in caplog.records if "does not support file locks" in r.getMessage()] == ["WARNING"]


def test_json_updates_of_many_processes_interleaved_lose_nothing(tmp_path):
    out = tmp_path / "dem"
    out.mkdir()
    script = ("import sys; from pathlib import Path; from cdse_dem.dem_folder import NameIdCache\n"
              "out, k = Path(sys.argv[1]), sys.argv[2]\n"
              "cache = NameIdCache.load(out)\n"  # every writer starts from a stale copy
              "for i in range(10):\n"
              "    name = f'f{k}_{i}_DEM.tif'\n"
              "    (out / name).write_bytes(b'x')\n"
              "    cache.record(name, f'id-{k}-{i}')\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(out), str(k)], cwd=ROOT) for k in range(4)]
    assert [p.wait() for p in procs] == [0] * 4
    record = json.loads((out / "dict_filename_dem_id.json").read_text())
    assert record == {f"f{k}_{i}_DEM.tif": f"id-{k}-{i}" for k in range(4) for i in range(10)}
    assert NameIdCache.load(out).entries() == record
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# --- real runs at once ---------------------------------------------------------------------------

ISSUE_RUNS = [["32UMA", "32UNA"], ["32UNA", "32UPA"], ["32UPA", "32UMA"]]  # the three runs of issue 14
EIGHT_RUNS = [[TILES[i % len(TILES)], TILES[(i + 1) % len(TILES)]] for i in range(8)]


@pytest.mark.parametrize("tile_sets", [ISSUE_RUNS, EIGHT_RUNS], ids=["3-runs", "8-runs"])
def test_concurrent_runs_into_one_folder_fetch_each_geocell_once_within_the_account(
        make_sim, shared_data, tool_home, tmp_path, tile_sets, capsys, monkeypatch):
    sim = make_sim(bandwidth=SLOWER, cells_dir=shared_data)  # the real lists: every cell of the six tiles
    runs = len(tile_sets)
    used = sorted({t for pair in tile_sets for t in pair})
    wanted = expected_names(sim, used, tmp_path, capsys, monkeypatch)
    out = tmp_path / "dem"
    results = [None] * runs

    def one(i):
        results[i] = run_cli(*tile_args(tile_sets[i]), "--o", out, env=cli_env(sim))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [r.returncode for r in results] == [0] * runs, "\n".join(r.output[-2000:] for r in results)
    fetched = Counter(r.path for r in downloads(sim) if r.status == 200)
    assert len(fetched) == len(wanted) and set(fetched.values()) == {1}  # each geocell downloaded once
    assert sim.peak_downloads(DEMO_USER) <= 4  # never more than the account's 4 at once
    assert max_concurrent(downloads(sim)) <= 4
    assert [r for r in downloads(sim) if r.status == 429] == []
    assert len(logins(sim)) == len(logouts(sim)) <= runs
    assert {r.status for r in logouts(sim)} == {204}
    assert sim.active_sessions(DEMO_USER) == 0
    record = consistent(out, sim)  # JSON == whole files on disk, byte-exact, no leftovers
    assert set(record) == wanted
    assert any("fetched by another run" in r.output or "being fetched by another run" in r.output
               for r in results), "no two runs met over a geocell: the test proved nothing"


def test_150_runs_in_a_row_log_out_and_stay_under_a_100_session_cap(make_sim, tool_home, tmp_path, monkeypatch):
    """In-process, as the CLI calls it (``main(argv)``): 150 subprocess starts would cost a minute."""
    import cdse_copernicus_dem_downloader as cli

    sim = make_sim(max_sessions=100)
    for key, value in cli_env(sim).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "dem"
    statuses = []
    for i in range(150):
        if i:
            victim = sorted(out.glob("*_DEM.tif"))[i % 6]
            victim.unlink()  # every run has one geocell to fetch, so every run logs in
        statuses.append(cli.main(["--t", "32UMA", "--o", str(out), "-q"]))

    assert statuses == [0] * 150
    assert [r.status for r in logins(sim)] == [200] * 150
    assert [r.status for r in logouts(sim)] == [204] * 150
    log = [r for r in sim.request_log() if r.server == "catalogue" and "openid-connect" in r.path]
    kinds = ["login" if r.grant_type == "password" else "logout" for r in log]
    assert kinds == ["login", "logout"] * 150  # one login and one logout per run, in that order
    assert sim.active_sessions(DEMO_USER) == 0
    check_consistent(out)


# --- SIGKILL at random points, then a re-run -----------------------------------------------------

def seed_env(sim, seed: int) -> dict:
    """One account per seed: the five folders' runs do not queue for one account's 4 slots."""
    return cli_env(sim, CDSE_USERNAME=f"seed{seed}@example.com", CDSE_PASSWORD="pw")


def _killed_run(sim, out: Path, seed: int) -> tuple[int, set[str]]:
    """Start a run and SIGKILL it at a seeded random point of its log; (its pid, locks it left)."""
    rng = random.Random(seed)
    kill_after = rng.randrange(10, 30)  # a log line: from the search to the last extractions
    env = dict(os.environ, **seed_env(sim, seed))
    proc = subprocess.Popen([sys.executable, str(ENTRY), "--t", "32UMA", "--t", "32UNA", "--o", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(kill_after):
        if not proc.stderr.readline():
            break
    threading.Event().wait(rng.uniform(0, 0.15))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return proc.pid, {p.name for p in out.glob(f".*{fsutil_mod.LOCK_SUFFIX}")}


def test_sigkill_at_random_points_then_a_rerun_is_complete_and_takes_locks_over_at_once(
        make_sim, tool_home, tmp_path, capsys, monkeypatch):
    from simulator import User

    seeds = range(5)
    sim = make_sim(bandwidth=2 * SLOW, users=[User(f"seed{seed}@example.com", "pw") for seed in seeds])
    outs = {seed: tmp_path / f"dem-{seed}" for seed in seeds}
    killed = {}

    def kill(seed):
        killed[seed] = _killed_run(sim, outs[seed], seed)

    threads = [threading.Thread(target=kill, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for seed in seeds:  # what a kill leaves: the JSON names only files that are whole
        json_path = outs[seed] / "dict_filename_dem_id.json"
        record = json.loads(json_path.read_text()) if json_path.exists() else {}
        for name, product_id in record.items():
            assert (outs[seed] / name).read_bytes() == served_layer(sim, product_id)[1]

    results = {}

    def rerun(seed):
        results[seed] = run_cli("--t", "32UMA", "--t", "32UNA", "--o", outs[seed], env=seed_env(sim, seed))

    threads = [threading.Thread(target=rerun, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    wanted = expected_names(sim, ["32UMA", "32UNA"], tmp_path, capsys, monkeypatch)
    for seed in seeds:
        result, (pid, left_locks) = results[seed], killed[seed]
        assert result.returncode == 0, result.output
        assert set(consistent(outs[seed], sim)) == wanted
        for name in left_locks:  # each lock of the dead run taken over at once, never waited out
            assert f"Took over the lock {name} left by " in result.output, (seed, result.output)
        if left_locks:
            assert f"left by process {pid} " in result.output  # the dead run, named
        assert "waiting for it" not in result.output
    assert any(left for _, left in killed.values()), "no kill landed while a geocell was locked"


# --- every end logs out ---------------------------------------------------------------------------

def test_a_failed_run_and_an_interrupted_run_log_out_too(make_sim, tool_home, tmp_path):
    from simulator import User

    sim = make_sim(users=[User("noccm@example.com", "pw", ccm=False), User(DEMO_USER, "demo")], bandwidth=SLOW)
    failed = run_cli("--t", "32UMA", "--o", tmp_path / "a", env=cli_env(sim, CDSE_USERNAME="noccm@example.com",
                                                                        CDSE_PASSWORD="pw"))
    assert failed.returncode == 1 and "DAT-ZIP-608" in failed.output
    assert [(r.user, r.status) for r in logouts(sim)] == [("noccm@example.com", 204)]

    env = dict(os.environ, **cli_env(sim))
    proc = subprocess.Popen([sys.executable, str(ENTRY), "--t", "32UMA", "--o", str(tmp_path / "b")], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "Processing file" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait() == 130, rest
    assert [(r.user, r.status) for r in logouts(sim)][1:] == [(DEMO_USER, 204)]
    assert sim.active_sessions(DEMO_USER) == sim.active_sessions("noccm@example.com") == 0
