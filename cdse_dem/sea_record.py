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

from cdse_dem.fsutil import atomic_write_json
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
        path = Path(out_dir) / SEA_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s is unusable (%s): its open-sea cells are searched again", path, exc)
            data = {}
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
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
