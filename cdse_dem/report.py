"""What a run says: its result records (the summary JSON), the printed summary and plan,
whether a folder is ready for Sen2Cor, and the KML picture.

What a run did: the result objects the library returns, and what the user is told of them.

:func:`cdse_dem.download`, :func:`cdse_dem.plan` and :func:`cdse_dem.check` return a
:class:`Result`; ``--summary-json`` is ``Result.to_dict()``, written by
:func:`write_summary_json`, and the command line's summary, plan and check lines are made
from the same objects. One definition, so a pipeline reading the JSON and a script reading
the objects see the same thing.

The JSON shape is documented in docs/output.md and is a promise to pipelines: keys are only
ever added, never renamed. A few fields of the objects are not in it (marked below): what
the command line's lines need besides (bytes per geocell, the file name, the footprint).

Will Sen2Cor find a complete DEM for a tile in a folder? The verdict, as pure code.

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

A KML picture of a run: tile footprints and their geocells coloured by what happened.

Opened in Google Earth or QGIS it answers "which cells did I get, which are sea, which
failed" at a glance, and shows where the tiles lie. Written with fastkml (1.x API: keyword
constructors, pygeoif geometries); a ``.kmz`` path gives a zipped KMZ.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pygeoif
import shapely
from fastkml import KML, Document, Folder, LineStyle, Placemark, PolyStyle, Style
from fastkml.styles import StyleUrl

from cdse_dem.catalogue import Dataset, Product
from cdse_dem.dem_folder import dem_problem
from cdse_dem.errors import EXIT_INTERRUPTED, UsageError
from cdse_dem.fsutil import read_input, write_report
from cdse_dem.grid import Footprint, FootprintSource, Geocell, geocell_of_name
from cdse_dem.logs import scrub
from cdse_dem.planning import WHOLE, CellState, Plan, Status, TilePlan, complete
from cdse_dem.processors import CURRENT, FAILED, WRITTEN, Outputs, TileOutputs
from cdse_dem.tiles import Entry

log = logging.getLogger(__name__)


STATUSES = tuple(Status)


@dataclass
class GeocellResult:
    """One geocell of a tile, and what became of it."""

    name: str  # Copernicus_DSM_30_N50_00_E007_00
    grid_id: str  # N50_E007
    status: str  # planned | downloaded | present | sea | failed | gap | filled
    product_id: str | None = None  # filled: the product it was filled from
    file: str | None = None  # the DEM file this run wrote (or, in a check, found whole); else None
    reason: str = "footprint"  # footprint: the tile overlaps it; sen2cor: only Sen2Cor's rectangle holds it
    error: str | None = None  # why it failed
    datasets: tuple[str, ...] = ()  # a gap: the other datasets that have a product for it
    filled_from: str | None = None  # filled (or, planned, to be filled): the dataset of its source product
    file_name: str = ""  # not in the JSON: the DEM file's name in the output folder
    bytes: int = 0  # not in the JSON: bytes downloaded for it by this run

    def to_dict(self) -> dict:
        return {"name": self.name, "grid_id": self.grid_id, "status": self.status, "product_id": self.product_id,
                "file": self.file, "reason": self.reason, **({"error": self.error} if self.error else {}),
                **({"datasets": list(self.datasets)} if self.datasets else {}),
                **({"filled_from": self.filled_from} if self.filled_from else {})}


@dataclass(frozen=True)
class MissingFile:
    """A geocell Sen2Cor will not find: the file, why, and whether CDSE has a product for it."""

    file_name: str
    grid_id: str
    reason: str  # "missing", or what the integrity check found, or NOT_ON_LIST, GAP, SKIPPED_BY_SEN2COR
    on_cdse: bool | None  # None: unknown (the catalogue search failed)
    datasets: tuple[str, ...] = ()  # a gap: the other datasets that have a product for it
    delete_lines: tuple[str, ...] = ()  # SKIPPED_BY_SEN2COR: ``list:line`` of each line naming it

    def to_dict(self) -> dict:
        return {"file": self.file_name, "grid_id": self.grid_id, "reason": self.reason, "on_cdse": self.on_cdse,
                **({"datasets": list(self.datasets)} if self.datasets else {}),
                **({"delete_lines": list(self.delete_lines)} if self.delete_lines else {})}


@dataclass(frozen=True)
class TileCheck:
    """What :func:`cdse_dem.check` says of one tile: will Sen2Cor find a complete DEM?"""

    tile: str
    geocells: int
    present: int  # whole DEM files in the folder (filled ones included)
    sea: int  # no product on CDSE, and skipped by Sen2Cor
    missing: tuple[MissingFile, ...]  # what Sen2Cor will not find or will skip
    filled: int = 0  # of ``present``: files filled from another dataset (--fill-gaps)

    @property
    def ready(self) -> bool:
        return not self.missing

    def to_dict(self) -> dict:
        return {"ready": self.ready, "present": self.present, "filled": self.filled, "sea": self.sea,
                "missing": [m.to_dict() for m in self.missing]}


@dataclass
class TileResult:
    """One tile asked for, its geocells, and (from a check) its verdict."""

    tile: str  # 32UMA
    entry: str  # the input as written (a SAFE name, T32UMA, ...)
    footprint_source: str  # kml | computed
    geocells: list[GeocellResult]
    error: str | None = None  # the catalogue search for it failed
    check: TileCheck | None = None  # from cdse_dem.check only
    footprint: object = field(default=None, repr=False, compare=False)  # not in the JSON: footprint.Footprint
    # with --sen2like/--force/--quicklook: each one's path, None where it was not made (tile not complete, failed)
    outputs: dict[str, str | None] | None = None
    output_states: dict[str, str] = field(default_factory=dict)  # not in the JSON: written | up to date | failed

    @property
    def complete(self) -> bool:
        """Every geocell a whole DEM in the folder (downloaded, present, filled) or open sea: Sen2Cor
        finds the tile's DEM (``planning.complete``; a gap is missing)."""
        return complete(cell.status for cell in self.geocells)

    def to_dict(self) -> dict:
        return {"tile": self.tile, "entry": self.entry, "footprint_source": self.footprint_source,
                "geocells": [g.to_dict() for g in self.geocells], **({"error": self.error} if self.error else {}),
                **({"check": self.check.to_dict()} if self.check is not None else {}),
                **({"outputs": self.outputs} if self.outputs is not None else {})}


@dataclass(frozen=True)
class InvalidEntry:
    """An entry of the input that names no Sentinel-2 tile; the others were processed."""

    entry: str
    source: str  # the list file, or "command line"
    line: int | None
    error: str

    @property
    def message(self) -> str:
        """``file:line: '<entry>' ...``, as the log and the summary say it."""
        return Entry(self.entry, self.source, self.line, error=self.error).message

    def to_dict(self) -> dict:
        return {"entry": self.entry, "source": self.source, "line": self.line, "error": self.error}


@dataclass
class Totals:
    """Counts over the run's distinct geocells (a cell shared by two tiles counts once)."""

    tiles: int = 0
    geocells: int = 0
    downloaded: int = 0
    present: int = 0
    sea: int = 0
    failed: int = 0
    planned: int = 0
    bytes: int = 0  # downloaded by this run
    seconds: float = 0.0
    gap: int = 0
    filled: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"tiles": self.tiles, "geocells": self.geocells, "downloaded": self.downloaded,
                "present": self.present, "sea": self.sea, "failed": self.failed, "planned": self.planned,
                "gap": self.gap, "filled": self.filled,
                "bytes": self.bytes, "seconds": round(self.seconds, 3), "mb_per_s": round(self.mb_per_s, 3)}


@dataclass
class Result:
    """What a call of :func:`cdse_dem.download`, :func:`cdse_dem.plan` or :func:`cdse_dem.check` found.

    ``exit_status`` is the status the command line would exit with: 0 all done (open sea is
    not a failure; for a check: every tile ready), 1 some geocell failed or is a gap, or some
    entry was invalid (a check: some tile not ready), 3 the time budget ran out (``left`` says what a
    next call resumes), 130 the ``stop`` event ended it.
    """

    tiles: list[TileResult]
    invalid_entries: list[InvalidEntry]
    totals: Totals
    exit_status: int
    output_dir: Path | None = None  # not in the JSON
    left: list[str] = field(default_factory=list)  # not in the JSON: file names not started (time budget)
    error: str | None = None  # not in the JSON: what stopped every download (no CCM access, a full disk)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def interrupted(self) -> bool:
        """The ``stop`` event (or a signal, in the command line) ended the run early."""

        return self.exit_status == EXIT_INTERRUPTED

    @property
    def ready(self) -> bool:
        """From :func:`cdse_dem.check`: every tile has a complete DEM for Sen2Cor."""
        return bool(self.tiles) and all(t.check is not None and t.check.ready for t in self.tiles)

    @property
    def geocells(self) -> list[GeocellResult]:
        """Every distinct geocell of the run once, in the order the tiles name them."""
        seen: dict[str, GeocellResult] = {}
        for tile in self.tiles:
            for cell in tile.geocells:
                seen.setdefault(cell.grid_id, cell)
        return list(seen.values())

    @property
    def files(self) -> list[Path]:
        """The DEM files the tiles have in the output folder: downloaded now or present before."""
        paths = []
        for cell in self.geocells:
            if cell.status in WHOLE:
                paths.append(Path(cell.file) if cell.file else Path(self.output_dir or ".") / cell.file_name)
        return paths

    @property
    def bytes_downloaded(self) -> int:
        return self.totals.bytes

    def to_dict(self) -> dict:
        """The ``--summary-json`` document (shape in docs/output.md)."""
        return {"tiles": [t.to_dict() for t in self.tiles],
                "invalid_entries": [e.to_dict() for e in self.invalid_entries],
                "totals": self.totals.to_dict(), "exit_status": self.exit_status}


def result_of(plan: Plan, invalid: list[Entry], *, exit_status: int, seconds: float, bytes_downloaded: int,
              output_dir: Path | None, left: list[str] | None = None, error: str | None = None,
              checks: list[TileCheck] | None = None, outputs: Mapping[str, TileOutputs] | None = None,
              asked: Outputs | None = None) -> Result:
    """The Result of a run from its plan (statuses as the run left them); ``outputs``: what the
    processors' outputs of each tile came to (``asked``: the folders, for the tiles that have none)."""
    tiles = []
    for number, tile in enumerate(plan.tiles):
        cells = []
        for geocell in tile.geocells:
            state = plan.cells[geocell]
            cells.append(GeocellResult(
                name=state.file_name.rsplit("_DEM.", 1)[0], grid_id=geocell.grid_id, status=state.status,
                product_id=state.product_id, file=state.file, reason=tile.reasons.get(geocell, "footprint"),
                error=state.error, datasets=state.datasets, filled_from=state.fill_from, file_name=state.file_name,
                bytes=state.bytes))
        tiles.append(TileResult(tile.tile, tile.entry.text, tile.footprint_source, cells, tile.error,
                                checks[number] if checks is not None else None, tile.footprint))
        if asked is not None:
            made = (outputs or {}).get(tile.tile) or TileOutputs(tile.tile, asked.paths(tile.tile))
            tiles[-1].outputs = made.made()
            tiles[-1].output_states = {kind.value: state for kind, state in made.states.items()}
    totals = Totals(tiles=len(plan.tiles), geocells=len(plan.cells), downloaded=plan.count(Status.DOWNLOADED),
                    present=plan.count(Status.PRESENT), sea=plan.count(Status.SEA), failed=plan.count(Status.FAILED),
                    planned=plan.count(Status.PLANNED), bytes=bytes_downloaded, seconds=seconds,
                    gap=plan.count(Status.GAP), filled=plan.count(Status.FILLED))
    return Result(tiles, [InvalidEntry(e.text, e.source, e.line, e.error or "") for e in invalid], totals,
                  exit_status, output_dir, list(left or ()), error)


def _counts(tile: TileResult) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for cell in tile.geocells:
        counts[cell.status] += 1
    return counts


def summary_lines(result: Result) -> list[str]:
    """The summary printed at the end of a run: a line per tile, the totals, what failed or is left."""
    lines = ["Summary:"]
    width = max([len(t.tile) for t in result.tiles] + [4])
    for tile in result.tiles:
        c = _counts(tile)
        parts = [f"{c[Status.DOWNLOADED]} downloaded", f"{c[Status.PRESENT]} already present",
                 f"{c[Status.SEA]} open sea (no DEM)", f"{c[Status.FAILED]} failed"]
        if c[Status.FILLED]:
            parts.append(f"{c[Status.FILLED]} filled")
        if c[Status.GAP]:
            parts.append(f"{c[Status.GAP]} gap (no DEM in this dataset)")
        if c[Status.PLANNED]:
            parts.append(f"{c[Status.PLANNED]} not done")
        fetched = sum(cell.bytes for cell in tile.geocells)
        lines.append(f"  {tile.tile:<{width}}  {len(tile.geocells)} geocells: " + ", ".join(parts)
                     + (f"; {fetched / 1e6:.1f} MB" if fetched else ""))
    for entry in result.invalid_entries:
        lines.append(f"  invalid entry {entry.message}")
    totals = result.totals
    gaps = "".join(f", {count} {word}" for count, word in ((totals.filled, "filled"), (totals.gap, "gap")) if count)
    lines.append(
        f"  Total: {totals.downloaded} downloaded, {totals.present} already present, "
        f"{totals.sea} open sea, {totals.failed} failed{gaps}; "
        f"{totals.bytes / 1e6:.1f} MB in {totals.seconds:.1f} s ({totals.mb_per_s:.1f} MB/s)")
    lines += _output_lines(result)
    for cell in result.geocells:
        if cell.status == Status.FAILED:
            lines.append(f"  failed: {cell.file_name} ({cell.error or 'unknown error'})")
        elif cell.status == Status.GAP:
            lines.append(f"  gap: {cell.file_name} (no product in this dataset; CDSE has it in "
                         f"{_datasets_text(cell.datasets)})")
    if result.left:
        lines.append(f"  Left for the next run ({len(result.left)}): " + ", ".join(result.left))
    return lines


def _output_lines(result: Result) -> list[str]:
    """A line per output asked for (--sen2like, --force, --quicklook): how many tiles got theirs."""
    lines = []
    kinds = dict.fromkeys(kind for tile in result.tiles for kind in tile.outputs or {})
    for kind in kinds:
        states = [tile.output_states.get(kind) for tile in result.tiles if tile.outputs is not None]
        written, current, failed = (states.count(s) for s in (WRITTEN, CURRENT, FAILED))
        lines.append(f"  {kind}: {written} written, {current} up to date"
                     + (f", {failed} failed" if failed else "")
                     + (f", {len(states) - written - current - failed} not made (tile not complete)"
                        if len(states) > written + current + failed else ""))
    return lines


def plan_lines(result: Result) -> list[str]:
    """What ``--dry-run`` prints: per tile its footprint and counts, then a line per geocell."""
    lines = []
    for tile in result.tiles:
        c = _counts(tile)
        more = "".join(f", {c[status]} {status}" for status in (Status.FILLED, Status.GAP) if c[status])
        lines.append(f"{tile.tile} (footprint: {tile.footprint_source}): {len(tile.geocells)} geocells, "
                     f"{c[Status.PLANNED]} to download, {c[Status.PRESENT]} present, {c[Status.SEA]} open sea{more}")
        for cell in tile.geocells:
            source = f"  filled from {cell.filled_from}" if cell.filled_from else ""
            lines.append(f"  {cell.grid_id}  {cell.file_name}  {cell.status}  {cell.product_id or '-'}  {cell.reason}"
                         + source)
    return lines


def write_summary_json(path: Path, summary: dict) -> None:
    """The summary where the user asked for it, scrubbed of secrets; a failure is logged, not raised.

    Paths are written as the filesystem gave them, even when they are not UTF-8; the path was
    checked at the start of the run, but the disk may still fill up meanwhile.
    """

    text = scrub(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False))
    try:
        write_report(path, (text + "\n").encode("utf-8", "surrogateescape"))
    except (OSError, ValueError) as exc:
        log.error("%s: cannot write the summary JSON (%s)", path, getattr(exc, "strerror", None) or exc)


# A cell name, optionally followed by the DEM layer's suffix: how Sen2Cor's list spells them.
_LIST_LINE_RE = re.compile(r"Copernicus_DSM_(?:10|30)_[NS]\d{2}_00_[EW]\d{3}_00(_DEM\.tif)?")
NOT_ON_LIST = ("no DEM on CDSE (open sea), but not on Sen2Cor's missing-tiles list: Sen2Cor looks for the file, "
               "and without it processes the tile with flat terrain")
GAP = "a gap: land without a product in this dataset (without a file Sen2Cor goes flat)"
SKIPPED_BY_SEN2COR = ("in the folder, but on Sen2Cor's missing-tiles list: Sen2Cor skips it without looking "
                      "in the folder, and gives the tile zero heights there")


@dataclass(frozen=True)
class MissingList:
    """Sen2Cor's ``CopernicusDEM_<90|30>_TIFF_missing_tiles.list``: the cells it skips.

    Sen2Cor compares each wanted ``..._DEM.tif`` name with the start of each line up to its
    ``.tif``: a line without ``.tif`` matches nothing, so such a line skips no cell here either
    (``unmatched`` keeps them, to warn the user). It reads the list before the folder: a cell
    the list names is skipped even when its file is there (``lines`` says which lines name it).
    """

    source: str
    cells: frozenset[Geocell]
    unmatched: tuple[str, ...] = ()
    lines: Mapping[Geocell, tuple[tuple[int, str], ...]] = field(default_factory=dict)  # (number, text)

    def lines_naming(self, cell: Geocell) -> tuple[str, ...]:
        """``source:number: text`` of each line that makes Sen2Cor skip ``cell``."""
        return tuple(f"{self.source}:{number}: {text}" for number, text in self.lines.get(cell, ()))


def parse_missing_list(text: str, source: str, resolution: int) -> MissingList:
    """The list's cells; UsageError ``source:line: ...`` for a line that names no DEM cell of
    this resolution (a 30 m list checked against 90 m files would skip nothing, silently)."""
    lines: dict[Geocell, list[tuple[int, str]]] = {}
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
            lines.setdefault(cell, []).append((number, line))
        else:
            unmatched.append(f"{source}:{number}")
    return MissingList(source, frozenset(lines), tuple(unmatched),
                       {cell: tuple(found) for cell, found in lines.items()})


def tile_readiness(plan: Plan, tile: TilePlan, problems: Mapping[str, str | None],
                   missing_list: MissingList | None = None) -> TileCheck:
    """The verdict for one tile.

    ``problems`` maps each file name to what the integrity check found (None: a whole DEM of
    its cell); a name not in it counts as missing. The plan's cells carry the catalogue's
    answer: a product (CDSE has it), ``sea`` (no product anywhere), ``gap`` (a product in
    another dataset only), or ``failed`` (search failed); a whole file is ``present`` or
    ``filled``. A file Sen2Cor's list names is skipped by Sen2Cor, whole or not.
    """
    present = sea = filled = 0
    missing: list[MissingFile] = []
    for cell in tile.geocells:
        state = plan.cells[cell]
        problem = problems.get(state.file_name, "missing")
        if problem is None:
            present += 1
            filled += state.status == Status.FILLED
            if missing_list is not None and cell in missing_list.cells:
                missing.append(MissingFile(state.file_name, cell.grid_id, SKIPPED_BY_SEN2COR, None,
                                           delete_lines=missing_list.lines_naming(cell)))
        elif state.product is None and state.status == Status.SEA:
            if missing_list is None or cell in missing_list.cells:
                sea += 1
            else:
                missing.append(MissingFile(state.file_name, cell.grid_id, NOT_ON_LIST, False))
        elif state.status == Status.GAP:
            missing.append(MissingFile(state.file_name, cell.grid_id, GAP, False, datasets=state.datasets))
        else:
            on_cdse = True if state.product is not None else None  # None: the search failed
            missing.append(MissingFile(state.file_name, cell.grid_id, problem, on_cdse))
    return TileCheck(tile.tile, len(tile.geocells), present, sea, tuple(missing), filled)


def report_lines(verdicts: list[TileCheck], folder: str) -> list[str]:
    """What the user reads: one line per tile, one more per missing file; then the lines to delete
    from Sen2Cor's missing-tiles list for it to read files it would skip."""
    lines = [f"Check of {folder} for Sen2Cor:"]
    width = max([len(v.tile) for v in verdicts] + [4])
    to_delete: dict[str, None] = {}
    for verdict in verdicts:
        filled = f" ({verdict.filled} filled)" if verdict.filled else ""
        counts = f"{verdict.geocells} geocells: {verdict.present} present{filled}, {verdict.sea} open sea"
        if verdict.ready:
            lines.append(f"  {verdict.tile:<{width}}  ready ({counts})")
            continue
        lines.append(f"  {verdict.tile:<{width}}  not ready ({counts}, {len(verdict.missing)} missing)")
        for item in verdict.missing:
            lines.append(f"      {item.file_name}: {item.reason}; {_on_cdse(item)}")
            to_delete.update(dict.fromkeys(item.delete_lines))
    ready = sum(v.ready for v in verdicts)
    lines.append(f"  Total: {ready} of {len(verdicts)} tiles ready")
    if to_delete:
        lines.append("  For Sen2Cor to read those files, delete these lines from its missing-tiles list "
                     "(this tool never edits Sen2Cor's installation):")
        lines.extend(f"    {line}" for line in to_delete)
    return lines


def _on_cdse(item: MissingFile) -> str:
    if item.reason == SKIPPED_BY_SEN2COR:
        return "delete " + " and ".join(line.split(": ", 1)[0] for line in item.delete_lines)
    if item.reason == GAP:
        named = geocell_of_name(item.file_name)
        other = 90 if named is not None and named[1] == 30 else 30
        return (f"CDSE has it in {_datasets_text(item.datasets)}: run with --r {other}, another -d, "
                "or --fill-gaps (without --check)")
    if item.on_cdse is None:
        return "whether CDSE has it is unknown: the catalogue search failed (logged above)"
    if item.reason == NOT_ON_LIST:
        return "add the name to Sen2Cor's list"
    return "on CDSE: a run without --check downloads it"


def _datasets_text(datasets: Sequence[str]) -> str:
    """The other datasets that have a cell, in few words: the one a user would pick, and how many more."""
    if not datasets:
        return "another dataset"
    best = max(datasets, key=lambda label: (label.startswith("CCM"), label))
    return best if len(datasets) == 1 else f"{best} and {len(datasets) - 1} other dataset(s)"


def gap_message(gaps: Sequence[CellState], dataset: Dataset, found: Mapping[Geocell, Sequence[Product]], *,
                fill: bool) -> str:
    """The one line a run (or a check) logs for its gaps: the cells, and the ways out.

    A gap is land that the run's dataset has no product for (GLO-30 lacks land cells GLO-90 has; a
    delivery may lack cells another has): without a file Sen2Cor processes the tile with flat terrain.
    ``found``: each cell's products in other datasets, which say where else the cells are.
    """
    cells = sorted(state.geocell for state in gaps)
    count = len(cells)
    head = (f"Gap in the DEM: {count} land geocell(s) have no product in {dataset.label}, but another Copernicus "
            f"DEM dataset has them: {' '.join(cell.grid_id for cell in cells)}.")
    if fill:
        return head + " --fill-gaps: each is filled from another dataset's product of the cell."
    parts = [[(p.collection, p.resolution, p.delivery) for p in found.get(state.geocell, ())] for state in gaps]
    other = 90 if dataset.resolution == 30 else 30

    def share(has) -> str:
        n = sum(1 for of_cell in parts if any(has(p) for p in of_cell))
        return "none" if n == 0 else f"all {count}" if n == count else f"{n} of the {count}"

    ways = [f"--r {other} (CDSE has {share(lambda p: p[1] == other)} at {other} m)"]
    if dataset.collection == "CCM":
        in_other_delivery = [{p[2] for p in of_cell if p[0] == "CCM" and p[1] == dataset.resolution and p[2]}
                             for of_cell in parts]  # (a CCM record without a delivery names none to pick)
        everywhere = sorted(set.intersection(*in_other_delivery) - {dataset.delivery}) if in_other_delivery else []
        ways.append(f"-d {everywhere[-1]} (it has all {count} at {dataset.resolution} m)" if everywhere else
                    f"another -d ({share(lambda p: p[0] == 'CCM' and p[1] == dataset.resolution)} in another "
                    f"delivery at {dataset.resolution} m)")
    else:
        ways.append(f"--collection CCM ({share(lambda p: p[0] == 'CCM' and p[1] == dataset.resolution)} there "
                    f"at {dataset.resolution} m)")
    ways.append(f"or --fill-gaps ({dataset.resolution} m files made from another dataset's product of each cell)")
    return head + " Sen2Cor would process their tiles with flat terrain. Ways out: " + "; ".join(ways) + "."


def read_missing_list(path: str | Path, resolution: int) -> MissingList:
    """Sen2Cor's missing-tiles list, parsed; UsageError (exit 2) for a line that is not a cell."""

    # the default cap: Sen2Cor's list names the ~38,000 cells without a DEM, about 1.5 MB
    data = read_input(Path(path).expanduser(), "Sen2Cor missing-tiles list", UsageError)
    missing_list = parse_missing_list(data.decode("utf-8-sig", errors="replace"), str(path), resolution)
    if missing_list.unmatched:
        log.warning("%s: %d line(s) without _DEM.tif (first: %s): Sen2Cor compares whole file names, "
                    "so it does not skip those cells", path, len(missing_list.unmatched), missing_list.unmatched[0])
    return missing_list


def folder_problems(out_dir: Path, plan: Plan, resolution: int) -> dict[str, str | None]:
    """For each geocell's file: None when the folder holds a whole DEM of that cell, else why not."""

    return {state.file_name: dem_problem(out_dir / state.file_name, resolution=resolution, cell=state.geocell)
            for state in plan.cells.values()}


# KML colours are aabbggrr
STATUS_COLOURS = {
    Status.DOWNLOADED: "00c000",  # green
    Status.PRESENT: "c08000",  # blue: already on disk
    Status.SEA: "a0a0a0",  # grey: no DEM in CDSE (open sea)
    Status.FAILED: "0000ff",  # red
    Status.PLANNED: "00ffff",  # yellow: dry run
    Status.GAP: "ff00ff",  # magenta: land without a DEM in this dataset
    Status.FILLED: "80c0ff",  # light orange: filled from another dataset
}
TILE_COLOUR = "0080ff"  # orange outline, no fill
_DISPLAY_TOLERANCE = 1e-5  # degrees (~1 m): enough vertices for the curved edges, no more


def write_kml_report(
    path: Path, footprints: Iterable[Footprint], geocell_status: Mapping[Geocell, Status], resolution: int
) -> None:
    """Write the tiles' footprints and the geocells styled by status to ``path`` (.kml or .kmz).

    ``geocell_status`` maps each cell to its status. A file is written to a temporary
    and renamed (a device or FIFO is written into); UsageError when it cannot be written.
    """

    footprints = list(footprints)
    styles = [
        Style(id=f"cell-{status}", styles=[
            LineStyle(color=f"ff{colour}", width=1.5), PolyStyle(color=f"60{colour}", fill=True, outline=True),
        ])
        for status, colour in STATUS_COLOURS.items()
    ]
    styles.append(Style(id="tile", styles=[
        LineStyle(color=f"ff{TILE_COLOUR}", width=2.5), PolyStyle(color=f"00{TILE_COLOUR}", fill=False),
    ]))
    tiles = []
    for footprint in footprints:
        parts = [shapely.simplify(p, _DISPLAY_TOLERANCE, preserve_topology=True) for p in footprint.parts]
        geometry = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        source = "the official KML" if footprint.source == FootprintSource.KML else "the grid arithmetic"
        tiles.append(Placemark(
            name=footprint.tile, description=f"Sentinel-2 tile {footprint.tile}; footprint from {source}",
            style_url=StyleUrl(url="#tile"), geometry=pygeoif.shape(geometry),
        ))
    cells_by_status: dict[Status, list] = {status: [] for status in STATUS_COLOURS}
    for cell, status in sorted(geocell_status.items()):
        box = shapely.segmentize(cell.polygon(), 0.1)  # parallels drawn as parallels, not chords
        cells_by_status[status].append(Placemark(
            name=cell.name(resolution), description=f"{cell.grid_id}: {status}",
            style_url=StyleUrl(url=f"#cell-{status}"), geometry=pygeoif.shape(box),
        ))
    folders = [Folder(name="Tiles", features=tiles)] + [
        Folder(name=f"Geocells {status} ({len(marks)})", features=marks)
        for status, marks in cells_by_status.items() if marks
    ]
    document = Document(
        name=f"Copernicus DEM {resolution} m geocells for {len(footprints)} Sentinel-2 tiles",
        styles=styles, features=folders,
    )
    xml = KML(features=[document]).to_string(precision=7)
    if Path(path).suffix.lower() == ".kmz":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as kmz:
            kmz.writestr("doc.kml", xml)
        data = buffer.getvalue()
    else:
        data = xml.encode("utf-8")
    try:
        write_report(Path(path), data)  # a regular file replaced atomically; a device or FIFO written into
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot write the KML report ({getattr(exc, 'strerror', None) or exc})") from exc
