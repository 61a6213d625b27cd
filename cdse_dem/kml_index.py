"""A compact index of the official tiling KML, so the 109 MB file is parsed once, not per tile.

The reference tool re-parses the whole KML for every tile. Here the first use streams it
once (``lxml.etree.iterparse``, each Placemark cleared as soon as it is read, so memory stays
flat) into four arrays: sorted tile names, per-tile part offsets, per-part vertex offsets and
one float64 vertex array. They are stored beside the KML as ``<kml>.index.npz``, written to a
temporary file and renamed into place so a crash never leaves half an index. Later runs load
only that file (milliseconds) and build a tile's polygons when asked.

The index records the KML's size, mtime and a hash of its head and tail; when any differs
the KML has changed and the index is rebuilt. An index that cannot be read or does not hold
together is never trusted: a warning, then a rebuild.
"""

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cdse_dem.errors import InputError
from cdse_dem.fsutil import DiskFull, atomic_writer
from cdse_dem.tiles import normalize_tile_id

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

INDEX_SUFFIX = ".index.npz"
FORMAT_VERSION = 1
_STAMP_BYTES = 1 << 16  # hashed at each end of the KML


def index_path(kml_path: Path) -> Path:
    return kml_path.with_name(kml_path.name + INDEX_SUFFIX)


def kml_stamp(kml_path: Path) -> str:
    """What identifies this version of the KML: size, mtime and a hash of its two ends."""
    st = kml_path.stat()
    digest = hashlib.sha256()
    with kml_path.open("rb") as f:
        digest.update(f.read(_STAMP_BYTES))
        if st.st_size > _STAMP_BYTES:
            f.seek(max(_STAMP_BYTES, st.st_size - _STAMP_BYTES))
            digest.update(f.read())
    return json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": digest.hexdigest()})


def iter_placemarks(source: "str | Path | IO[bytes]", rings: bool = True) -> Iterator[tuple[str, list]]:
    """Stream ``(name, outer rings)`` of every Placemark; rings are (n, 2) lon/lat float64 arrays.

    One pass, constant memory: each Placemark is dropped, with the siblings before it, once
    read. Only the outer ring of each Polygon is kept (Sentinel-2 tiles have no holes); the
    Point is ignored. With ``rings=False`` only names are yielded (an empty list each).
    """
    from lxml import etree

    parser_source = str(source) if isinstance(source, Path) else source
    context = etree.iterparse(
        parser_source, events=("end",), tag="{*}Placemark", resolve_entities=False, no_network=True
    )
    for _, element in context:
        name = (element.findtext("{*}name") or "").strip()
        found = []
        if rings:
            for coordinates in element.iterfind(".//{*}Polygon/{*}outerBoundaryIs/{*}LinearRing/{*}coordinates"):
                found.append(_ring(coordinates.text or "", name))
        element.clear()
        while element.getprevious() is not None:
            del element.getparent()[0]
        yield name, found


def _ring(text: str, name: str) -> "np.ndarray":
    """KML tuples are ``lon,lat[,alt]`` separated by blanks; keep lon, lat."""
    import numpy as np

    tuples = text.split()
    values = np.array(",".join(tuples).split(","), dtype=np.float64) if tuples else np.empty(0)
    width = values.size // len(tuples) if tuples else 0
    if width not in (2, 3) or width * len(tuples) != values.size or len(tuples) < 4:
        raise ValueError(f"placemark {name}: unreadable polygon coordinates")
    return values.reshape(-1, width)[:, :2].copy()


@dataclass(frozen=True)
class KmlIndex:
    """Every tile's polygons as flat arrays; ``rings(tile)`` slices out one tile on demand."""

    names: "np.ndarray"  # sorted tile ids, dtype S5
    part_start: "np.ndarray"  # tile i owns parts part_start[i]:part_start[i+1]
    ring_start: "np.ndarray"  # part j owns coords ring_start[j]:ring_start[j+1]
    coords: "np.ndarray"  # (n, 2) lon, lat

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, tile_id: str) -> bool:
        return self._position(tile_id) is not None

    def tile_ids(self) -> list[str]:
        return [n.decode() for n in self.names]

    def _position(self, tile_id: str) -> int | None:
        import numpy as np

        key = tile_id.encode()
        i = int(np.searchsorted(self.names, key))
        return i if i < len(self.names) and self.names[i] == key else None

    def rings(self, tile_id: str) -> "list[np.ndarray] | None":
        """The tile's outer rings (one, or two across ±180°) as lon/lat arrays; None if absent."""
        i = self._position(tile_id)
        if i is None:
            return None
        parts = range(int(self.part_start[i]), int(self.part_start[i + 1]))
        return [self.coords[self.ring_start[j] : self.ring_start[j + 1]] for j in parts]

    def check(self) -> None:
        """ValueError unless the arrays hold together (a damaged file must not be trusted)."""
        import numpy as np

        n, p = len(self.names), len(self.ring_start) - 1
        ok = (
            self.names.dtype == np.dtype("S5")
            and self.part_start.shape == (n + 1,)
            and self.coords.ndim == 2
            and self.coords.shape[1] == 2
            and p >= 0
            and int(self.part_start[0]) == 0
            and int(self.part_start[-1]) == p
            and int(self.ring_start[0]) == 0
            and int(self.ring_start[-1]) == len(self.coords)
            and bool(np.all(np.diff(self.part_start) >= 1))
            and bool(np.all(np.diff(self.ring_start) >= 4))
            and bool(np.all(self.names[1:] > self.names[:-1]))
            and bool(np.isfinite(self.coords).all())
        )
        if not ok:
            raise ValueError("index arrays are inconsistent")


def build_index(kml_path: Path) -> KmlIndex:
    """One streaming pass over the KML; InputError when it is not a readable tiling KML."""
    import numpy as np
    from lxml import etree

    tiles: dict[str, list] = {}
    try:
        for name, rings in iter_placemarks(kml_path):
            tile = normalize_tile_id(name)
            if tile is None or not rings:
                log.debug("KML placemark %r skipped: not a tile polygon", name)
                continue
            tiles[tile] = rings
    except (OSError, etree.XMLSyntaxError, ValueError) as exc:
        raise InputError(f"{kml_path}: not a readable tiling KML ({exc})") from exc
    if not tiles:
        raise InputError(f"{kml_path}: no tile polygons in this KML")
    names = sorted(tiles)
    part_counts = [len(tiles[t]) for t in names]
    all_rings = [ring for t in names for ring in tiles[t]]
    part_start = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(part_counts, out=part_start[1:])
    ring_start = np.zeros(len(all_rings) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in all_rings], out=ring_start[1:])
    index = KmlIndex(
        names=np.array([t.encode() for t in names], dtype="S5"),
        part_start=part_start,
        ring_start=ring_start,
        coords=np.concatenate(all_rings),
    )
    index.check()
    return index


def save_index(index: KmlIndex, path: Path, stamp: str) -> None:
    """Write atomically, readable by all (a harmless public index); OSError (or DiskFull) on failure."""
    import numpy as np

    with atomic_writer(path, mode=0o644) as f:
        np.savez(
            f, version=np.array(FORMAT_VERSION), stamp=np.array(stamp), names=index.names,
            part_start=index.part_start, ring_start=index.ring_start, coords=index.coords,
        )


def load_index(path: Path, stamp: str) -> KmlIndex | None:
    """The stored index if it is readable and made from this KML version; else None (logged)."""
    import numpy as np

    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != FORMAT_VERSION or str(data["stamp"]) != stamp:
                log.info("The tiling KML has changed since its index was made: rebuilding %s", path)
                return None
            index = KmlIndex(
                names=data["names"], part_start=data["part_start"], ring_start=data["ring_start"],
                coords=data["coords"],
            )
        index.check()
        return index
    except Exception as exc:  # any damage: zip, header, dtype, shape; never trusted
        log.warning("The KML index %s is unreadable (%s): rebuilding it", path, exc)
        return None


def open_index(kml_path: Path) -> KmlIndex:
    """Load the KML's index, building (and storing) it first when missing, stale or damaged.

    A folder where the index cannot be written costs a rebuild per run, not a failure.
    """
    import time

    try:
        stamp = kml_stamp(kml_path)
    except OSError as exc:
        raise InputError(f"{kml_path}: cannot read the tiling KML ({exc.strerror or exc})") from exc
    path = index_path(kml_path)
    index = load_index(path, stamp)
    if index is not None:
        log.debug("KML index loaded from %s (%d tiles)", path, len(index))
        return index
    started = time.monotonic()
    log.info("Indexing the tiling KML %s (once)", kml_path)
    index = build_index(kml_path)
    try:
        save_index(index, path, stamp)
    except (OSError, DiskFull) as exc:
        log.warning("Could not store the KML index at %s (%s): it will be rebuilt next run", path, exc)
    log.info("KML index of %d tiles made in %.1f s", len(index), time.monotonic() - started)
    return index
