"""Running the real command line in a separate process, as a user would."""

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.prefork import run_python

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "cdse_copernicus_dem_downloader.py"
# the same command line, with the identity and catalogue retries made without their waits
NO_RETRY_WAITS = ROOT / "tests" / "cli_without_retry_waits.py"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120,
            stdin: str | None = None, entry: Path = ENTRY) -> Result:
    """Run ``cdse_copernicus_dem_downloader.py`` (or ``entry``) with ``args`` in a new process.

    ``env`` adds to os.environ.

    The process starts from a zygote that has the third-party libraries imported already
    (tests/prefork.py): the same process, output and exit status, without 0.4 s of imports.
    """
    full_env = dict(os.environ)
    full_env.pop("PYTHONWARNINGS", None)
    if env:
        full_env.update({k: str(v) for k, v in env.items()})
    proc = run_python([str(entry), *map(str, args)], env=full_env, cwd=cwd or ROOT,
                      stdin=stdin if stdin is not None else "", timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


DEMO_USER, DEMO_PASSWORD = "demo@example.com", "demo"


class FakeClock:
    """A monotonic clock that moves only when told: ``make_sim(clock=clock)`` and
    ``CdseSession(..., clock=clock)`` share it, so token lifetimes, refresh windows and time
    budgets pass at once (``advance``), and a loaded machine cannot make them late."""

    def __init__(self, now: float = 1000.0):
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def cli_env(sim, **extra) -> dict:
    """Environment for a CLI run against ``sim`` with the demo account."""
    env = dict(sim.env, CDSE_USERNAME=DEMO_USER, CDSE_PASSWORD=DEMO_PASSWORD)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def served_dem(sim, product_id: str) -> tuple[str, bytes]:
    """The DEM layer inside the zip the simulator serves for ``product_id``: (base name, bytes).

    Fetched with plain requests, independently of the tool, as the reference for byte checks;
    tried until the zip matches the catalogue's MD5, since the simulator may be injecting faults.
    """
    import hashlib
    import io
    import re
    import time
    import zipfile

    import requests

    record = requests.get(f"{sim.catalogue_url}/Products({product_id})", timeout=30).json()
    md5 = next(c["Value"] for c in record["Checksum"] if c["Algorithm"] == "MD5")
    token = requests.post(sim.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                               "username": DEMO_USER, "password": DEMO_PASSWORD},
                          timeout=10).json()["access_token"]
    for _ in range(30):
        try:
            reply = requests.get(f"{sim.download_url}/Products({product_id})/$value",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=60)
        except requests.RequestException:
            continue
        if reply.status_code == 200 and hashlib.md5(reply.content).hexdigest() == md5:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the simulator never served product {product_id} whole")
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        members = [m for m in archive.namelist()
                   if re.search(r"_DEM\.(tif|dt1|dt2)$", m) and "/PREVIEW/" not in m]
        assert len(members) == 1, members
        return members[0].rsplit("/", 1)[-1], archive.read(members[0])


def downloads(sim) -> list:
    """The file transfers of the simulator's log: ``$value`` requests of the download host, a whole zip
    or a single file of the Nodes API (its listings are not transfers: see ``listings``)."""
    return [r for r in sim.request_log() if r.server == "download" and r.path.endswith("/$value")]


def listings(sim) -> list:
    """The Nodes listings of the simulator's log."""
    return [r for r in sim.request_log() if r.server == "download" and r.path.endswith("/Nodes")]


def logins(sim) -> list:
    return [r for r in sim.request_log() if r.grant_type == "password"]


def max_concurrent(records) -> int:
    """The most requests in flight at once, from their start and finish times."""
    events = sorted([(r.started, 1) for r in records] + [(r.finished, -1) for r in records],
                    key=lambda e: (e[0], e[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def dem_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if re.search(r"_DEM\.(tif|dt1|dt2)$", p.name)}


def check_consistent(out: Path, sim=None) -> dict:
    """The JSON names exactly the DEM files on disk, and nothing temporary is left."""
    record = json.loads((out / "dict_filename_dem_id.json").read_text())
    files = dem_files(out)
    assert set(record) == set(files)
    # the name-id record, the sea record (cells found empty) and where each file came from
    records = ("dict_filename_dem_id.json", "open_sea_geocells.json", "dict_filename_dem_dataset.json")
    leftovers = [p.name for p in out.iterdir() if p.name not in files and p.name not in records
                 and not p.name.endswith(".kml")]
    assert leftovers == []
    if sim is not None:
        for name, product_id in record.items():
            served_name, data = served_dem(sim, product_id)
            assert served_name == name
            assert files[name] == data, f"{name} differs from the DEM inside the served zip"
    return record


def stored_credentials_env(sim, home: Path, **extra) -> dict:
    """Stored credentials only (the environment's are blanked), the simulator, this tool home."""
    return dict(sim.env, CDSE_DEM_HOME=str(home), CDSE_USERNAME="", CDSE_PASSWORD="", **extra)


def filled_tool_home(home: Path, env: dict, username: str, password: str, tile: str = "32UMA") -> Path:
    """A tool home with ``username``'s credentials stored for this OS user and ``tile``'s DEMs downloaded
    by a real run (``env``: the simulator's, with the environment's credentials blanked)."""
    from cdse_dem.credentials import KeyStore, current_os_user

    for sub in ("configuration", "auxiliary", "credentials", "output_dir"):
        (home / sub).mkdir(parents=True)
    KeyStore(home / "credentials").save(current_os_user(), username, password)
    result = run_cli("--t", tile, env=env)
    assert result.returncode == 0, result.output
    assert len(check_consistent(home / "output_dir")) == 6
    return home


def log_messages(text: str, level: str) -> list[str]:
    """The messages of the ``level`` lines (``ERROR``, ``WARNING``, ``INFO``) of a log."""
    marker = f"| {level} "
    return [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]


def whole_dem_bytes(file_name: str, terrain_seed: int | None = None, size: str = "small") -> bytes:
    """A GeoTIFF that passes the DEM integrity check for the cell and resolution ``file_name`` names
    (real dimensions, compressed to a few kB): a folder "filled" without downloading. One height
    everywhere; with ``terrain_seed``, the DEM layer the simulator of that seed serves at ``size``
    ("small", or "realistic": its smooth terrain, uncompressed as CDSE's)."""
    import numpy as np

    from cdse_dem.grid import geocell_of_name
    from simulator.geotiff import geotiff_parts
    from simulator.terrain import BlockRaster, coarse_elevation, elevation, raster_shape

    cell, resolution = geocell_of_name(file_name)
    rows, cols = raster_shape(cell.lat, resolution)
    if terrain_seed is None:
        raster = BlockRaster(np.full((1, 1), 250.0, dtype=np.float32), np.zeros(rows, dtype=np.intp),
                             np.zeros(cols, dtype=np.intp))
    else:
        terrain = elevation if size == "realistic" else coarse_elevation
        raster = terrain(cell.lat, cell.lon, rows, cols, terrain_seed)
    header, data = geotiff_parts(raster, cell.lon, cell.lat + 1, 1 / (cols - 1), 1 / (rows - 1))
    return header + (data if isinstance(data, bytes) else data.tobytes())


def planned_geocells(tile: str) -> list:
    """The geocells a run plans for ``tile`` (its computed area and Sen2Cor's rectangle), sorted."""
    from cdse_dem.sen2cor import cells_with_reasons

    (reasons,) = cells_with_reasons([tile], [geocells_of(computed_footprint(tile))])
    return list(reasons)


def tile_geocells(tile: str, folder: Path, resolution: int = 90, size: str = "small", seed: int = 0) -> list:
    """``(geocell, file)`` for each geocell a run plans for ``tile``: the file is its DEM layer as the
    simulator of ``seed`` serves it at ``size``, written into ``folder`` (once), or None where the
    simulator has no product (open sea)."""
    from simulator.cells import load_cells

    exists = load_cells(None)
    cells = []
    for cell in planned_geocells(tile):
        if not exists.has((cell.lat, cell.lon), resolution):
            cells.append((cell, None))
            continue
        path = folder / cell.dem_file_name(resolution, "DGED")
        if not path.exists():
            path.write_bytes(whole_dem_bytes(path.name, terrain_seed=seed, size=size))
        cells.append((cell, path))
    return cells


# --- one tile's geometry (the library works on batches of tiles) --------------------------------

def computed_footprint(tile: str):
    """The footprint of one tile computed from the grid (``computed_footprints`` of a list of one)."""
    from cdse_dem.grid import computed_footprints

    (footprint,) = computed_footprints([tile])
    return footprint


def geocells_of(footprint) -> list:
    """The sorted geocells one footprint overlaps (``geocells_of_each`` of a list of one)."""
    from cdse_dem.grid import geocells_of_each

    (cells,) = geocells_of_each([footprint.parts])
    return cells


def product_filter(collection: str, resolution: int, model: str, delivery: str, wkt: str) -> str:
    """A search's ``$filter`` as the run sends it: the dataset, and an area written out by hand."""
    from cdse_dem.catalogue import dataset_filter

    return (f"{dataset_filter(collection, resolution, model, delivery)} and "
            f"OData.CSC.Intersects(area=geography'SRID=4326;{wkt}')")


# --- the official tiling KML, read independently of cdse_dem.grid ------------------------------

# one Placemark: its name, EPSG, UTM_WKT square and the MultiGeometry with its polygons
_TILE = re.compile(
    r"<Placemark>\s*<name>(\w+)</name>.*?<b>EPSG</b>.*?>\s*(\d+)\s*<.*?UTM_WKT</b>.*?MULTIPOLYGON\(\(\(([^)]*)\)\)\)"
    r".*?<MultiGeometry>(.*?)</MultiGeometry>\s*</Placemark>",
    re.S,
)
_RING = re.compile(r"<LinearRing>\s*<coordinates>(.*?)</coordinates>", re.S)


@dataclass
class KmlTile:
    name: str
    epsg: int
    x_min: float  # of the UTM_WKT square
    y_max: float
    width: float
    height: float
    rings: list  # the Polygons' outer rings: (n, 2) lon/lat arrays


def _numbers(texts: list[str], separators: str):
    """All the numbers of many texts at once (one conversion, not one per vertex)."""
    import numpy as np

    joined = " ".join(texts)
    for separator in separators:
        joined = joined.replace(separator, " ")
    return np.array(joined.split(), dtype=np.float64)


def parse_tiling_kml(text: str) -> dict[str, KmlTile]:
    """Every Placemark of ESA's tiling KML, read with plain regular expressions over its text: the
    reference the library's own reading (cdse_dem.grid) is compared with."""
    import numpy as np

    records = _TILE.findall(text)
    assert len(records) == text.count("<Placemark>")  # no Placemark skipped or run into the next
    squares = _numbers([utm for _, _, utm, _ in records], ",").reshape(len(records), 5, 2)
    rings_of = [_RING.findall(geometry) for _, _, _, geometry in records]
    texts = [ring for rings in rings_of for ring in rings]
    values = _numbers(texts, ",").reshape(-1, 3)[:, :2]  # lon,lat,alt
    ends = np.cumsum([len(ring.split()) for ring in texts])
    rings = np.split(values, ends[:-1])
    x, y = squares[:, :, 0], squares[:, :, 1]
    x_min, y_max = x.min(axis=1).tolist(), y.max(axis=1).tolist()
    width, height = np.ptp(x, axis=1).tolist(), np.ptp(y, axis=1).tolist()
    tiles, next_ring = {}, 0
    for i, ((name, epsg, _, _), count) in enumerate(zip(records, map(len, rings_of), strict=True)):
        tiles[name] = KmlTile(name, int(epsg), x_min[i], y_max[i], width[i], height[i],
                              rings[next_ring : next_ring + count])
        next_ring += count
    return tiles
