"""The DEM folder Sen2Cor reads: whole DEMs, the zip's DEM layer, and the folder's records.

Is a DEM file on disk a whole Copernicus DEM of the cell its name says?

Sen2Cor finds cells by file name only: a truncated GeoTIFF, an HTML error page or another
cell's raster under the right name is used as if it were the DEM, or fails the whole tile
to flat terrain. So "present" must mean "whole", checked from the file itself, without a
checksum (files extracted long ago, or single files from the Nodes API, have none):

- GeoTIFF (DGED): a TIFF that tifffile parses, one band, the raster size of a 1°×1° cell at
  that resolution and latitude, every strip or tile inside the file, georeferenced on the
  named cell (tie point at its north-west corner, pixel scale spanning one degree);
- DTED (``.dt1``/``.dt2``): the UHL, DSI and ACC headers at their offsets, the UHL origin on
  the named cell, the record count and length against the file size, every record's
  sentinel and checksum.

The checks read headers and offsets, not pixels (except DTED checksums, which are cheap),
so a folder of hundreds of cells is checked in well under a second per cell.

Taking the one DEM layer out of a product zip, safely.

Sen2Cor wants the DEM layer only (``*_DEM.tif``, or ``*_DEM.dt1`` / ``*_DEM.dt2`` for DTED),
flat in the output folder under its original base name. The member is found by its suffix,
not by a fixed path (CCM zips put a random suffix on the root folder), and never from
``PREVIEW/`` (quick looks with similar names). Nothing from a path inside the zip reaches the
file system: only a checked base name does, so a crafted zip cannot write outside the
output folder. The layer is streamed to a temporary name, its CRC and size are checked
(zipfile checks the CRC when the member has been read to its end), it is fsynced, and only
then renamed into place: a file under its final name is always whole.

The name → product Id record of an output folder (``dict_filename_dem_id.json``).

The format is the reference tool's: one flat JSON object ``{"<DEM file name>": "<product Id>"}``,
so folders filled by either tool stay readable by both. Unlike the reference tool there is one
file per output folder (what it describes is that folder), it is rewritten atomically after
every geocell (a crash or Ctrl-C loses nothing already on disk), and a file we cannot read is
renamed aside with a warning rather than silently replaced by an empty one.

A geocell counts as complete only when it is recorded AND its file is present: extraction
renames a file into place only when whole, and the record is written after that rename.

Several runs may fill one folder at once: every change is a read-merge-write of the file on
disk under an exclusive OS lock (``.dict_filename_dem_id.json.cdse-lock``), adding or dropping
only the entries this change is about, so no run's entries are lost whatever the interleaving.

The open-sea geocells of an output folder (``open_sea_geocells.json``), so a re-run skips them.

Open sea has no product, so ``dict_filename_dem_id.json`` (``{file name: product Id}``, a shape
users rely on) cannot say a cell was already looked up. This small record beside it can:
``{"<collection> <dataset or product type>": ["N00_W030", ...]}``, keyed by what was searched,
since another delivery or resolution is another set of cells. Only cells a completed search
covered and found empty are written. A record that cannot be read is ignored (the cells are
searched again): it only ever saves searches, never decides what to download.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
import tifffile

from cdse_dem import fsutil
from cdse_dem.errors import DemError, UsageError
from cdse_dem.fsutil import (
    NotRegular,
    atomic_write_json,
    atomic_writer,
    kind_of,
    parse_json,
    read_regular,
    set_aside,
)
from cdse_dem.grid import Geocell, geocell_of_name, parse_grid_id
from cdse_dem.settings import JSON_NAME

log = logging.getLogger(__name__)


# Columns of a cell by the latitude of its pole-ward edge (Copernicus DEM product handbook;
# cdse-api.md section 3); rows are constant: 1 arc-second (GLO-30) or 3 (GLO-90), edge to edge.
_COLUMNS = {
    30: ((50, 3601), (60, 2401), (70, 1801), (80, 1201), (85, 721), (90, 361)),
    90: ((50, 1201), (60, 801), (70, 601), (80, 401), (85, 241), (90, 121)),
}
_ROWS = {30: 3601, 90: 1201}
DTED_HEADER_BYTES = 80 + 648 + 2700  # UHL, DSI, ACC: where the data records start
_DTED_RECORD_OVERHEAD = 8 + 4  # sentinel, block count, lon/lat counts; checksum
_DTED_SENTINEL = 0xAA
_DTED_LEVEL = {90: ".dt1", 30: ".dt2"}
_GEO_TOLERANCE = 1.0  # pixels: pixel-is-point or -area origins differ by half a pixel


def expected_shape(cell: Geocell, resolution: int) -> tuple[int, int]:
    """(rows, columns) of the cell's DEM raster: columns shrink towards the poles."""
    edge = max(abs(cell.lat), abs(cell.lat + 1))
    columns = next(count for limit, count in _COLUMNS[resolution] if edge <= limit)
    return _ROWS[resolution], columns


def dem_problem(path: Path, *, resolution: int | None = None, cell: Geocell | None = None,
                suffix: str | None = None) -> str | None:
    """None when ``path`` is a whole DEM of its cell; otherwise why not, in a few words.

    The cell and resolution come from the file name unless given; the format from its
    suffix (``_DEM.tif`` GeoTIFF, ``_DEM.dt1``/``.dt2`` DTED) unless ``suffix`` is given
    (a file still under its temporary name, checked before it is renamed into place).
    """
    path = Path(path)
    named = geocell_of_name(path.name)
    if cell is None or resolution is None:
        if named is None:
            return "not named like a Copernicus DEM cell"
        cell = cell or named[0]
        resolution = resolution or named[1]
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not path.is_file():
        return "not a regular file"
    if size == 0:
        return "empty"
    suffix = (suffix or path.suffix).lower()
    try:
        if suffix in (".tif", ".tiff"):
            return _geotiff_problem(path, size, cell, resolution)
        if suffix in (".dt1", ".dt2"):
            if suffix != _DTED_LEVEL[resolution]:
                return f"a {suffix} file at {resolution} m (expected {_DTED_LEVEL[resolution]})"
            return _dted_problem(path, size, cell, resolution)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return f"not a DEM file type ({suffix or 'no suffix'})"


class _QuietWhileChecking(logging.Filter):
    """tifffile's own complaints about the file being checked (a tag it cannot read, a count that
    does not match) are left out: the check says in one line what is wrong with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_checking, "active", False)


_checking = threading.local()
logging.getLogger("tifffile").addFilter(_QuietWhileChecking())


def _geotiff_problem(path: Path, size: int, cell: Geocell, resolution: int) -> str | None:
    _checking.active = True
    try:
        return _read_geotiff_problem(path, size, cell, resolution)
    finally:
        _checking.active = False


def _read_geotiff_problem(path: Path, size: int, cell: Geocell, resolution: int) -> str | None:
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                return "a TIFF without an image"
            page = tif.pages.first
            rows, cols = expected_shape(cell, resolution)
            if (page.imagelength, page.imagewidth) != (rows, cols):
                return (f"a {page.imagelength}×{page.imagewidth} raster "
                        f"(a {cell.grid_id} cell at {resolution} m is {rows}×{cols})")
            if page.samplesperpixel != 1:
                return f"{page.samplesperpixel} bands, not one"
            offsets, counts = page.dataoffsets, page.databytecounts
            if not offsets or len(offsets) != len(counts):
                return "a TIFF without image data"
            if any(o <= 0 or c <= 0 or o + c > size for o, c in zip(offsets, counts, strict=True)):
                return f"truncated ({size:,} bytes: image data reaches past the end)"
            if page.compression == 1:
                expected = rows * cols * page.bitspersample // 8
                if sum(counts) != expected:
                    return f"image data of {sum(counts):,} bytes (a whole raster is {expected:,})"
            return _georeference_problem(page.tags, cell, rows, cols)
    except Exception as exc:
        # The file's bytes decide what tifffile meets (a tag of strings where numbers belong, a
        # count of one, an offset past any size): every failure to read it means the same, not
        # a whole DEM, so that the file is fetched again or reported, never a traceback.
        return f"not a readable GeoTIFF ({type(exc).__name__}: {_first_line(exc)})"


def _georeference_problem(tags, cell: Geocell, rows: int, cols: int) -> str | None:
    scale_tag, tie_tag = tags.get("ModelPixelScaleTag"), tags.get("ModelTiepointTag")
    if scale_tag is None or tie_tag is None:
        return "a TIFF without georeferencing (not a GeoTIFF)"
    scale, tie = _finite_numbers(scale_tag.value, 2), _finite_numbers(tie_tag.value, 6)
    if scale is None or tie is None:
        return "a GeoTIFF with a malformed georeference (too few values, or not finite numbers)"
    dx, dy = scale[0], scale[1]
    if not (dx > 0 and dy > 0):
        return "a GeoTIFF with a malformed pixel scale"
    i, j, x, y = tie[0], tie[1], tie[3], tie[4]
    west, north = x - i * dx, y + j * dy  # the raster's first sample, in degrees
    if not (math.isfinite(west) and math.isfinite(north)):
        return "a GeoTIFF with a malformed georeference (its corner is not a finite number)"
    if abs(west - cell.lon) > _GEO_TOLERANCE * dx or abs(north - (cell.lat + 1)) > _GEO_TOLERANCE * dy:
        return f"georeferenced at {north:.4f}°, {west:.4f}°, not on {cell.grid_id}"
    span_x, span_y = dx * cols, dy * rows  # one degree, give or take the edge sample
    if not (abs(span_x - 1) <= 2 * dx and abs(span_y - 1) <= 2 * dy):
        return f"a raster spanning {span_y:.4f}°×{span_x:.4f}°, not one degree"
    return None


def _finite_numbers(value, count: int) -> list[float] | None:
    """The first ``count`` values of a tag as finite floats; None when there are fewer, or any is not
    a finite number (NaN and infinity compare false with everything: a check would pass them)."""
    if isinstance(value, (str, bytes)):
        return None
    values = list(value) if isinstance(value, (tuple, list, np.ndarray)) else [value]
    if len(values) < count:
        return None
    numbers = []
    for item in values[:count]:
        if isinstance(item, (str, bytes)):
            return None
        try:
            number = float(item)
        except (TypeError, ValueError, OverflowError):
            return None
        if not math.isfinite(number):
            return None
        numbers.append(number)
    return numbers


def _dted_problem(path: Path, size: int, cell: Geocell, resolution: int) -> str | None:

    rows, cols = expected_shape(cell, resolution)
    record = _DTED_RECORD_OVERHEAD + 2 * rows
    expected = DTED_HEADER_BYTES + cols * record
    with open(path, "rb") as handle:
        head = handle.read(DTED_HEADER_BYTES)
        if len(head) < DTED_HEADER_BYTES or head[:4] != b"UHL1" or head[80:83] != b"DSI" or head[728:731] != b"ACC":
            return "not a DTED file (UHL/DSI/ACC headers missing)"
        origin = head[4:20].decode("ascii", "replace")
        if origin != _dted_origin(cell):
            return f"a DTED file for {origin!r}, not {cell.grid_id}"
        try:
            lines, points = dted_counts(head)
        except ValueError:
            return "a DTED file with a malformed UHL"
        if (lines, points) != (cols, rows):
            return f"a DTED of {lines} lines × {points} points (a {cell.grid_id} cell is {cols} × {rows})"
        if size != expected:
            return f"{size:,} bytes (a whole {cell.grid_id} DTED is {expected:,})"
        body = np.frombuffer(handle.read(), dtype=np.uint8)
    if body.size != cols * record:
        return "truncated while being read"
    records = body.reshape(cols, record)
    if not np.all(records[:, 0] == _DTED_SENTINEL):
        return "a DTED with a damaged data record (no sentinel)"
    sums = records[:, : record - 4].sum(axis=1, dtype=np.uint64) & 0xFFFFFFFF
    stored = records[:, record - 4:].copy().view(">u4").reshape(cols).astype(np.uint64)
    bad = np.flatnonzero(sums != stored)
    if bad.size:
        return f"a DTED whose record {int(bad[0])} fails its checksum"
    return None


def dted_counts(head: bytes) -> tuple[int, int]:
    """(longitude lines, latitude points) of a DTED file, from its UHL (``head``: the file's first
    bytes); ValueError when the fields are not numbers. What the record count and length follow from."""
    return int(head[47:51]), int(head[51:55])


def _dted_origin(cell: Geocell) -> str:
    """The UHL's origin field, ``DDDMMSSH`` longitude then latitude, of the cell's south-west corner."""
    lon = f"{abs(cell.lon):03d}0000{'E' if cell.lon >= 0 else 'W'}"
    lat = f"{abs(cell.lat):03d}0000{'N' if cell.lat >= 0 else 'S'}"
    return lon + lat


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]


DEM_SUFFIXES = ("_DEM.tif", "_DEM.dt1", "_DEM.dt2")
_CHUNK = 1024 * 1024

# The largest a DEM layer can be, by resolution. The widest cell (at the equator) is 3601 × 3601
# samples at 30 m and 1201 × 1201 at 90 m; stored uncompressed as float32 that is 51.9 MB and
# 5.8 MB (DTED, 16-bit with record overhead, is about half), plus a few kB of tags. A member
# declaring more is not a DEM (a zip bomb, or a wrong product) and is refused before a byte of
# it is written: about 15 % headroom over the largest real raster.
MAX_DEM_BYTES = {30: 60_000_000, 90: 7_000_000}
# The largest a product zip can be, by resolution: the DEM and its height-error layer (each at
# most MAX_DEM_BYTES), three one-byte masks, quick looks and a few kB of XML, uncompressed, is
# about 150 MB at 30 m and 17 MB at 90 m (a recorded GLO-90 zip: 12.7 MiB); twice that is refused
# before a byte is written, as a zip announced or running past it.
MAX_PRODUCT_BYTES = {30: 300_000_000, 90: 40_000_000}


class ExtractError(DemError):
    """A product zip does not hold exactly one usable DEM layer, or it is damaged."""


def _parts(member_name: str) -> list[str]:
    # Zips written on Windows may use backslashes: treat them as separators too.
    return [p for p in member_name.replace("\\", "/").split("/") if p not in ("", ".")]


def is_dem_member(member_name: str) -> bool:
    """Whether a zip member is a DEM layer: the suffix says so and it is not a quick look."""
    parts = _parts(member_name)
    if not parts or member_name.endswith(("/", "\\")):
        return False
    if any(p.upper() == "PREVIEW" for p in parts[:-1]):
        return False
    return parts[-1].lower().endswith(tuple(s.lower() for s in DEM_SUFFIXES))


def _is_unsafe(member_name: str) -> bool:
    name = member_name.replace("\\", "/")
    return (
        name.startswith("/")
        or PurePosixPath(name).is_absolute()
        or (len(name) > 1 and name[1] == ":")  # a Windows drive: C:/...
        or ".." in _parts(member_name)
        or "\x00" in name
    )


def find_dem_member(zf: zipfile.ZipFile, zip_path: Path) -> zipfile.ZipInfo:
    """The single DEM layer member of ``zf``; zero, several, or an unsafe name is an error."""
    candidates = [info for info in zf.infolist() if not info.is_dir() and is_dem_member(info.filename)]
    if not candidates:
        raise ExtractError(f"no DEM layer (*_DEM.tif, *_DEM.dt1, *_DEM.dt2) found in {zip_path}")
    if len(candidates) > 1:
        names = ", ".join(info.filename for info in candidates)
        raise ExtractError(f"several DEM layers found in {zip_path}: {names}")
    info = candidates[0]
    if _is_unsafe(info.filename):
        raise ExtractError(f"refusing the unsafe member path {info.filename!r} in {zip_path}")
    return info


def dem_base_name(info: zipfile.ZipInfo) -> str:
    """The base name of a DEM member (the file name Sen2Cor looks for), whatever separators the zip uses."""
    return _parts(info.filename)[-1]


def check_member(info: zipfile.ZipInfo, base_name: str, zip_path: Path) -> None:
    """Refuse a DEM member that is not a regular file (a symlink entry would become a file
    holding the link's target path) or that inflates past what a DEM of its resolution can be."""
    mode = info.external_attr >> 16  # the Unix st_mode, when the zip was made on Unix
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        raise ExtractError(f"refusing {info.filename} in {zip_path}: {kind_of(mode)}, not a regular file")
    named = geocell_of_name(base_name)
    limit = MAX_DEM_BYTES[named[1]] if named is not None else max(MAX_DEM_BYTES.values())
    if info.file_size > limit:
        resolution = f"at {named[1]} m " if named is not None else ""
        raise ExtractError(f"refusing {info.filename} in {zip_path}: it inflates to {info.file_size:,} bytes, "
                           f"more than a DEM {resolution}can be ({limit:,})")


def extract_dem(zip_path: Path, out_dir: Path, expected_name: str | None = None) -> Path:
    """Write the DEM layer of ``zip_path`` into ``out_dir`` under its base name; return that path.

    ``expected_name`` (e.g. ``Copernicus_DSM_30_N50_00_E007_00_DEM.tif``), when given, must be
    the layer's base name: a product for another geocell or format is an error, not a file.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ExtractError(f"{zip_path} is not a readable zip file ({exc})") from exc
    except OSError as exc:
        raise ExtractError(f"cannot open {zip_path}: {exc.strerror or exc}") from exc
    with zf:
        info = find_dem_member(zf, zip_path)
        base_name = dem_base_name(info)
        if expected_name is not None and base_name != expected_name:
            raise ExtractError(f"{zip_path} holds {base_name}, not the expected {expected_name}")
        check_member(info, base_name, zip_path)
        final = out_dir / base_name
        try:
            with atomic_writer(final) as handle, zf.open(info) as src:
                written = 0
                while True:
                    chunk = src.read(_CHUNK)  # the CRC is checked when the end is reached
                    if not chunk:
                        break
                    handle.write(chunk)
                    written += len(chunk)
                if written != info.file_size:
                    raise ExtractError(
                        f"{info.filename} in {zip_path}: {written} bytes read, {info.file_size} expected"
                    )
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ExtractError(f"{info.filename} in {zip_path} is damaged ({exc})") from exc
        except (NotImplementedError, RuntimeError) as exc:  # unsupported compression, encryption
            raise ExtractError(f"cannot extract {info.filename} from {zip_path} ({exc})") from exc
        except OSError as exc:  # a full disk is DiskFull already, a DemError that passes through
            raise ExtractError(f"cannot write {final}: {exc.strerror or exc}") from exc
    log.debug("Extracted %s from %s", base_name, zip_path)
    return final


class CacheError(DemError):
    """The name → id JSON can neither be read nor set aside."""


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in ("/", "\\", "\x00"))


class NameIdCache:
    """The ``{file name: product Id}`` record of one output folder; safe to share between threads."""

    def __init__(self, out_dir: Path, entries: dict[str, str] | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / JSON_NAME
        self._entries: dict[str, str] = dict(entries or {})
        self._lock = threading.Lock()

    @classmethod
    def load(cls, out_dir: Path) -> NameIdCache:
        """Read the folder's JSON; a missing one is an empty record, an unusable one is set aside."""
        out_dir = Path(out_dir)  # no lock needed to read: every writer replaces the file whole
        return cls(out_dir, _read(out_dir / JSON_NAME))

    def refresh(self) -> None:
        """Take in what other runs recorded since we read the file (the file on disk wins)."""
        data = _read(self.path, set_aside=False)
        with self._lock:
            self._entries = data

    def _change(self, change) -> None:
        """Apply ``change(entries)`` to the file on disk under the folder's lock (read-merge-write)."""
        with self._lock, fsutil.LockFile(fsutil.lock_path_for(self.out_dir, JSON_NAME)):
            entries = _read(self.path)
            if change(entries) or not self.path.exists():
                atomic_write_json(self.path, entries)
            self._entries = entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def entries(self) -> dict[str, str]:
        """A copy of the record."""
        with self._lock:
            return dict(self._entries)

    def product_id(self, file_name: str) -> str | None:
        with self._lock:
            return self._entries.get(file_name)

    def _file_present(self, file_name: str) -> bool:
        if not _is_plain_name(file_name):
            return False  # a hand-edited entry must not make us look outside the folder
        try:
            st = (self.out_dir / file_name).stat()
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size > 0

    def is_complete(self, file_name: str) -> bool:
        """Recorded, and present under its final name (a non-empty file): nothing to fetch."""
        with self._lock:
            recorded = file_name in self._entries
        return recorded and self._file_present(file_name)

    def record(self, file_name: str, product_id: str) -> None:
        """Remember that ``file_name`` came from ``product_id`` and rewrite the JSON at once.

        Entries other runs wrote meanwhile are kept: the file is read again under the lock.
        """
        def add(entries: dict[str, str]) -> bool:
            if entries.get(file_name) == product_id:
                return False
            entries[file_name] = product_id
            return True

        self._change(add)


def _read(path: Path, *, set_aside: bool = True) -> dict[str, str]:
    """The record in ``path``: empty when missing; an unusable one is set aside (or, without
    ``set_aside``, read as empty: a reader that holds no lock must not move the file)."""
    try:
        raw = read_regular(path)  # a FIFO here would hang the run; a symlink would lead elsewhere
    except NotRegular as exc:
        raise UsageError(f"{exc}; this name is the output folder's record: move it away and run again") from None
    except FileNotFoundError:
        return {}
    except OSError as exc:
        why = f"it cannot be read ({exc.strerror or exc})"
    else:
        try:
            data = parse_json(raw.decode("utf-8-sig"))
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
            why = f"it is not valid JSON ({exc})"
        else:
            if isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
                return data
            why = "it is not a flat {file name: product Id} object"
    return _set_aside(path, why) if set_aside else {}


def _set_aside(path: Path, why: str) -> dict[str, str]:
    """Move an unusable JSON out of the way (kept for the user to inspect); start empty."""
    try:
        aside = set_aside(path, "corrupt")
    except OSError as exc:
        raise CacheError(
            f"{path} is unusable ({why}) and cannot be set aside: {exc.strerror or exc}"
        ) from exc
    log.warning("%s is unusable (%s): renamed to %s, starting a new one", path, why, aside.name)
    return {}


SEA_NAME = "open_sea_geocells.json"


class SeaRecord:
    """The sea cells recorded in ``out_dir`` for one dataset (``key``)."""

    def __init__(self, out_dir: Path, key: str, data: dict[str, list[str]] | None = None):
        self.path = Path(out_dir) / SEA_NAME
        self.key = key
        self._data = data or {}
        self._cells = set()
        bad = []
        for text in self._data.get(key, []):
            if isinstance(text, str):
                try:
                    self._cells.add(parse_grid_id(text))
                    continue
                except ValueError:
                    pass
            bad.append(text)
        if bad:
            log.warning("%s: %d entr%s under %r that %s not a geocell (first: %.40r) ignored; they are searched "
                        "again", self.path, len(bad), "y" if len(bad) == 1 else "ies", key,
                        "is" if len(bad) == 1 else "are", bad[0])

    @classmethod
    def load(cls, out_dir: Path, key: str) -> SeaRecord:
        data = _read_object(Path(out_dir) / SEA_NAME)
        if not all(isinstance(v, list) for v in data.values()):
            data = {}
        return cls(out_dir, key, data)

    def is_sea(self, cell: Geocell) -> bool:
        return cell in self._cells

    def save(self, sea: Iterable[Geocell]) -> None:
        """Add ``sea`` to the record (rewritten atomically only when it grows); a write failure is a warning."""
        new = set(sea) - self._cells
        if not new:
            return
        self._cells |= new
        data = dict(self._data, **{self.key: sorted(cell.grid_id for cell in sorted(self._cells))})
        try:
            atomic_write_json(self.path, data)
        except OSError as exc:
            log.warning("%s: cannot record the open-sea cells (%s)", self.path, exc.strerror or exc)
            return
        self._data = data


SOURCES_NAME = "dict_filename_dem_dataset.json"


class FileSources:
    """Which dataset each DEM file of ``out_dir`` came from: ``{file name: "<collection> <dataset>"}``.

    ``dict_filename_dem_id.json`` says which product a file is, not which delivery or
    collection that product belongs to; without this record a run with another ``-d`` or
    ``--collection`` would either keep an earlier run's files silently or have to search every
    present cell on every re-run. Files known to come from this run's dataset are not searched
    again; the others (another dataset, or a folder filled by another tool) are compared once.
    Like the sea record it only ever saves searches: a record that cannot be read is ignored.

    A file ``--fill-gaps`` made is recorded as ``"filled from <dataset>"`` (``dict_filename_dem_id.json``
    holds the Id of the product it was made from): later runs keep it, and say it is filled.
    """

    FILLED = "filled from "

    def __init__(self, out_dir: Path, data: dict[str, str] | None = None):
        self.path = Path(out_dir) / SOURCES_NAME
        self._data = dict(data or {})

    @classmethod
    def load(cls, out_dir: Path) -> FileSources:
        path = Path(out_dir) / SOURCES_NAME
        data = _read_object(path)
        return cls(out_dir, {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)})

    def came_from(self, file_name: str, key: str) -> bool:
        return self._data.get(file_name) == key

    def filled_from(self, file_name: str) -> str | None:
        """The dataset a filled file was made from; None for a file that is a product's own DEM."""
        value = self._data.get(file_name, "")
        return value[len(self.FILLED):] if value.startswith(self.FILLED) else None

    @classmethod
    def filled(cls, dataset: str) -> str:
        """The record's value for a file filled from ``dataset``."""
        return cls.FILLED + dataset

    def save(self, sources: dict[str, str]) -> None:
        """Record where each file came from (``{file name: value}``: a dataset label, or
        :meth:`filled`'s value), merged with what other runs wrote meanwhile: one rewrite for a
        run's files, none when nothing changed."""
        new = {name: value for name, value in sources.items() if self._data.get(name) != value}
        if not new:
            return
        data = {k: v for k, v in _read_object(self.path, warn=False).items() if isinstance(v, str)}
        data.update(new)
        try:
            atomic_write_json(self.path, dict(sorted(data.items())))
        except OSError as exc:
            log.warning("%s: cannot record where the DEM files came from (%s)", self.path, exc.strerror or exc)
            return
        self._data = data


def _read_object(path: Path, *, warn: bool = True) -> dict:
    """The JSON object in ``path``; {} when there is none or it cannot be used (never waits on a FIFO).
    ``warn``: say so (False: read again before a rewrite, said already when first read)."""
    try:
        data = parse_json(read_regular(path).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, NotRegular, ValueError) as exc:  # ValueError: not UTF-8, not JSON, nested too deep
        if warn:
            log.warning("%s is unusable (%s): it is rebuilt", path, exc)
        return {}
    return data if isinstance(data, dict) else {}
