#!/usr/bin/env python3
"""Stopping: how soon a run ends once it is asked to (issue 13: "within 2 s"), and a silent host (issue 23).

Usage: python benchmarks/bench_stop.py [--repeat 3]

- ``cdse_dem.download`` called from a thread of this process, its ``stop`` event set while
  downloads are under way (60 % of the bytes in: the first geocells recorded, the next ones in
  flight): seconds from ``stop.set()`` to the call's
  return, with the result interrupted and no temporary file left. The simulator runs in its own
  process (realistic products, the usual per-connection cap and latency): GLO-90 geocells of
  tiles 30TUK and 30TVK, each a few seconds of transfer.
- The command line, 100 tiles spread over the grid (5 area searches), against a catalogue that
  answers every search 503 (Retry-After: 1 s) after 0.3 s: SIGINT once every area search has
  been tried and its retry is held by the server (so that no search is already on its way);
  seconds from the signal to the process's exit (status 130), and the searches the simulator
  saw arrive after the signal (0 expected). The simulator runs in this process, to read its
  request log.

- The command line, tile 32UMA, against a download host that accepts connections and never
  answers (issue 23, row 21: the hostile server of the tests, ``tests/hostile.py`` mode
  ``silent_host``; its identity and catalogue answer): SIGTERM 20 s into the run (every worker
  then blocked in a read), seconds from the signal to the exit (status 130 expected); and the
  same run without a signal, seconds from its start to its end by itself (status 1, one line:
  the host answered nothing for ``SILENT_HOST_SECONDS``). The second is run once whatever
  ``--repeat`` says: it takes two minutes.

Each figure is the median of ``--repeat`` runs, each from an empty output folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib
from benchlib import ENTRY, PASSWORD, PYTHON, ROOT, USER, Row, Simulator, median

TARGET = 2.0  # seconds, the bound for both
SIGNAL_AFTER = 20.0  # seconds into the run against the silent host (issue 23, row 21)
SILENT_TARGET = 150.0  # seconds: a run against a silent host ends by itself within this
DOWNLOAD_TILES = ["30TUK", "30TVK"]
STOP_AT = 0.6  # share of the expected bytes received when the stop is set: some geocells done, some under way
SEARCH_TILES = 100
SEARCH_LATENCY = 0.3  # seconds before each (failing) answer: a search is in flight when the signal comes


def spread_tiles(count: int) -> list[str]:
    """``count`` tiles spread over the whole grid: several area searches, not one."""
    from cdse_dem.tiles import all_tile_ids

    ids = sorted(all_tile_ids())
    return ids[:: len(ids) // count][:count]


def every_area_in_flight_again(searches) -> bool:
    """Every area search tried at least twice, and the latest try of each held by the server now."""
    areas = {r.query for r in searches}
    return len(searches) > len(areas) and sum(r.finished == 0.0 for r in searches) == len(areas)


def stop_download_once(sim: Simulator, scratch: Path) -> tuple[float, int]:
    """One ``download()`` stopped mid-way: (seconds from stop to return, geocells finished)."""
    import cdse_dem

    out = scratch / "dem"
    stop = threading.Event()
    stopped_at: list[float] = []

    def progress(done: int, total: int) -> None:
        if total and done >= STOP_AT * total and not stop.is_set():
            stopped_at.append(time.perf_counter())
            stop.set()

    box = {}
    worker = threading.Thread(target=lambda: box.setdefault(
        "result", cdse_dem.download(DOWNLOAD_TILES, out, credentials=(USER, PASSWORD), stop=stop, progress=progress)))
    worker.start()
    worker.join(300)
    returned = time.perf_counter()
    result = box.get("result")
    if result is None or not stopped_at:
        raise SystemExit(f"download() did not return stopped: {result}")
    if not result.interrupted:
        raise SystemExit(f"the run was not interrupted (exit status {result.exit_status}): it finished first")
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    if leftovers:
        raise SystemExit(f"temporary files left behind: {leftovers}")
    return returned - stopped_at[0], result.totals.downloaded


def signal_search_once(sim, tiles: list[str], scratch: Path) -> tuple[float, int]:
    """One command line interrupted during failing searches: (seconds from SIGINT to exit, late searches)."""
    env = benchlib.tool_env(scratch, sim.env)
    sim.clear_log()

    def searches():
        return [r for r in sim.request_log() if r.server == "catalogue" and r.path.endswith("/Products")]

    args = [a for tile in tiles for a in ("--t", tile)]
    proc = subprocess.Popen([PYTHON, str(ENTRY), *args, "--o", str(scratch / "dem")], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not every_area_in_flight_again(searches()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the searches never got under way: {proc.communicate()[1][-2000:]}")
        time.sleep(0.005)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    seconds = time.monotonic() - sent
    if proc.returncode != 130 or "Traceback" in stderr:
        raise SystemExit(f"the tool exited {proc.returncode}, not 130:\n{stderr[-2000:]}")
    time.sleep(1.5)  # past the Retry-After: a search thread left behind would send its retry now
    return seconds, sum(1 for r in searches() if r.started > sent)


def silent_host_once(server, scratch: Path, signal_after: float | None) -> tuple[float, int, str]:
    """The command line against the silent download host: (seconds from the signal, or from the start
    when there is none, to the exit; exit status; its last ERROR line)."""
    from tests import hostile as h

    env = benchlib.tool_env(scratch, server.env)
    server.mode = h.SILENT_HOST
    server.clear()
    started = time.monotonic()
    proc = subprocess.Popen([PYTHON, str(ENTRY), "--t", "32UMA", "--o", str(scratch / "dem")], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    mark = started
    if signal_after is not None:
        try:
            proc.wait(timeout=signal_after)
            raise SystemExit(f"the run ended before the signal: {proc.stderr.read()[-2000:]}")
        except subprocess.TimeoutExpired:
            pass
        mark = time.monotonic()
        proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=600)
    seconds = time.monotonic() - mark
    if "Traceback" in stderr:
        raise SystemExit(stderr[-3000:])
    errors = [line.split("| ERROR ", 1)[1] for line in stderr.splitlines() if "| ERROR " in line]
    return seconds, proc.returncode, errors[-1] if errors else ""


def silent_host_rows(repeat: int) -> list[Row]:
    from tests import hostile as h

    server = h.Hostile()
    try:
        signalled = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="cdse-bench-silent-") as scratch:
                signalled.append(silent_host_once(server, Path(scratch), SIGNAL_AFTER))
        with tempfile.TemporaryDirectory(prefix="cdse-bench-silent-") as scratch:
            alone = silent_host_once(server, Path(scratch), None)
    finally:
        server.stop()
    t_signal = median(seconds for seconds, _, _ in signalled)
    statuses = {status for _, status, _ in signalled}
    rows = [Row(
        f"stop: SIGTERM {SIGNAL_AFTER:g} s into a run against a download host that never answers (32UMA, every "
        "worker blocked in a read) → exit",
        f"{t_signal:.2f} s (runs: {', '.join(f'{s:.2f}' for s, _, _ in signalled)}); exit status "
        f"{', '.join(map(str, sorted(statuses)))}", f"< {TARGET:g} s, exit 130",
        t_signal < TARGET and statuses == {130})]
    seconds, status, error = alone
    rows.append(Row(
        "the same run without a signal → ends by itself",
        f"{seconds:.1f} s (one run), exit status {status}: \"{error}\"", f"< {SILENT_TARGET:g} s, exit 1",
        seconds < SILENT_TARGET and status == 1))
    return rows


def run(repeat: int = 3) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    rows = []

    with Simulator() as sim:
        home = Path(tempfile.mkdtemp(prefix="cdse-bench-stop-home-"))
        for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
            (home / sub).mkdir()
        saved = {k: os.environ.get(k) for k in (*sim.env, "CDSE_DEM_HOME")}
        os.environ.update(sim.env, CDSE_DEM_HOME=str(home))
        try:
            import cdse_dem

            planned = cdse_dem.plan(DOWNLOAD_TILES)  # the simulator makes every zip now, untimed
            runs = []
            for _ in range(repeat):
                with tempfile.TemporaryDirectory(prefix="cdse-bench-stop-") as scratch:
                    runs.append(stop_download_once(sim, Path(scratch)))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            shutil.rmtree(home, ignore_errors=True)
    t_stop = median(seconds for seconds, _ in runs)
    rows.append(Row(
        f"stop: download() from a thread, stop set at {STOP_AT:.0%} of the bytes ({len(planned.geocells)} GLO-90 "
        f"geocells of {' '.join(DOWNLOAD_TILES)}) → return",
        f"{t_stop:.2f} s (runs: {', '.join(f'{s:.2f}' for s, _ in runs)}; geocells finished and recorded: "
        f"{', '.join(str(n) for _, n in runs)}); no temporary left", f"< {TARGET:g} s", t_stop < TARGET))

    from simulator import Faults, SimulatorConfig, start_simulator

    tiles = spread_tiles(SEARCH_TILES)
    config = SimulatorConfig(latency=SEARCH_LATENCY, cache_dir=benchlib.CACHE_DIR,
                             faults=Faults(catalogue_error_rate=1.0, retry_after=1.0))
    # the in-process simulator reports every connection the killed process left behind on stderr
    with start_simulator(config) as sim, contextlib.redirect_stderr(io.StringIO()):
        signal_runs = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="cdse-bench-signal-") as scratch:
                signal_runs.append(signal_search_once(sim, tiles, Path(scratch)))
    t_signal = median(seconds for seconds, _ in signal_runs)
    late = sum(n for _, n in signal_runs)
    rows.append(Row(
        f"stop: SIGINT to the command line during failing searches ({SEARCH_TILES} tiles, every search 503 "
        f"after {SEARCH_LATENCY:g} s, retries held) → exit 130",
        f"{t_signal:.2f} s (runs: {', '.join(f'{s:.2f}' for s, _ in signal_runs)}); searches sent after the "
        f"signal: {late}", f"< {TARGET:g} s, no search after", t_signal < TARGET and late == 0))
    return rows + silent_host_rows(repeat)


if __name__ == "__main__":
    sys.exit(benchlib.main_for(sys.modules[__name__]))
