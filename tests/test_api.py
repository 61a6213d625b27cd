"""The Python API (``cdse_dem.download``, ``plan``, ``check``) as a processing chain uses it.

Each test calls the package from a thread of its own against the local simulator, and checks
what such a script sees: the result objects, the files on disk against the bytes served, the
log records its own handlers receive, what the server was sent; and what the call must not
do: prompt, print, touch signal handlers or logging handlers.
"""

import json
import logging
import signal
import threading
import time
from pathlib import Path

import pytest

import cdse_dem
from cdse_dem.dem_folder import dem_problem
from simulator import Faults
from tests.helpers import DEMO_PASSWORD, DEMO_USER, check_consistent, downloads, run_cli

HANG_GUARD = 120  # seconds: only so that a broken stop cannot hang the suite; never a measured bound
DEMO = (DEMO_USER, DEMO_PASSWORD)


@pytest.fixture
def api_env(monkeypatch, tool_home):
    """Point the library at a simulator (``api_env(sim)``), as a script would with the environment."""

    def point(sim):
        for name, value in sim.env.items():
            monkeypatch.setenv(name, value)
        return sim

    return point


class Records(logging.Handler):
    """A script's own handler on the root logger."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def root_handler():
    """A fresh script's logging: its handler on the root at INFO, the ``cdse_dem`` loggers as the package
    leaves them (an in-process command line run of another test configures them for its own output)."""
    handler, root, ours = Records(), logging.getLogger(), logging.getLogger("cdse_dem")
    saved = root.level, ours.level, list(ours.handlers)
    ours.setLevel(logging.NOTSET)
    ours.handlers = [h for h in ours.handlers if isinstance(h, logging.NullHandler)]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.level, ours.level, ours.handlers = saved[0], saved[1], saved[2]


def in_thread(call, *args, **kwargs):
    """``call(*args, **kwargs)`` on a worker thread, as a chain's scheduler would; its value or exception."""
    box = {}

    def target():
        try:
            box["value"] = call(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, name="pipeline-worker")
    worker.start()
    worker.join(HANG_GUARD)
    assert not worker.is_alive(), "the call never returned"
    if "error" in box:
        raise box["error"]
    return box["value"]


def searches(sim) -> list:
    return [r for r in sim.request_log() if r.server == "catalogue" and r.path.endswith("/Products")]


def test_a_script_downloads_from_a_worker_thread_sees_our_log_and_calls_again(sim, api_env, tmp_path, root_handler,
                                                                                capfd):
    api_env(sim)
    out = tmp_path / "dem" / "CopernicusDEM90"
    sigint_before, sigterm_before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    ours = logging.getLogger("cdse_dem")
    seen_progress = []

    result = in_thread(cdse_dem.download, ["32UMA"], out, resolution=90, model="DGED", credentials=DEMO,
                       progress=lambda done, total: seen_progress.append((done, total)))

    assert result.ok and result.exit_status == 0 and not result.interrupted
    (tile,) = result.tiles
    assert tile.tile == "32UMA" and len(tile.geocells) == 6
    assert [g.status for g in tile.geocells] == ["downloaded"] * 6
    served = sum(r.bytes_sent for r in downloads(sim) if r.status == 200)
    fetched = len(downloads(sim))
    assert result.bytes_downloaded == served > 0
    # the files are on disk, whole, recorded, and byte for byte the DEMs the server holds
    record = check_consistent(out, sim)  # (fetches the served zips itself, after the tool's requests)
    assert sorted(result.files) == sorted(out / name for name in record)
    assert {Path(g.file).name: g.product_id for g in tile.geocells} == record
    assert all(dem_problem(path) is None for path in result.files)
    assert seen_progress and seen_progress[-1][0] == served and all(total > 0 for _, total in seen_progress)
    # the summary JSON the command line writes is this same result
    assert result.to_dict()["totals"]["downloaded"] == 6 and result.to_dict()["exit_status"] == 0
    # our records reach the script's own root handler, from the worker threads too
    messages = root_handler.messages()
    assert "Processing 1 Tile(s)" in messages
    assert sum(m.startswith("DEM Copernicus_DSM_30_") and m.endswith(" and stored") for m in messages) == 6
    assert {r.threadName for r in root_handler.records} > {"pipeline-worker"}
    # nothing printed, no handler installed but the NullHandler, no signal handler touched
    assert capfd.readouterr() == ("", "")
    assert [type(h) for h in ours.handlers] == [logging.NullHandler]  # the package's own, on its import
    assert ours.propagate and all(logging.getLogger(name).propagate for name in logging.root.manager.loggerDict
                                  if name.startswith("cdse_dem."))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (sigint_before, sigterm_before)

    # a second call in the same process finds everything there and downloads nothing
    sim.clear_log()
    again = in_thread(cdse_dem.download, ["32UMA"], out, credentials=DEMO)
    assert again.ok and again.bytes_downloaded == 0
    assert [g.status for g in again.tiles[0].geocells] == ["present"] * 6
    assert sorted(again.files) == sorted(result.files)
    assert downloads(sim) == [] and [r for r in sim.request_log() if r.grant_type] == []
    assert check_consistent(out) == record
    assert fetched == 6


def test_stop_mid_download_records_what_finished_leaves_no_temporary_and_sends_nothing_after(make_sim, api_env,
                                                                                              tmp_path):
    sim = api_env(make_sim(bandwidth=15_000))  # small products take a second or two each
    out = tmp_path / "dem"
    record_file = out / "dict_filename_dem_id.json"
    stop = threading.Event()

    def stop_after_the_first_geocell():
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            if record_file.exists() and json.loads(record_file.read_text() or "{}"):
                break
            time.sleep(0.02)
        stop.set()

    watcher = threading.Thread(target=stop_after_the_first_geocell)
    watcher.start()
    result = in_thread(cdse_dem.download, ["32UMA", "32UMB"], out, workers=2, credentials=DEMO, stop=stop)
    returned = time.monotonic()
    watcher.join()

    assert result.interrupted and result.exit_status == 130 and not result.ok
    time.sleep(1)  # a thread left behind would show itself by a request now
    assert [r for r in sim.request_log() if r.started > returned] == []
    record = check_consistent(out, sim)  # only whole files, each recorded, no temporary left
    assert 1 <= len(record) < len(result.geocells), "nothing or everything finished: the test proved nothing"
    done = {g.file_name: g.product_id for g in result.geocells if g.status == "downloaded"}
    assert done == record
    assert {g.status for g in result.geocells} <= {"downloaded", "planned"}  # stopped, not failed

    # the next call resumes: only what was left is fetched
    sim.clear_log()
    again = in_thread(cdse_dem.download, ["32UMA", "32UMB"], out, workers=2, credentials=DEMO)
    assert again.ok
    assert len(downloads(sim)) == len(again.geocells) - len(record)
    check_consistent(out, sim)


def test_stop_during_a_failing_search_returns_and_no_search_follows(make_sim, api_env, tmp_path):
    from tests.test_interrupt import every_area_in_flight_again

    # every search answers 503 (Retry-After: 1 s) after 0.3 s: the areas' tries go out together, round by round
    sim = api_env(make_sim(latency=0.3, faults=Faults(catalogue_error_rate=1.0, retry_after=1.0)))
    stop = threading.Event()
    box = {}

    def stop_while_every_search_is_held():
        deadline = time.monotonic() + HANG_GUARD
        while not every_area_in_flight_again(searches(sim)) and time.monotonic() < deadline:
            time.sleep(0.005)
        stop.set()
        box["stopped"] = time.monotonic()

    watcher = threading.Thread(target=stop_while_every_search_is_held)
    watcher.start()
    result = in_thread(cdse_dem.download, ["32UMA", "31TCJ", "56HKD", "01WCP"], tmp_path / "dem", credentials=DEMO,
                       stop=stop)
    watcher.join()

    assert result.interrupted and result.exit_status == 130
    assert {g.status for g in result.geocells} == {"planned"}  # not searched to the end: neither sea nor failed
    time.sleep(1.5)  # past the Retry-After: a search thread left behind would send its retry now
    late = [r for r in searches(sim) if r.started > box["stopped"]]
    assert late == [], f"{len(late)} searches after the stop"
    assert [r for r in sim.request_log() if r.grant_type] == []  # no product found: no login either


def test_plan_is_what_dry_run_shows_and_check_is_what_check_says(sim, api_env, tmp_path):
    api_env(sim)
    out = tmp_path / "dem"
    planned = in_thread(cdse_dem.plan, ["32UMA", "24TWL"], out)
    assert planned.ok and not out.exists()  # a plan writes nothing
    summary = tmp_path / "dry-run.json"
    cli = run_cli("--t", "32UMA", "--t", "24TWL", "--o", out, "--dry-run", "--summary-json", summary,
                  env=sim.env)
    assert cli.returncode == planned.exit_status == 0, cli.output
    from_cli = json.loads(summary.read_text())
    from_api = planned.to_dict()
    for document in (from_cli, from_api):
        del document["totals"]["seconds"], document["totals"]["mb_per_s"]
    assert from_api == from_cli
    plan_lines = [line for line in cli.stdout.splitlines() if line.startswith("  N") or line.startswith("  S")]
    assert len(plan_lines) == sum(len(t.geocells) for t in planned.tiles)
    assert {g.status for g in planned.tiles[0].geocells} == {"planned"}
    assert {g.status for g in planned.tiles[1].geocells} == {"sea"}  # 24TWL: open sea, no DEM on CDSE
    assert all(g.product_id for g in planned.tiles[0].geocells)

    in_thread(cdse_dem.download, ["32UMA"], out, credentials=DEMO)
    ready = in_thread(cdse_dem.check, ["32UMA"], out)
    assert ready.ok and ready.ready and ready.tiles[0].check.present == 6
    gone = ready.tiles[0].geocells[0]
    Path(gone.file).unlink()
    not_ready = in_thread(cdse_dem.check, ["32UMA"], out)
    assert not not_ready.ready and not_ready.exit_status == 1
    (missing,) = not_ready.tiles[0].check.missing
    assert (missing.file_name, missing.grid_id, missing.reason, missing.on_cdse) == (
        gone.file_name, gone.grid_id, "missing", True)


def test_two_calls_at_once_into_one_folder_share_it_safely(make_sim, api_env, tmp_path):
    sim = api_env(make_sim(bandwidth=200_000))
    out = tmp_path / "dem"
    results = {}

    def one(tile):
        results[tile] = cdse_dem.download([tile], out, credentials=DEMO)

    workers = [threading.Thread(target=one, args=(tile,)) for tile in ("32UMA", "32UMB")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(HANG_GUARD)
    assert all(r.ok for r in results.values()), {t: r.exit_status for t, r in results.items()}
    wanted = {g.file_name for r in results.values() for g in r.geocells}
    assert len(downloads(sim)) == len(wanted)  # the cells the two tiles share were fetched once
    record = check_consistent(out, sim)
    assert set(record) == wanted


def test_no_credentials_is_an_exception_with_exit_status_2_and_never_a_prompt(sim, api_env, tmp_path, monkeypatch):
    api_env(sim)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)  # even on a terminal

    def no_prompt(*args, **kwargs):
        raise AssertionError("the library prompted")

    monkeypatch.setattr("cdse_dem.credentials.ask_username", no_prompt)
    monkeypatch.setattr("cdse_dem.credentials.ask_password", no_prompt)
    with pytest.raises(cdse_dem.CredentialError) as caught:
        in_thread(cdse_dem.download, ["32UMA"], tmp_path / "dem")
    assert caught.value.exit_status == 2
    assert "CDSE_USERNAME" in str(caught.value)
    assert [r for r in sim.request_log() if r.server == "download" or r.grant_type] == []

    # the environment is the first source, as for the command line
    monkeypatch.setenv("CDSE_USERNAME", DEMO_USER)
    monkeypatch.setenv("CDSE_PASSWORD", DEMO_PASSWORD)
    assert in_thread(cdse_dem.download, ["32UMA"], tmp_path / "dem").ok


@pytest.mark.parametrize(("call", "error", "status", "words"), [
    (lambda out: cdse_dem.download(["32TMA", "nonsense"], out, credentials=DEMO), "InputError", 2,
     "no valid tile id"),
    (lambda out: cdse_dem.download(["32UMA"], out, resolution=45, credentials=DEMO), "UsageError", 2,
     "resolution must be one of 30, 90"),
    (lambda out: cdse_dem.plan(["32UMA"], out, model="SRTM"), "UsageError", 2, "model must be one of"),
    (lambda out: cdse_dem.download(["32UMA"], out, credentials=("demo@example.com", "wrong")), "AuthRejected", 2,
     "rejected the user name or password"),
])
def test_errors_are_exceptions_of_one_module_with_the_cli_exit_status(sim, api_env, tmp_path, call, error, status,
                                                                      words):
    api_env(sim)
    with pytest.raises(cdse_dem.DemError) as caught:
        in_thread(call, tmp_path / "dem")
    assert type(caught.value).__name__ == error and type(caught.value).__module__ == "cdse_dem.errors"
    assert isinstance(caught.value, getattr(cdse_dem, error))
    assert caught.value.exit_status == status
    assert words in str(caught.value)


def test_a_refused_login_carries_what_the_run_had_found(sim, api_env, tmp_path):
    api_env(sim)
    with pytest.raises(cdse_dem.AuthRejected) as caught:
        in_thread(cdse_dem.download, ["32UMA"], tmp_path / "dem", credentials=("demo@example.com", "wrong"))
    result = caught.value.result
    assert result is not None and result.exit_status == 2
    assert all(g.product_id and g.status == "planned" for g in result.geocells)  # searched, not downloaded


def test_the_package_loads_its_api_on_first_use():
    import subprocess
    import sys

    code = ("import sys, cdse_dem; assert 'cdse_dem.job' not in sys.modules, 'loaded eagerly'; "
            "assert callable(cdse_dem.download) and callable(cdse_dem.plan) and callable(cdse_dem.check); "
            "import cdse_dem.planning, cdse_dem.transfer; assert callable(cdse_dem.plan); "
            "assert set(cdse_dem.__all__) <= set(dir(cdse_dem)); print(cdse_dem.__version__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == cdse_dem.__version__


def test_one_run_ending_does_not_forget_the_secrets_of_another_still_running():
    from cdse_dem.logs import remember, run_scope, scrub

    with run_scope():
        remember("first-run-Secret")
        with run_scope():  # a second run, in another thread of the same process
            remember("second-run-Secret")
        assert scrub("first-run-Secret second-run-Secret") == "[secret] [secret]"
    assert scrub("first-run-Secret") == "first-run-Secret"  # the last run ended: nothing left to mask
