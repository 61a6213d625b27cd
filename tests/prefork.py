"""Start Python scripts as fresh processes without paying for their imports each time.

A run of the command line imports numpy, shapely, pyproj, requests and tifffile before doing
anything: about 0.4 s of CPU. The suite starts some 250 of them, 100 s of a two-core machine.
So each test process keeps one "zygote": a Python that has imported those third-party
libraries (never our own code) and then only waits. For each run it forks a waiter, which
forks the run itself: a new process with its own pid, its stdin, stdout and stderr on pipes,
the run's environment, working directory and umask, that imports our code from scratch and
executes the script as ``__main__``; its exit status (a signal as a negative number) is the
waiter's report, exactly as ``subprocess.run`` gives it.

What a run inherits from the zygote beyond a fresh interpreter: the already imported
third-party modules, and whatever they read from the environment when imported. So a run
whose environment differs from the zygote's in a variable an interpreter or a library reads
at start-up (``PYTHON*``, locale, time zone, library tuning) gets a really fresh interpreter
instead, as does every run when ``CDSE_TEST_FRESH_INTERPRETERS`` is set or fork is missing.
"""

import atexit
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

# Not pyproj: its import opens PROJ's SQLite database, which a forked process must not share.
PRELOAD = (
    "numpy", "shapely", "requests", "urllib3", "tifffile", "lxml.etree", "yaml", "blake3", "tqdm",
    "cryptography.hazmat.primitives.serialization", "cryptography.hazmat.primitives.asymmetric.rsa",
    "argparse", "concurrent.futures", "email.utils", "http.client", "json", "logging.handlers",
    "ssl", "zipfile",
)
# environment variables read when the interpreter or a preloaded library starts
STARTUP_PREFIXES = ("PYTHON", "LC_", "LANG", "TZ", "OPENBLAS", "OMP_", "MKL_", "NUMPY", "PROJ", "GEOS",
                    "TQDM_", "MALLOC", "LD_")

_ZYGOTE = r'''
import os, socket, struct, sys, json
for name in sys.argv[2:]:
    try:
        __import__(name)
    except ImportError:
        pass
# a library that keeps a file open would share it with every run, and lose it when a run closes
# what it did not open: then no zygote (the test process falls back to fresh interpreters)
def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


if any(_is_open(fd) for fd in range(3, 1024) if fd != int(sys.argv[1])):
    os._exit(3)
import gc
gc.freeze()  # the collector of a run leaves the preloaded objects alone: fewer pages copied on write


def _stdio(fd, old):
    """The stream the interpreter would have made on this fd at start-up (as ``old`` was made on
    the zygote's /dev/null, which seeks where a pipe does not)."""
    import io
    raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
    raw.name = old.buffer.name
    if isinstance(old.buffer, io.FileIO):  # unbuffered (PYTHONUNBUFFERED, -u)
        buffer = raw
    else:
        buffer = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
    new = io.TextIOWrapper(buffer, old.encoding, old.errors, "\n", old.line_buffering, old.write_through)
    new.mode = old.mode
    return new


def _reap(block):
    """Reap one ended waiter (with ``block``, wait for one to end); False when there is none."""
    try:
        return os.waitpid(-1, 0 if block else os.WNOHANG)[0] != 0
    except ChildProcessError:
        return False


def _serve():
    """Return, in a run's process only, its request; the zygote and the waiters never return."""
    control = socket.socket(fileno=int(sys.argv[1]))
    while True:
        _, fds, _, _ = socket.recv_fds(control, 1, 4)
        # waiters are reaped here, so that the CPU time of the runs adds up to the test process's
        while _reap(block=not fds):
            pass
        if not fds:
            os._exit(0)  # the test process has gone, and every run has ended
        if os.fork() == 0:
            control.close()
            break
        for fd in fds:
            os.close(fd)
    link, stdio = socket.socket(fileno=fds[0]), fds[1:]
    size, = struct.unpack(">I", link.recv(4, socket.MSG_WAITALL))
    request = json.loads(link.recv(size, socket.MSG_WAITALL))
    pid = os.fork()
    if pid == 0:
        link.close()
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
        sys.stdin, sys.stdout, sys.stderr = (_stdio(fd, old) for fd, old in enumerate(
            (sys.stdin, sys.stdout, sys.stderr)))
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        return request
    for fd in stdio:
        os.close(fd)
    link.sendall(struct.pack(">i", pid))
    _, status = os.waitpid(pid, 0)
    link.sendall(struct.pack(">i", os.waitstatus_to_exitcode(status)))
    os._exit(0)


request = _serve()
del _serve
os.chdir(request["cwd"])
os.umask(request["umask"])
os.environ.clear()
os.environ.update(request["env"])
sys.argv = request["argv"]
sys.path[0] = os.path.dirname(os.path.realpath(sys.argv[0]))
del request


def _from_the_script(kind, value, tb, shown=sys.excepthook, script=sys.argv[0]):
    """A traceback starts at the script, as in a fresh interpreter (not here nor in runpy)."""
    start = tb
    while start is not None and start.tb_frame.f_code.co_filename != script:
        start = start.tb_next
    shown(kind, value.with_traceback(start or tb), start or tb)


sys.excepthook = _from_the_script
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
'''


class Zygote:
    """One per test process, started on first use; it ends when the test process does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._process: subprocess.Popen | None = None
        self._env: dict[str, str] = {}

    def _start(self) -> socket.socket:
        env = _baseline_env()
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE, str(theirs.fileno()), *PRELOAD], pass_fds=[theirs.fileno()],
                env=dict(env, OPENBLAS_NUM_THREADS="1"),  # no threads in a process that forks
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        self._control, self._env = ours, env
        atexit.register(self.stop)
        return ours

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a run in ``env`` starts from the zygote as it would in a fresh interpreter."""
        if os.environ.get("CDSE_TEST_FRESH_INTERPRETERS") or not hasattr(socket, "send_fds"):
            return False
        with self._lock:
            base = self._env if self._control is not None else _baseline_env()
        changed = {k for k in base.keys() | env.keys() if base.get(k) != env.get(k)}
        return not any(k.startswith(STARTUP_PREFIXES) for k in changed)

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, stdin: str, timeout: float
            ) -> subprocess.CompletedProcess:
        """Like ``subprocess.run([python, *argv], env=env, cwd=cwd, input=stdin, capture_output=True,
        text=True, timeout=timeout)``. OSError when the zygote cannot start the run."""
        request = json.dumps({"argv": argv, "env": env, "cwd": str(cwd), "umask": _umask()}).encode()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        link, theirs = socket.socketpair()
        try:
            with self._lock:
                control = self._control or self._start()
                socket.send_fds(control, [b"r"], [theirs.fileno(), stdin_r, stdout_w, stderr_w])
            link.sendall(struct.pack(">I", len(request)) + request)
            link.settimeout(60)
            (pid,) = struct.unpack(">i", _receive(link, 4))
        except BaseException:
            for fd in (stdin_w, stdout_r, stderr_r):
                os.close(fd)
            link.close()
            raise
        finally:
            theirs.close()
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)
        outputs: dict[int, bytes] = {}
        readers = [threading.Thread(target=_read_all, args=(fd, outputs), daemon=True) for fd in (stdout_r, stderr_r)]
        for reader in readers:
            reader.start()
        threading.Thread(target=_write_all, args=(stdin_w, stdin.encode()), daemon=True).start()
        with link:
            link.settimeout(timeout)
            try:
                (code,) = struct.unpack(">i", _receive(link, 4))
            except ConnectionError as exc:  # the run has started: not to be run again
                raise RuntimeError(f"lost the exit status of {argv}") from exc
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)  # as subprocess.run does, then its output so far
                link.settimeout(30)
                _receive(link, 4)
                for reader in readers:
                    reader.join()
                raise subprocess.TimeoutExpired(argv, timeout, _text(outputs[stdout_r]), _text(outputs[stderr_r])
                                                ) from None
        for reader in readers:
            reader.join()
        return subprocess.CompletedProcess(argv, code, _text(outputs[stdout_r]), _text(outputs[stderr_r]))

    def stop(self) -> None:
        """End the zygote (runs under way finish on their own): after a failure, and at exit."""
        with self._lock:
            if self._control is not None:
                self._control.close()  # the zygote reads the end of its control socket and exits
            if self._process is not None:
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._control = self._process = None


def _baseline_env() -> dict[str, str]:
    """The environment of a run that adds nothing (``run_cli`` drops PYTHONWARNINGS too)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}


def _umask() -> int:
    """This process's umask, read without changing it (other threads may be creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _receive(link: socket.socket, size: int) -> bytes:
    data = link.recv(size, socket.MSG_WAITALL)
    if len(data) != size:
        raise ConnectionError("the zygote's waiter went away")
    return data


def _read_all(fd: int, into: dict[int, bytes]) -> None:
    with open(fd, "rb", buffering=0) as stream:
        chunks = []
        while chunk := stream.read(1 << 16):
            chunks.append(chunk)
    into[fd] = b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    with open(fd, "wb", buffering=0) as stream:
        try:
            stream.write(data)
        except BrokenPipeError:
            pass


def _text(data: bytes) -> str:
    """Decoded as ``subprocess.run(text=True)`` does: the locale's encoding, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(data)).read()


ZYGOTE = Zygote()


def run_python(argv: list[str], env: dict[str, str], cwd: Path, stdin: str, timeout: float
               ) -> subprocess.CompletedProcess:
    """``python argv...`` in a new process: from the zygote when it can, else a fresh interpreter."""
    if ZYGOTE.serves(env):
        try:
            return ZYGOTE.run(argv, env, cwd, stdin, timeout)
        except OSError:  # the zygote could not start it (ConnectionError is one): a fresh interpreter
            ZYGOTE.stop()
    return subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, input=stdin, check=False)
