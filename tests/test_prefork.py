"""A run started from the zygote (tests/prefork.py) is what a fresh interpreter would be.

Each script runs twice, from the zygote and with ``subprocess.run``; what a test of the
command line can see (exit status, stdout, stderr, environment, working directory, umask,
open files, argv, streams) must be the same.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prefork import Zygote

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the probes read /proc (Linux)")

PROBE = r'''
import json, os, stat, sys
report = {
    "name": __name__,
    "argv": sys.argv,
    "path0": sys.path[0],
    "cwd": os.getcwd(),
    "umask": os.umask(0),
    "env": {k: os.environ.get(k) for k in ("PREFORK_ADDED", "PREFORK_REMOVED")},
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd") if int(fd) > 2),
    "stdin": sys.stdin.read(),
    "tty": [s.isatty() for s in (sys.stdin, sys.stdout, sys.stderr)],
    "pipes": [stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in (0, 1, 2)],
    "streams": [(s.encoding, s.errors, s.line_buffering, s.write_through, s.name) for s in
                (sys.stdin, sys.stdout, sys.stderr)],
    "our_code_loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("cdse_dem", "simulator", "tests")),
}
sys.stdout.reconfigure(errors="surrogateescape")  # a pipe: no seek (as the CLI does it)
print(json.dumps(report))
print("progress\r100%\r\nend", file=sys.stderr)
sys.exit(int(sys.argv[1]))
'''


@pytest.fixture
def zygote(monkeypatch):
    monkeypatch.delenv("CDSE_TEST_FRESH_INTERPRETERS", raising=False)  # this file tests the zygote itself
    started = Zygote()
    yield started
    started.stop()


def both(zygote, script: Path, *args: str, env: dict, cwd: Path, stdin: str = ""):
    argv = [str(script), *args]
    mine = zygote.run(argv, env, cwd, stdin, timeout=60)
    fresh = subprocess.run([sys.executable, *argv], env=env, cwd=cwd, input=stdin, capture_output=True, text=True,
                           timeout=60, check=False)
    return mine, fresh


def test_a_run_sees_what_a_fresh_interpreter_sees(zygote, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFORK_REMOVED", "in the test process only")
    script = tmp_path / "scripts" / "probe.py"
    script.parent.mkdir()
    script.write_text(PROBE)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFORK_REMOVED", "PYTHONWARNINGS")}
    env["PREFORK_ADDED"] = "for this run"
    assert zygote.serves(env)
    old = os.umask(0o027)
    try:
        mine, fresh = both(zygote, script, "3", "an argument", env=env, cwd=work, stdin="line one\nline two\n")
    finally:
        os.umask(old)
    assert mine.returncode == fresh.returncode == 3
    assert mine.stdout == fresh.stdout
    assert mine.stderr == fresh.stderr == "progress\n100%\nend\n"  # universal newlines, as text=True gives
    assert '"env": {"PREFORK_ADDED": "for this run", "PREFORK_REMOVED": null}' in mine.stdout
    assert f'"umask": {0o027}' in mine.stdout
    assert '"fds": [3]' in mine.stdout  # 3: the listing of /proc/self/fd itself; nothing inherited
    assert '"our_code_loaded": []' in mine.stdout


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("raise SystemExit('a message')", 1),
        ("raise ValueError('unexpected')", 1),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -15),
        ("import os; os._exit(7)", 7),
        ("import sys; print('no newline at the end', end=''); sys.stdout.flush(); raise KeyboardInterrupt", -2),
        ("pass", 0),
    ],
)
def test_exit_statuses_and_their_output_are_those_of_a_fresh_interpreter(zygote, tmp_path, code, status):
    script = tmp_path / "exit.py"
    script.write_text(code + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    mine, fresh = both(zygote, script, env=env, cwd=tmp_path)
    assert mine.returncode == fresh.returncode == status
    assert mine.stdout == fresh.stdout
    assert mine.stderr == fresh.stderr


def test_a_run_past_its_timeout_is_killed_with_its_output_so_far(zygote, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text("import sys, time\nprint('started', flush=True)\ntime.sleep(60)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        zygote.run([str(script)], env, tmp_path, "", timeout=1)
    assert caught.value.output == "started\n"


def test_a_different_startup_environment_gets_a_fresh_interpreter(zygote):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    assert zygote.serves(env)
    assert zygote.serves(dict(env, CDSE_DEM_HOME="/elsewhere", HOME="/elsewhere"))
    for variable in ("PYTHONHASHSEED", "LC_ALL", "TZ", "PYTHONWARNINGS"):
        assert not zygote.serves(dict(env, **{variable: "0"})), variable
