#!/usr/bin/env python3
"""``make bench``: every benchmark of the project, printed as one table.

Usage: python benchmarks/run_all.py [--repeat 3] [--bandwidth MB_S] [--latency MS] [--no-grid]
                                    [--markdown FILE]

Runs, each with its own simulator process and the tool as a separate process:
bench_throughput.py (1, 2, 4), timeline.py (where the time of 1 goes), bench_overhead.py (3),
bench_scale.py (5), bench_stop.py (how soon a stop or a signal ends a run), then bench_grid.py
(tile ids → geocells, issue 4; about 30 s, needs ../shared/data/s2_tiling.zip, skipped without
it). About 7 minutes on 2 cores; the first run on a fresh clone also fills the simulator's zip
cache (.cache/simulator), which takes longer.
"""

import argparse
import datetime
import subprocess
import sys
import time

import bench_overhead
import bench_scale
import bench_stop
import bench_throughput
import benchlib
import timeline
from benchlib import PYTHON, ROOT, Row

GRID_SCRIPT = ROOT / "benchmarks" / "bench_grid.py"
GRID_ZIP = ROOT.parent / "shared" / "data" / "s2_tiling.zip"


def grid_rows() -> tuple[list[Row], str]:
    """bench_grid.py's table as rows of this one (its own script, run as it is)."""
    if not GRID_SCRIPT.is_file():
        return [], "bench_grid.py is absent: grid benchmarks not run"
    if not GRID_ZIP.is_file():
        return [], f"{GRID_ZIP} is absent: grid benchmarks not run"
    proc = subprocess.run([PYTHON, str(GRID_SCRIPT), "--repeat", "5"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return [], f"bench_grid.py failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
    rows = []
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or cells[0] in ("what", "") or set(cells[0]) <= {"-"}:
            continue
        note = cells[2] if len(cells) > 2 else ""
        met = None
        if "target" in note:
            met = note.rstrip().endswith(": met")
            note = note.rsplit(":", 1)[0] if note.rstrip().endswith(("met", "NOT met")) else note
        rows.append(Row(f"grid: {cells[0]}", cells[1], note, met))
    return rows, ""


def _number(row: Row) -> int:
    head = row.what.split(".", 1)[0]
    return int(head) if head.isdigit() else 99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlib.add_options(parser)
    parser.add_argument("--no-grid", action="store_true", help="skip bench_grid.py")
    parser.add_argument("--markdown", help="also write the table, conditions and machine to this file")
    args = parser.parse_args()
    benchlib.configure(args.bandwidth, args.latency)

    started = time.monotonic()
    rows: list[Row] = []
    for bench in (bench_throughput, timeline, bench_overhead, bench_scale, bench_stop):
        print(f"running {bench.__name__} ...", file=sys.stderr, flush=True)
        rows += bench.run(args.repeat)
    note = ""
    if not args.no_grid:
        print("running bench_grid ...", file=sys.stderr, flush=True)
        more, note = grid_rows()
        rows += more
    rows.sort(key=_number)  # benchmark order, whichever script measured the row
    minutes = (time.monotonic() - started) / 60
    command = " ".join([".venv/bin/python benchmarks/run_all.py", *sys.argv[1:]])
    text = "\n".join([
        benchlib.table(rows), "",
        benchlib.conditions(args.repeat),
        f"Machine: {benchlib.machine()}.",
        f"Date: {datetime.date.today().isoformat()}. Command: `{command}` (`make bench` runs it with no"
        f" options); {minutes:.1f} min in all.",
        *([note] if note else []),
    ])
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0  # a missed target is a figure to read, not a failed command


if __name__ == "__main__":
    sys.exit(main())
