"""What every benchmark shares: the simulator in its own process, the tool in its own process.

The figures must be what a user would see, so nothing is measured in-process: the simulator
runs as ``python -m simulator`` (its own interpreter, sharing this machine's 2 cores with the
tool, as a real server would not: the figures are conservative), and the tool runs as
``.venv/bin/python cdse_copernicus_dem_downloader.py ...`` with a temporary ``CDSE_DEM_HOME``
(no KML there, so footprints are computed) and the demo account in the environment.
Wall time is the whole process, from ``fork`` to exit; peak memory is that process's own
``ru_maxrss`` from ``os.wait4`` (RUSAGE_CHILDREN would give the maximum over every child so
far, not this one's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "cdse_copernicus_dem_downloader.py"
CACHE_DIR = ROOT / ".cache" / "simulator"
PYTHON = sys.executable
USER, PASSWORD = "demo@example.com", "demo"
MB = 1e6  # figures in decimal megabytes, as CDSE states its 20 MB/s

# CDSE's limits scaled to this 2-core machine: CDSE allows 4 connections of 20 MB/s each; here a
# connection gets BANDWIDTH, so the ceiling of one account is 4 x BANDWIDTH. 5 MB/s keeps the
# two Python processes (simulator and tool) far from using the 2 cores, even while the machine
# runs other work, so the cap and not the CPU is what limits. LATENCY is added by the simulator
# before every reply (identity, catalogue and download): a plausible round trip to CDSE.
# ``configure`` (``--bandwidth``, ``--latency`` of every script) changes both for a run.
BANDWIDTH = 5e6
LATENCY = 0.05
CONNECTIONS = 4


def ceiling() -> float:
    """Bytes per second one account can get at most: 4 connections at the cap."""
    return CONNECTIONS * BANDWIDTH


def configure(bandwidth_mb: float | None = None, latency_ms: float | None = None) -> None:
    global BANDWIDTH, LATENCY
    if bandwidth_mb is not None:
        BANDWIDTH = bandwidth_mb * MB
    if latency_ms is not None:
        LATENCY = latency_ms / 1000


@dataclass
class Run:
    """One process of the tool: how long, how it ended, how much memory, what it said."""

    seconds: float
    returncode: int
    peak_rss_mb: float
    stdout: str
    stderr: str
    bytes: int = 0  # downloaded, as the run's --summary-json says, where a benchmark reads it

    def check(self, expected: int = 0) -> Run:
        if self.returncode != expected or "Traceback" in self.stderr:
            raise SystemExit(f"the tool exited {self.returncode} (expected {expected}):\n{self.stderr[-3000:]}")
        return self


def run_process(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Run:
    """Run ``argv`` to its end: wall seconds from start to exit, and its own peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(seconds, proc.returncode, usage.ru_maxrss / 1024, out.read().decode(errors="replace"),
                   err.read().decode(errors="replace"))


class Simulator:
    """``python -m simulator`` in a child process; its first stdout line says where it listens."""

    def __init__(self, *args: str, size: str = "realistic", capped: bool = True):
        """``capped``: the per-connection bandwidth cap applies (False: as fast as loopback goes)."""
        bandwidth, latency = (BANDWIDTH if capped else None), LATENCY
        argv = [PYTHON, "-m", "simulator", "--size", size, "--cache-dir", str(CACHE_DIR), *args]
        if bandwidth:
            argv += ["--bandwidth", f"{bandwidth:g}"]
        if latency:
            argv += ["--latency", f"{latency:g}"]
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise SystemExit(f"the simulator did not start: {' '.join(argv)}")
        self.urls = json.loads(line)

    @property
    def env(self) -> dict[str, str]:
        return {"CDSE_TOKEN_URL": self.urls["token_url"], "CDSE_CATALOGUE_URL": self.urls["catalogue_url"],
                "CDSE_DOWNLOAD_URL": self.urls["download_url"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Tool:
    """The real command line against a simulator, in a temporary tool home of its own."""

    sim: Simulator
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cdse-bench-home-")))

    def __post_init__(self) -> None:
        for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDSE_")}
        env.update(self.sim.env, CDSE_USERNAME=USER, CDSE_PASSWORD=PASSWORD, CDSE_DEM_HOME=str(self.home))
        env.update(extra)
        return env

    def run(self, *args: str, expected: int = 0, entry: Path = ENTRY, **extra_env: str) -> Run:
        """The command line (or ``entry``, a wrapper of it) with ``args``, in this tool home."""
        return run_process([PYTHON, str(entry), *args], env=self.env(**extra_env)).check(expected)

    def plan(self, tiles: Iterable[str], *args: str) -> dict:
        """The ``--dry-run`` summary of ``tiles``: what the tool would fetch."""
        summary = self.home / "plan.json"
        self.run(*tile_args(tiles), "--dry-run", "--summary-json", str(summary), "-q", *args)
        return json.loads(summary.read_text())

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


def tool_env(scratch: Path, services: dict[str, str]) -> dict[str, str]:
    """The environment of a command line run in ``scratch``: a tool home of its own there, the account
    slots there too, ``services``' addresses, the benchmark account, and no other CDSE_ setting."""
    home = scratch / "home"
    for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSE_")}
    env.update(services, CDSE_USERNAME=USER, CDSE_PASSWORD=PASSWORD, CDSE_DEM_HOME=str(home),
               CDSE_DEM_SLOTS_DIR=str(scratch / "slots"))
    return env


def tile_args(tiles: Iterable[str]) -> list[str]:
    return [arg for tile in tiles for arg in ("--t", tile)]


def planned_cells(summary: dict) -> dict[str, str]:
    """grid id → status over every tile of a ``--summary-json``, each geocell once."""
    return {c["grid_id"]: c["status"] for t in summary["tiles"] for c in t["geocells"]}


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


@dataclass
class Row:
    """One line of the table: what, the figure, the target, and whether it is met."""

    what: str
    figure: str
    target: str = ""
    met: bool | None = None  # None: no target

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "NOT met")


def table(rows: Sequence[Row]) -> str:
    lines = ["| benchmark | figure | target | |", "|---|---|---|---|"]
    lines += [f"| {r.what} | {r.figure} | {r.target} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def conditions(repeat: int) -> str:
    return (f"Simulator: per-connection cap {BANDWIDTH / MB:g} MB/s (benchmarks 1, 2, 4; none for 3 and 5), "
            f"latency {LATENCY * 1000:g} ms before every reply, {CONNECTIONS} connections per account "
            f"(ceiling {ceiling() / MB:g} MB/s). Each figure is the median of {repeat} runs.")


def machine() -> str:
    import platform

    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores (nproc), {mem_kb / 1024 / 1024:.1f} GiB memory, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def add_options(parser) -> None:
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is shown; default 3)")
    parser.add_argument("--bandwidth", type=float, metavar="MB_S",
                        help=f"per-connection cap in MB/s (default {BANDWIDTH / MB:g})")
    parser.add_argument("--latency", type=float, metavar="MS",
                        help=f"latency before every reply in ms (default {LATENCY * 1000:g})")


def main_for(bench, argv: Sequence[str] | None = None) -> int:
    """The ``__main__`` of one benchmark script: run it, print its table."""
    import argparse

    parser = argparse.ArgumentParser(description=bench.__doc__.splitlines()[0])
    add_options(parser)
    args = parser.parse_args(argv)
    configure(args.bandwidth, args.latency)
    rows = bench.run(args.repeat)
    print(table(rows))
    print(f"\n{conditions(args.repeat)}\n{machine()}")
    return 0
