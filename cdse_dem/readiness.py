"""Will Sen2Cor find a complete DEM for a tile in a folder? The verdict, as pure code.

Sen2Cor looks, for each geocell of a tile, first in its own list of cells without a DEM
(skipped), then for the file in the folder (used); any other cell sends the whole tile to
flat terrain (sen2cor.md). So a tile is ready when each of its geocells is either a whole
DEM file in the folder, or a cell with no product on CDSE that Sen2Cor will skip. Whether
Sen2Cor skips such a cell only its own missing-tiles list can say: without that list the
tool's open-sea cells are taken to be on it.

The inputs are the plan (each geocell with its catalogue answer), what the integrity check
found in the folder (:func:`folder_problems`), and the parsed missing-tiles list
(:func:`read_missing_list`); the verdict is a :class:`cdse_dem.report.TileCheck`. The check
as a whole runs in job.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cdse_dem.errors import UsageError
from cdse_dem.geocells import Geocell, geocell_of_name
from cdse_dem.planning import Plan, Status, TilePlan
from cdse_dem.report import MissingFile, TileCheck

log = logging.getLogger(__name__)

# A cell name, optionally followed by the DEM layer's suffix: how Sen2Cor's list spells them.
_LIST_LINE_RE = re.compile(r"Copernicus_DSM_(?:10|30)_[NS]\d{2}_00_[EW]\d{3}_00(_DEM\.tif)?")
NOT_ON_LIST = ("no DEM on CDSE (open sea), but not on Sen2Cor's missing-tiles list: Sen2Cor looks for the file, "
               "and without it processes the tile with flat terrain")


@dataclass(frozen=True)
class MissingList:
    """Sen2Cor's ``CopernicusDEM_<90|30>_TIFF_missing_tiles.list``: the cells it skips.

    Sen2Cor compares each wanted ``..._DEM.tif`` name with the start of each line up to its
    ``.tif``: a line without ``.tif`` matches nothing, so such a line skips no cell here either
    (``unmatched`` keeps them, to warn the user).
    """

    source: str
    cells: frozenset[Geocell]
    unmatched: tuple[str, ...] = ()


def parse_missing_list(text: str, source: str, resolution: int) -> MissingList:
    """The list's cells; UsageError ``source:line: ...`` for a line that names no DEM cell of
    this resolution (a 30 m list checked against 90 m files would skip nothing, silently)."""
    cells: set[Geocell] = set()
    unmatched: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _LIST_LINE_RE.fullmatch(line)
        if match is None:
            raise UsageError(f"{source}:{number}: {line[:80]!r} is not a Copernicus DEM file name such as "
                             "Copernicus_DSM_30_N00_00_W001_00_DEM.tif")
        cell, named_resolution = geocell_of_name(line) or (None, None)
        if cell is None:
            raise UsageError(f"{source}:{number}: {line!r} names no geocell")
        if named_resolution != resolution:
            raise UsageError(f"{source}:{number}: {line!r} is a {named_resolution} m cell, but the check is for "
                             f"{resolution} m (Sen2Cor's CopernicusDEM_{resolution}_TIFF_missing_tiles.list)")
        if match.group(1):
            cells.add(cell)
        else:
            unmatched.append(f"{source}:{number}")
    return MissingList(source, frozenset(cells), tuple(unmatched))


def tile_readiness(plan: Plan, tile: TilePlan, problems: Mapping[str, str | None],
                   missing_list: MissingList | None = None) -> TileCheck:
    """The verdict for one tile.

    ``problems`` maps each file name to what the integrity check found (None: a whole DEM of
    its cell); a name not in it counts as missing. The plan's cells carry the catalogue's
    answer: a product (CDSE has it), ``sea`` (no product), or ``failed`` (search failed).
    """
    present = sea = 0
    missing: list[MissingFile] = []
    for cell in tile.geocells:
        state = plan.cells[cell]
        problem = problems.get(state.file_name, "missing")
        if problem is None:
            present += 1
        elif state.product is None and state.status == Status.SEA:
            if missing_list is None or cell in missing_list.cells:
                sea += 1
            else:
                missing.append(MissingFile(state.file_name, cell.grid_id, NOT_ON_LIST, False))
        else:
            on_cdse = True if state.product is not None else None  # None: the search failed
            missing.append(MissingFile(state.file_name, cell.grid_id, problem, on_cdse))
    return TileCheck(tile.tile, len(tile.geocells), present, sea, tuple(missing))


def report_lines(verdicts: list[TileCheck], folder: str) -> list[str]:
    """What the user reads: one line per tile, one more per missing file."""
    lines = [f"Check of {folder} for Sen2Cor:"]
    width = max([len(v.tile) for v in verdicts] + [4])
    for verdict in verdicts:
        counts = f"{verdict.geocells} geocells: {verdict.present} present, {verdict.sea} open sea"
        if verdict.ready:
            lines.append(f"  {verdict.tile:<{width}}  ready ({counts})")
            continue
        lines.append(f"  {verdict.tile:<{width}}  not ready ({counts}, {len(verdict.missing)} missing)")
        for item in verdict.missing:
            lines.append(f"      {item.file_name}: {item.reason}; {_on_cdse(item)}")
    ready = sum(v.ready for v in verdicts)
    lines.append(f"  Total: {ready} of {len(verdicts)} tiles ready")
    return lines


def _on_cdse(item: MissingFile) -> str:
    if item.on_cdse is None:
        return "whether CDSE has it is unknown: the catalogue search failed (logged above)"
    if item.reason == NOT_ON_LIST:
        return "add the name to Sen2Cor's list"
    return "on CDSE: a run without --check downloads it"


def read_missing_list(path: str | Path, resolution: int) -> MissingList:
    """Sen2Cor's missing-tiles list, parsed; UsageError (exit 2) for a line that is not a cell."""
    from cdse_dem.fsutil import read_input

    data = read_input(Path(path).expanduser(), "Sen2Cor missing-tiles list", UsageError)
    missing_list = parse_missing_list(data.decode("utf-8-sig", errors="replace"), str(path), resolution)
    if missing_list.unmatched:
        log.warning("%s: %d line(s) without _DEM.tif (first: %s): Sen2Cor compares whole file names, "
                    "so it does not skip those cells", path, len(missing_list.unmatched), missing_list.unmatched[0])
    return missing_list


def folder_problems(out_dir: Path, plan: Plan, resolution: int) -> dict[str, str | None]:
    """For each geocell's file: None when the folder holds a whole DEM of that cell, else why not."""
    from cdse_dem.integrity import dem_problem

    return {state.file_name: dem_problem(out_dir / state.file_name, resolution=resolution, cell=state.geocell)
            for state in plan.cells.values()}
