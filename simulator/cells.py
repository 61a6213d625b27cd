"""Which 1°x1° geocells have a Copernicus DEM product, per resolution.

The real lists decide it, so that open sea has no product as on CDSE. A cell is the pair
``(lat, lon)`` of its south-west corner; its grid id is ``N50_E007``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

Cell = tuple[int, int]

_GRID_ID = re.compile(r"^([NS])(\d{2})_([EW])(\d{3})$")
LIST_NAMES = {30: "copdem_glo30_cells.txt", 90: "copdem_glo90_cells.txt"}
DEFAULT_CELLS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def grid_id(cell: Cell) -> str:
    lat, lon = cell
    return f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}_{'E' if lon >= 0 else 'W'}{abs(lon):03d}"


def parse_grid_id(text: str) -> Cell | None:
    """The cell of ``N50_E007``; None for anything else (a query may name any string)."""
    m = _GRID_ID.match(text)
    if not m:
        return None
    lat = int(m.group(2)) * (1 if m.group(1) == "N" else -1)
    lon = int(m.group(4)) * (1 if m.group(3) == "E" else -1)
    if not (-90 <= lat < 90 and -180 <= lon < 180):
        return None
    return lat, lon


def dsm_name(cell: Cell, resolution: int) -> str:
    """``Copernicus_DSM_10_N50_00_E007_00`` (10 = 1 arc-second = GLO-30, 30 = GLO-90; the
    simulator names EEA-10 cells ``_03_``, a choice: their layout is not recorded)."""
    lat, lon = cell
    code = {10: "03", 30: "10"}.get(resolution, "30")
    return (f"Copernicus_DSM_{code}_{'N' if lat >= 0 else 'S'}{abs(lat):02d}_00_"
            f"{'E' if lon >= 0 else 'W'}{abs(lon):03d}_00")


@dataclass(frozen=True)
class CellLists:
    """The existing cells at 30 m and 90 m, and where they came from (for the log and README)."""

    glo30: frozenset[Cell]
    glo90: frozenset[Cell]
    source: str

    def has(self, cell: Cell, resolution: int) -> bool:
        return cell in (self.glo30 if resolution == 30 else self.glo90)

    def all_cells(self) -> list[Cell]:
        """Every cell with a product at either resolution, south to north, west to east."""
        return sorted(self.glo30 | self.glo90)


def _read_list(path: Path) -> frozenset[Cell]:
    return _read_cached(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int) -> frozenset[Cell]:
    """Parsed once per process and file version: tests start many simulators."""
    cells = set()
    for text in Path(path).read_text(encoding="ascii").split():
        if len(text) == 8 and text[0] in "NS" and text[4] in "EW" and text[3] == "_":
            try:
                lat = int(text[1:3]) * (1 if text[0] == "N" else -1)
                lon = int(text[5:8]) * (1 if text[4] == "E" else -1)
            except ValueError:
                continue
            cells.add((lat, lon))
    return frozenset(cells)


def load_cells(cells_dir: Path | str | None) -> CellLists:
    """The real lists from ``cells_dir`` (default ``../shared/data``), else the built-in subset."""
    folder = Path(cells_dir) if cells_dir is not None else DEFAULT_CELLS_DIR
    paths = {res: folder / name for res, name in LIST_NAMES.items()}
    if all(p.is_file() for p in paths.values()):
        return CellLists(_read_list(paths[30]), _read_list(paths[90]), str(folder))
    if cells_dir is not None:
        missing = ", ".join(str(p) for p in paths.values() if not p.is_file())
        raise FileNotFoundError(f"cell lists not found: {missing}")
    from simulator.builtin_cells import BUILTIN_CELLS

    cells = frozenset(c for c in (parse_grid_id(g) for g in BUILTIN_CELLS) if c is not None)
    return CellLists(cells, cells, "built-in")
