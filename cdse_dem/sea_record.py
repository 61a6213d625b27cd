"""The open-sea geocells of an output folder (``open_sea_geocells.json``), so a re-run skips them.

Open sea has no product, so ``dict_filename_dem_id.json`` (``{file name: product Id}``, a shape
users rely on) cannot say a cell was already looked up. This small record beside it can:
``{"<collection> <dataset or product type>": ["N00_W030", ...]}``, keyed by what was searched,
since another delivery or resolution is another set of cells. Only cells a completed search
covered and found empty are written. A record that cannot be read is ignored (the cells are
searched again): it only ever saves searches, never decides what to download.
"""

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from cdse_dem.fsutil import NotRegular, atomic_write_json, read_regular
from cdse_dem.geocells import Geocell, parse_grid_id

log = logging.getLogger(__name__)

SEA_NAME = "open_sea_geocells.json"


class SeaRecord:
    """The sea cells recorded in ``out_dir`` for one dataset (``key``)."""

    def __init__(self, out_dir: Path, key: str, data: dict[str, list[str]] | None = None):
        self.path = Path(out_dir) / SEA_NAME
        self.key = key
        self._data = data or {}
        self._cells = set()
        for text in self._data.get(key, []):
            try:
                self._cells.add(parse_grid_id(text))
            except ValueError:
                continue

    @classmethod
    def load(cls, out_dir: Path, key: str) -> "SeaRecord":
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
    """

    def __init__(self, out_dir: Path, data: dict[str, str] | None = None):
        self.path = Path(out_dir) / SOURCES_NAME
        self._data = dict(data or {})

    @classmethod
    def load(cls, out_dir: Path) -> "FileSources":
        path = Path(out_dir) / SOURCES_NAME
        data = _read_object(path)
        return cls(out_dir, {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)})

    def came_from(self, file_name: str, key: str) -> bool:
        return self._data.get(file_name) == key

    def save(self, file_names: Iterable[str], key: str) -> None:
        """Record ``file_names`` as coming from ``key``, merged with what other runs wrote meanwhile."""
        new = {name: key for name in file_names if self._data.get(name) != key}
        if not new:
            return
        data = {k: v for k, v in _read_object(self.path).items() if isinstance(v, str)}
        data.update(new)
        try:
            atomic_write_json(self.path, dict(sorted(data.items())))
        except OSError as exc:
            log.warning("%s: cannot record where the DEM files came from (%s)", self.path, exc.strerror or exc)
            return
        self._data = data


def _read_object(path: Path) -> dict:
    """The JSON object in ``path``; {} when there is none or it cannot be used (never waits on a FIFO)."""
    try:
        data = json.loads(read_regular(path).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, NotRegular, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s is unusable (%s): it is rebuilt", path, exc)
        return {}
    return data if isinstance(data, dict) else {}
