"""The DEM as the other Sentinel-2 processors read it, made from the same geocells; a look at each tile.

Sen2Cor reads the geocells by name. sen2like and FORCE read something else
(``../shared/docs/processors.md``), and their users had to make it by hand, or had no DEM at all:

- sen2like opens ``<dem_folder>/<dem_dataset>/Copernicus_DSM_<90|30>m_<tile>.TIF``: the tile's DEM on
  the tile's own grid. Its own (dead) downloader made it in two GDAL warps: the geocells mosaicked
  in EPSG:4326 as Int16 with holes set to 0, then warped with ``cubicspline`` to the tile's UTM
  zone over exactly the tile's 109,800 m square, the resolution as pixel size. The extent must be
  exact: its topographic correction resizes a hillshade of the file to the band's pixel grid
  without reading the georeferencing.
- FORCE (``USE_DEM_DATABASE = TRUE``) opens ``<FILE_DEM>/MGRS_T<tile>.vrt``: any GDAL raster, any
  CRS, ``DEM_NODATA`` where there is none; it warps the DEM to the tile and treats oceans itself.
- The quicklook ``T<tile>_DEM.png`` is for a person: a shaded relief of the tile's DEM on its grid,
  so that one sees at a glance that the terrain is there and is not flat.

All the raster work is GDAL's, declared through rasterio: the mosaic is a VRT (each geocell a
source at its place in one EPSG:4326 grid), which GDAL warps to the tile's grid (``cubicspline``
for sen2like, ``average`` for the quicklook) one band of rows at a time (memory stays bounded, and
a stop is noticed between them). Across the antimeridian the mosaic's longitudes run on past 180°
and its CRS carries GDAL's ``CENTER_LONG`` extension (180): every warp from it, ours and FORCE's
from the VRT file alone, then takes the longitudes of the tile's west in that frame, so the tile
comes out whole and without a seam, as Sen2Cor does it. The hillshade of the quicklook is the
one step in numpy (GDAL's DEM processing is not in rasterio).

rasterio is an optional extra (``pip install 'cdse-copernicus-dem-downloader[processors]'``):
imported only here, only when an output is made, so ``import cdse_dem`` and ``--help`` stay
instant, and without it everything else works; asking for an output without it is refused up
front (:func:`check_request`).

Each output is made in memory (GDAL's ``/vsimem/``) and written with ``fsutil.atomic_write_bytes``:
never a half-written file under its final name. A tile's outputs are made once all its geocells
are in place (``planning.complete``: the GIPP lines' condition), as soon as the last one
lands (:class:`Builder`), and made again only when one of its geocells is newer than they are.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from cdse_dem.catalogue import dataset_name
from cdse_dem.errors import DemError, Interrupted, UsageError
from cdse_dem.fsutil import atomic_write_bytes, remove_stale_temporaries
from cdse_dem.grid import TILE_SIZE, Geocell, utm_tile
from cdse_dem.planning import Plan, Status, TilePlan, complete

log = logging.getLogger(__name__)


INSTALL_HINT = "pip install 'cdse-copernicus-dem-downloader[processors]'"
FORCE_NODATA = -32767  # FORCE's default DEM_NODATA
QUICKLOOK_PIXELS = 1000  # the quicklook's width and height
THREADS = 2  # tiles made at once: GDAL works outside the GIL, and the downloads need little CPU
ROWS_AT_ONCE = 512  # rows warped at a time
# Where no geocell holds a tile's area (open sea) and no file gives the grid: 3 arc-seconds.
_EMPTY_SPACING = 1 / 1200
_WGS84 = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
          'UNIT["degree",0.0174532925199433]')
# GDAL's CENTER_LONG: longitudes taken in [0°, 360°) by every transformation to this CRS
_WGS84_CENTRED_ON_180 = _WGS84 + ',EXTENSION["CENTER_LONG","180"]]'
# GDAL's options for every output: no .aux.xml beside a cell or an output; a cell opened without
# listing its folder (which may hold thousands of geocells)
_GDAL_OPTIONS = {"GDAL_PAM_ENABLED": "NO", "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
_GDAL_TYPES = {"int16": "Int16", "float32": "Float32"}


class Kind(StrEnum):
    """An output; the value is the option's name and the key in the summary JSON's ``outputs``."""

    SEN2LIKE = "sen2like"
    FORCE = "force"
    QUICKLOOK = "quicklook"


@dataclass(frozen=True)
class Outputs:
    """The folders the outputs go to (None: not asked for), and what names the sen2like dataset."""

    sen2like: Path | None = None
    force: Path | None = None
    quicklook: Path | None = None
    resolution: int = 90
    dataset: str = ""  # sen2like's dem_dataset: COP-DEM_GLO-90-DGED__2024_1

    def asked(self) -> dict[Kind, Path]:
        return {kind: getattr(self, kind.value) for kind in Kind if getattr(self, kind.value) is not None}

    def paths(self, tile: str) -> dict[Kind, Path]:
        """Where each asked-for output of ``tile`` goes."""
        names = {Kind.SEN2LIKE: Path(self.dataset) / f"Copernicus_DSM_{self.resolution}m_{tile}.TIF",
                 Kind.FORCE: Path(f"MGRS_T{tile}.vrt"), Kind.QUICKLOOK: Path(f"T{tile}_DEM.png")}
        return {kind: folder / names[kind] for kind, folder in self.asked().items()}

    def folders(self) -> list[Path]:
        """Every folder an output is written into, each once."""
        found = [self.sen2like / self.dataset] if self.sen2like is not None else []
        found += [self.force, self.quicklook]
        return list(dict.fromkeys(f for f in found if f is not None))


def sen2like_dataset(resolution: int, collection: str, delivery: str) -> str:
    """sen2like's ``dem_dataset``: the DGED dataset and, in CCM, its delivery (``COP-DEM_GLO-90-DGED__2024_1``).

    The COP-DEM collection has one delivery, which it does not name: its dataset alone.
    """
    name = dataset_name(resolution, "DGED")
    return f"{name}__{delivery}" if collection == "CCM" else name


def check_request(outputs: Outputs, model: str) -> None:
    """Before any work: sen2like's file is made of the DGED GeoTIFFs, and rasterio must be there."""
    if outputs.sen2like is not None and model != "DGED":
        raise UsageError("--sen2like with --m DTED: sen2like's DEM is made from the DGED GeoTIFFs (--m DGED)")
    # found, not imported: its import (0.15 s) is made by the first tile's outputs, while the downloads run
    if importlib.util.find_spec("rasterio") is None:
        raise UsageError(f"--{', --'.join(outputs.asked())}: needs rasterio (GDAL), which is not installed: "
                         f"{INSTALL_HINT}")


def sen2like_lines(outputs: Outputs) -> list[str]:
    """The three lines of sen2like's ``config.ini`` (section ``[DEMRepository]``) for this folder."""
    return [f"dem_folder = {os.path.abspath(outputs.sen2like)}", f"dem_dataset = {outputs.dataset}",
            f"src_dem_resolution = {outputs.resolution}"]


def force_lines(outputs: Outputs) -> list[str]:
    """The three parameters of FORCE's Level-2 parameter file for this folder."""
    return [f"FILE_DEM = {os.path.abspath(outputs.force)}", "USE_DEM_DATABASE = TRUE", f"DEM_NODATA = {FORCE_NODATA}"]


# --- the mosaic ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Source:
    """A geocell's file as GDAL reads it: where its pixels lie (west, north: outer edges), and its voids."""

    path: Path
    west: float
    north: float
    dx: float
    dy: float
    width: int
    height: int
    nodata: float | None


def _source(path: Path) -> _Source:
    import rasterio

    with rasterio.open(path) as dataset:
        t = dataset.transform
        if dataset.crs is None or t.b or t.d or t.a <= 0 or t.e >= 0:
            raise DemError(f"{path}: not a georeferenced lon/lat raster")
        return _Source(path, t.c, t.f, t.a, -t.e, dataset.width, dataset.height, dataset.nodata)


def _sources(cells: Sequence[tuple[Geocell, Path | None]]) -> list[_Source]:
    """The files of ``cells`` (a sea cell has none), each opened once: a tile's outputs share them."""
    with _rasterio().Env(**_GDAL_OPTIONS):
        return [_source(path) for _, path in cells if path is not None]


def mosaic_vrt(cells: Sequence[tuple[Geocell, Path | None]], *, dtype: str, nodata: float | None,
               beside: bool = False, sources: Sequence[_Source] | None = None) -> str:
    """A GDAL VRT that puts the geocells' files side by side in one EPSG:4326 grid: GDAL's mosaic.

    ``cells``: each geocell of the tile with its file, or None where there is no DEM (open sea).
    The grid covers every cell (a sea cell reads ``nodata``, or 0 with ``nodata`` None) and is the
    finest file's, so that the files on it are placed pixel for pixel; a file of another spacing
    (columns thin out towards the poles) is resampled by GDAL (nearest). ``dtype``: the band's type
    (``int16``: GDAL rounds the heights). ``beside``: the VRT is in the files' folder (FORCE's VRT in
    the DEM folder itself), which names them relative to it; otherwise by absolute paths.
    ``sources``: the files of ``cells`` as :func:`_sources` read them, when already read.
    """

    across = bool(cells) and max(c.lon for c, _ in cells) - min(c.lon for c, _ in cells) > 180

    def east_of(lon: float) -> float:  # across ±180°: longitudes in [0°, 360°)
        return lon + 360 if across and lon < 0 else lon

    if sources is None:
        sources = _sources(cells)
    boxes = [(east_of(c.lon), c.lat, east_of(c.lon) + 1, c.lat + 1) for c, _ in cells]
    boxes += [(east_of(s.west), s.north - s.dy * s.height, east_of(s.west) + s.dx * s.width, s.north) for s in sources]
    if not boxes:
        raise ValueError("a mosaic needs at least one geocell")
    finest = min(sources, key=lambda s: (s.dx, s.dy), default=None)
    if finest is not None:
        dx, dy, ref_west, ref_north = finest.dx, finest.dy, east_of(finest.west), finest.north
    else:
        dx = dy = _EMPTY_SPACING
        ref_west, ref_north = min(b[0] for b in boxes), max(b[3] for b in boxes)
    # the grid of the finest file, extended by whole pixels over every box
    west = ref_west - math.ceil((ref_west - min(b[0] for b in boxes)) / dx - 1e-6) * dx
    north = ref_north + math.ceil((max(b[3] for b in boxes) - ref_north) / dy - 1e-6) * dy
    width = math.ceil((max(b[2] for b in boxes) - west) / dx - 1e-6)
    height = math.ceil((north - min(b[1] for b in boxes)) / dy - 1e-6)

    root = ElementTree.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    # no dataAxisToSRSAxisMapping: GDAL then takes x as longitude, whatever the CRS's axis order
    ElementTree.SubElement(root, "SRS").text = _WGS84_CENTRED_ON_180 if across else "EPSG:4326"
    ElementTree.SubElement(root, "GeoTransform").text = f"{west!r}, {dx!r}, 0, {north!r}, 0, {-dy!r}"
    band = ElementTree.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES[dtype], band="1")
    if nodata is not None:
        ElementTree.SubElement(band, "NoDataValue").text = f"{nodata:g}"
    for source in sources:
        element = ElementTree.SubElement(band, "ComplexSource")
        name = ElementTree.SubElement(element, "SourceFilename", relativeToVRT="1" if beside else "0")
        name.text = source.path.name if beside else os.path.abspath(source.path)
        ElementTree.SubElement(element, "SourceBand").text = "1"
        ElementTree.SubElement(element, "SrcRect", xOff="0", yOff="0", xSize=str(source.width),
                               ySize=str(source.height))
        ElementTree.SubElement(element, "DstRect", xOff=_pixels((east_of(source.west) - west) / dx),
                               yOff=_pixels((north - source.north) / dy), xSize=_pixels(source.width * source.dx / dx),
                               ySize=_pixels(source.height * source.dy / dy))
        if source.nodata is not None:  # a void of the file stays the band's nodata (or 0)
            ElementTree.SubElement(element, "NODATA").text = f"{source.nodata:g}"
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def _pixels(value: float) -> str:
    """A VRT rectangle's offset or size: whole when it is one (arithmetic in degrees leaves 1e-9)."""
    whole = round(value)
    return str(whole) if abs(value - whole) < 1e-6 else f"{value:.6f}"


# --- the three outputs ---------------------------------------------------------------------------

def _rasterio():
    import rasterio
    import rasterio.vrt

    return rasterio


def _tile_grid(tile: str, pixel: float):
    """The tile's UTM CRS, and the transform and size of a grid of ``pixel`` metres over its exact square."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    square = utm_tile(tile)
    size = round(TILE_SIZE / pixel)
    return CRS.from_epsg(square.epsg), Affine(pixel, 0, square.x_min, 0, -pixel, square.y_max), size


def _warp(mosaic: str, tile: str, pixel: float, resampling, dtype: str, stop, write) -> None:
    """Warp the mosaic onto the tile's grid, ``ROWS_AT_ONCE`` rows at a time, each handed to ``write(window, rows)``."""
    rasterio = _rasterio()
    from rasterio.windows import Window

    crs, transform, size = _tile_grid(tile, pixel)
    with rasterio.open(mosaic) as src, rasterio.vrt.WarpedVRT(
            src, crs=crs, transform=transform, width=size, height=size, resampling=resampling, dtype=dtype) as warped:
        for row in range(0, size, ROWS_AT_ONCE):
            if stop is not None and stop.is_set():
                raise Interrupted("stopped while making the outputs")
            window = Window(0, row, size, min(ROWS_AT_ONCE, size - row))
            write(window, warped.read(1, window=window))


def sen2like_bytes(cells: Sequence[tuple[Geocell, Path | None]], tile: str, resolution: int, stop=None, *,
                   sources: Sequence[_Source] | None = None) -> bytes:
    """sen2like's GeoTIFF of the tile: Int16 on its UTM grid over its exact square, cubic spline from
    the Int16 mosaic, sea and holes 0 (as its own downloader made it). ``sources``: as :func:`mosaic_vrt`'s."""
    rasterio = _rasterio()
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    crs, transform, size = _tile_grid(tile, resolution)
    # DEFLATE at its fastest level: a tenth of the time of the default, files 8 % larger
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "int16", "crs": crs,
               "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               "predictor": 2, "zlevel": 1}
    with rasterio.Env(**_GDAL_OPTIONS), MemoryFile() as memory:
        with memory.open(**profile) as dst:
            _warp(mosaic_vrt(cells, dtype="int16", nodata=None, sources=sources), tile, resolution,
                  Resampling.cubic_spline, "int16", stop, lambda window, rows: dst.write(rows, 1, window=window))
        return bytes(memory.getbuffer())


def quicklook_bytes(cells: Sequence[tuple[Geocell, Path | None]], tile: str, stop=None,
                    sen2like: bytes | None = None, *, sources: Sequence[_Source] | None = None) -> bytes:
    """The PNG of a shaded relief of the tile's DEM on its grid, ``QUICKLOOK_PIXELS`` wide.

    The heights are sen2like's (holes and sea 0, so both get the sea's colour): averaged down from
    the tile's ``sen2like`` file when it was just made, else warped from the geocells to this grid
    (``sources``: as :func:`mosaic_vrt`'s).
    """
    rasterio = _rasterio()
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    shape = (QUICKLOOK_PIXELS, QUICKLOOK_PIXELS)
    with rasterio.Env(**_GDAL_OPTIONS):
        if sen2like is not None:
            with MemoryFile(sen2like) as memory, memory.open() as dataset:
                heights = dataset.read(1, out_shape=shape, resampling=Resampling.average)
        else:
            heights = np.empty(shape, dtype=np.int16)

            def keep(window, rows):
                heights[window.row_off:window.row_off + window.height] = rows

            _warp(mosaic_vrt(cells, dtype="int16", nodata=None, sources=sources), tile, TILE_SIZE / QUICKLOOK_PIXELS,
                  Resampling.average, "int16", stop, keep)
        rgb = relief(heights, heights == 0, TILE_SIZE / QUICKLOOK_PIXELS)
        crs, transform, _ = _tile_grid(tile, TILE_SIZE / QUICKLOOK_PIXELS)
        with MemoryFile() as memory:
            # the grid given only to say it is one: a PNG keeps no georeference (no .aux.xml is written)
            with memory.open(driver="PNG", width=QUICKLOOK_PIXELS, height=QUICKLOOK_PIXELS, count=3, dtype="uint8",
                             crs=crs, transform=transform, zlevel=1) as png:  # a third of the default's time
                png.write(rgb)
            return bytes(memory.getbuffer())


SEA_COLOUR = (166, 200, 228)  # sea and missing cells: one flat colour
# hypsometric tint: height (m) -> colour, from lowland green to rock and snow
_TINT = ((0, (88, 150, 82)), (300, (160, 186, 106)), (800, (222, 206, 142)), (1600, (176, 132, 92)),
         (2800, (150, 140, 132)), (4500, (250, 250, 250)))
_SUN_AZIMUTH, _SUN_ALTITUDE, _EXAGGERATION = 315.0, 45.0, 2.0  # the usual hillshade's sun: north-west, 45°


def relief(heights: np.ndarray, sea: np.ndarray, pixel: float) -> np.ndarray:
    """A shaded relief as RGB bytes (3, rows, cols): the hypsometric tint of each height, lit by the
    sun as the cosine between the surface's normal and the sun (slopes from central differences);
    ``sea`` in one flat colour."""
    ground = np.where(sea, np.float32(0), heights.astype(np.float32))
    down, east = np.gradient(ground * np.float32(_EXAGGERATION / pixel))  # rows run south: down = -dz/dnorth
    azimuth, altitude = math.radians(_SUN_AZIMUTH), math.radians(_SUN_ALTITUDE)
    # normal (-dz/deast, -dz/dnorth, 1); sun (sin az cos alt, cos az cos alt, sin alt), az clockwise from north
    lit = (math.sin(altitude) - east * np.float32(math.sin(azimuth) * math.cos(altitude))
           + down * np.float32(math.cos(azimuth) * math.cos(altitude)))
    lit /= np.sqrt(1 + east * east + down * down)
    light = np.float32(0.35) + np.float32(0.8) * np.clip(lit, 0, 1)
    levels = np.array([h for h, _ in _TINT], dtype=np.float32)
    rgb = np.empty((3, *heights.shape), dtype=np.uint8)
    for channel in range(3):
        tint = np.interp(ground, levels, [c[channel] for _, c in _TINT]).astype(np.float32)
        rgb[channel] = np.where(sea, SEA_COLOUR[channel], np.clip(tint * light, 0, 255))
    return rgb


def force_vrt(cells: Sequence[tuple[Geocell, Path | None]], vrt_path: Path, dem_folder: Path, *,
              sources: Sequence[_Source] | None = None) -> str:
    """FORCE's VRT of the tile: the geocells as they are (Float32 heights), ``FORCE_NODATA`` where no
    cell exists; paths relative when the VRT is in the DEM folder itself, else absolute. ``sources``:
    as :func:`mosaic_vrt`'s."""
    same = vrt_path.parent.is_dir() and dem_folder.is_dir() and os.path.samefile(vrt_path.parent, dem_folder)
    return mosaic_vrt(cells, dtype="float32", nodata=FORCE_NODATA, beside=same, sources=sources)


# --- made as the geocells land ---------------------------------------------------------------------

WRITTEN, CURRENT, FAILED = "written", "up to date", "failed"


@dataclass
class TileOutputs:
    """What became of one tile's outputs: each asked-for kind ``written``, ``up to date`` or ``failed``."""

    tile: str
    paths: dict[Kind, Path]
    states: dict[Kind, str] = field(default_factory=dict)
    errors: dict[Kind, str] = field(default_factory=dict)

    def made(self) -> dict[str, str | None]:
        """The summary JSON's ``outputs``: each kind's path, None where it was not made."""
        return {kind.value: str(os.path.abspath(path)) if self.states.get(kind) in (WRITTEN, CURRENT) else None
                for kind, path in self.paths.items()}


class Builder:
    """Makes each tile's outputs once its geocells are all in place, a few tiles at once.

    ``cell_landed`` (told by the downloads, from their threads) starts a tile as soon as its last
    geocell is in the folder; ``offer_complete`` starts every tile already complete (after the
    search: all present or sea; at the end: whatever is left). ``finish`` waits for them.
    """

    def __init__(self, outputs: Outputs, plan: Plan, dem_folder: Path, stop: threading.Event | None = None):
        self.outputs, self.plan, self.dem_folder = outputs, plan, dem_folder
        self.stop = stop if stop is not None else threading.Event()
        self._tiles_of: dict[Geocell, list[TilePlan]] = {}
        for tile in plan.tiles:
            for cell in tile.geocells:
                self._tiles_of.setdefault(cell, []).append(tile)
        self._lock = threading.Lock()
        self._started: set[str] = set()
        self._futures: list[Future] = []
        self._pool: ThreadPoolExecutor | None = None
        self.done: dict[str, TileOutputs] = {}
        for folder in outputs.folders():
            if folder.is_dir():
                remove_stale_temporaries(folder)

    def cell_landed(self, geocell: Geocell) -> None:
        for tile in self._tiles_of.get(geocell, ()):
            self._offer(tile)

    def offer_complete(self) -> None:
        for tile in self.plan.tiles:
            self._offer(tile)

    def _offer(self, tile: TilePlan) -> None:
        if self.stop.is_set() or not complete(self.plan.cells[cell].status for cell in tile.geocells):
            return
        with self._lock:
            if tile.tile in self._started:
                return
            self._started.add(tile.tile)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="outputs")
            self._futures.append(self._pool.submit(self._make, tile))

    def finish(self) -> dict[str, TileOutputs]:
        """Wait for every tile started (once stopped: for those under way, which stop within a band of rows)."""
        with self._lock:
            futures = list(self._futures)
        wait(futures)
        for future in futures:
            if not future.cancelled():
                future.result()  # a bug surfaces here, not silently
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        return self.done

    def abort(self) -> None:
        """Start no more tiles; those under way stop at their next band of rows."""
        self.stop.set()
        with self._lock:
            for future in self._futures:
                future.cancel()

    def _make(self, tile: TilePlan) -> None:
        cells = [(cell, None if self.plan.cells[cell].status == Status.SEA
                  else self.dem_folder / self.plan.cells[cell].file_name) for cell in tile.geocells]
        result = TileOutputs(tile.tile, self.outputs.paths(tile.tile))
        newest = max((_mtime(path) or 0 for _, path in cells if path is not None), default=0)
        # the geocells' files, opened by the first output that reads them (none when all are up to date), not by each
        sources = cache(lambda: _sources(cells))
        made: dict[Kind, bytes] = {}
        for kind, path in result.paths.items():  # sen2like first: the quicklook is made from it
            try:
                data = made[kind] = self._output(kind, cells, tile.tile, path, newest, made.get(Kind.SEN2LIKE),
                                                 sources)
                if data is None:
                    result.states[kind] = CURRENT
                    log.debug("%s output of %s is up to date: %s", kind, tile.tile, path)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, data)
                result.states[kind] = WRITTEN
                log.info("%s output of %s written: %s", kind, tile.tile, path)
            except Interrupted:
                return
            except Exception as exc:  # GDAL's RasterioError, OSError, a full disk: this output only
                message = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
                result.states[kind], result.errors[kind] = FAILED, message
                log.error("%s: cannot make the %s output of %s (%s)", path, kind, tile.tile, message)
        with self._lock:
            self.done[tile.tile] = result

    def _output(self, kind: Kind, cells, tile: str, path: Path, newest: int, sen2like: bytes | None,
                sources: Callable[[], list[_Source]]) -> bytes | None:
        """The output's bytes; None when the file there is already what they would be: not older than
        any of its geocells (and, for the VRT, the same text: it also names the cells' files).
        ``sources()``: the geocells' files, read once for all of the tile's outputs."""
        made = _mtime(path)
        if kind == Kind.FORCE:
            data = force_vrt(cells, path, self.dem_folder, sources=sources()).encode()
            return None if made is not None and made >= newest and path.read_bytes() == data else data
        if made is not None and made >= newest:
            return None
        if kind == Kind.SEN2LIKE:
            return sen2like_bytes(cells, tile, self.outputs.resolution, self.stop, sources=sources())
        return quicklook_bytes(cells, tile, self.stop, sen2like, sources=sources() if sen2like is None else None)


def _mtime(path: Path) -> int | None:
    """The modification time of a regular file at ``path`` (ns); None when there is none."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_mtime_ns if stat.S_ISREG(st.st_mode) else None


def log_configuration(outputs: Outputs, done: dict[str, TileOutputs]) -> None:
    """The lines sen2like and FORCE need, as the GIPP lines are given: once a tile's output of that kind is there."""
    there = {kind for result in done.values() for kind, state in result.states.items() if state in (WRITTEN, CURRENT)}
    if Kind.SEN2LIKE in there:
        log.info("For sen2like, set these three lines in the [DEMRepository] section of its config.ini:")
        for line in sen2like_lines(outputs):
            log.info("    %s", line)
    if Kind.FORCE in there:
        log.info("For FORCE, set these three parameters in its Level-2 parameter file:")
        for line in force_lines(outputs):
            log.info("    %s", line)
    if Kind.QUICKLOOK in there:
        log.info("Quicklooks of the tiles' DEM in %s", os.path.abspath(outputs.quicklook))
