"""Shared fixtures: the project root, the real data folder, and the local CDSE simulator."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
KML_ZIP = SHARED_DATA / "s2_tiling.zip"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def shared_data() -> Path:
    """The real data folder beside the project; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def kml_zip() -> Path:
    if not KML_ZIP.is_file():
        pytest.skip(f"the official tiling KML {KML_ZIP} is absent")
    return KML_ZIP


def _session_root(tmp_path_factory) -> Path:
    """A folder of this test session that every xdist worker shares (without xdist: the session's own)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def real_kml(tmp_path_factory) -> Path:
    """The official tiling KML (109 MB), unzipped and indexed once per test session, for all workers.

    The first worker to get here unzips it and builds its index (cdse_dem.grid.open_index,
    stored beside it) under a lock; the others wait for it and find both ready.
    """
    import fcntl
    import zipfile

    from cdse_dem.grid import open_index

    if not KML_ZIP.is_file():
        pytest.skip(f"the official tiling KML {KML_ZIP} is absent")
    folder = _session_root(tmp_path_factory) / "kml"
    folder.mkdir(exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with zipfile.ZipFile(KML_ZIP) as archive:
            (member,) = archive.namelist()
            kml = folder / member
            if not kml.is_file():
                partial = archive.extract(member, folder / ".partial")
                os.replace(partial, kml)
        open_index(kml)
    return kml


@pytest.fixture(scope="session", autouse=True)
def _one_simulator_cache_for_all_workers(tmp_path_factory) -> None:
    """Every xdist worker's ``<basetemp>/sim-cache`` is one folder of the session's root temp.

    A product zip depends only on the product, size and seed, and the simulator writes it to a
    temporary file and renames it into place, so workers can share them: each product is made
    (and deflated) once per test session instead of once per worker. Without xdist the folder is
    the session's own, as before.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return
    shared = _session_root(tmp_path_factory) / "sim-cache"
    shared.mkdir(exist_ok=True)
    (tmp_path_factory.getbasetemp() / "sim-cache").symlink_to(shared, target_is_directory=True)


@pytest.fixture
def make_sim(tmp_path_factory) -> Iterator:
    """Start local CDSE simulators in this process (threads); all are stopped at teardown.

    ``make_sim(**overrides)`` takes the fields of ``simulator.SimulatorConfig`` and returns
    the running ``Simulator`` handle (``.env``, ``.token_url``, ``.request_log()``, ...).
    """
    from simulator import SimulatorConfig, start_simulator

    started = []

    def _make(**overrides):
        overrides.setdefault("cache_dir", tmp_path_factory.getbasetemp() / "sim-cache")
        sim = start_simulator(SimulatorConfig(**overrides))
        started.append(sim)
        return sim

    yield _make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim):
    """A simulator with default settings: small products, no faults, demo@example.com/demo."""
    return make_sim()


@pytest.fixture
def tool_home(tmp_path, monkeypatch) -> Path:
    """An empty tool home (configuration/, auxiliary/, credentials/, output_dir/) for one test."""
    home = tmp_path / "home"
    for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
        (home / sub).mkdir(parents=True)
    monkeypatch.setenv("CDSE_DEM_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _slots_in_test_folder(monkeypatch, tmp_path_factory):
    """The per-account download slots of test runs live in the test session's folder, not in /tmp."""
    monkeypatch.setenv("CDSE_DEM_SLOTS_DIR", str(tmp_path_factory.getbasetemp() / "account-slots"))


@pytest.fixture(autouse=True)
def _no_real_cdse(monkeypatch):
    """No test may reach the real CDSE: unset endpoints point at a closed local port."""
    for var in ("CDSE_TOKEN_URL", "CDSE_CATALOGUE_URL", "CDSE_DOWNLOAD_URL"):
        if var not in os.environ:
            monkeypatch.setenv(var, "http://127.0.0.1:9/closed")
    for var in ("CDSE_USERNAME", "CDSE_PASSWORD", "CDSE_TOTP", "CDSE_KEY_PASSPHRASE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def hostile() -> Iterator:
    """A hostile CDSE on 127.0.0.1 and a stranger on 127.0.0.2 (tests/hostile.py); ``.mode`` picks the fault."""
    from tests.hostile import Hostile

    server = Hostile()
    yield server
    server.stop()


@pytest.fixture
def netrc_home(tmp_path, monkeypatch) -> Path:
    """A HOME whose ``.netrc`` has a ``default`` line for some other service (issue 11, row 1)."""
    home = tmp_path / "user-home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"default login someone@other.example password {NETRC_PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    return home


NETRC_PASSWORD = "netrc-Other-Service-Pw-4Kd9"


# Modules whose tests share costly module-scoped fixtures: the whole grid's footprints and cells, a
# folder filled by a realistic-size run, a tool home filled by a real run. A module fixture lasts only
# while its module's tests follow each other on a worker, so each of these runs on one xdist worker in
# one stretch (its fixtures built once, not once per worker and again after every interruption).
ONE_WORKER_MODULES = ("test_kml_all_tiles.py", "test_sen2cor_ready.py", "test_bad_inputs.py", "test_hostile_fs.py",
                      "test_processors.py")


@pytest.hookimpl(optionalhook=True)  # a hook of xdist: unknown, and unused, without it
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``, with ONE_WORKER_MODULES each a group and every other test on its own.

    (xdist's own ``xdist_group`` marker does not take effect under pytest 9, whose node ids are no
    longer the attribute xdist rewrites.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModulesTogether(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module.rsplit("/", 1)[-1] in ONE_WORKER_MODULES else super()._split_scope(nodeid)

    return ModulesTogether(config, log)


@pytest.fixture(autouse=True)
def _no_secrets_from_earlier_tests():
    """The secrets a run remembers (to scrub them from output) are process-wide: each test starts
    with none, so a short token of one test never masks text in another."""
    from cdse_dem.logs import forget_all

    forget_all()
    yield
    forget_all()


def pytest_configure(config):
    """Our modules compiled once, before the runs start: with PYTHONDONTWRITEBYTECODE set (as in some
    sandboxes) each of the ~250 command-line runs would compile them again, 0.1 s of CPU each. Python
    would write the same files itself on first import without that variable."""
    if sys.dont_write_bytecode and not os.environ.get("PYTEST_XDIST_WORKER"):
        import compileall

        for package in ("cdse_dem", "simulator"):
            compileall.compile_dir(ROOT / package, quiet=1)


def pytest_unconfigure(config):
    """The CLI zygote of this test process (tests/prefork.py) ends with it, and is waited for, so that
    the CPU time of the runs it started adds up to the test session's."""
    prefork = sys.modules.get("tests.prefork")
    if prefork is not None:
        prefork.ZYGOTE.stop()
