"""The plan of a run: which geocell each tile needs, and what becomes of each geocell.

A geocell is planned once for the whole run, however many tiles share it, and not at all
when a complete copy is already in the output folder. The plan is also the record the
summary is written from, so the statuses here are the ones users see.

A cell the run's dataset has no product for is not open sea yet: GLO-30 lacks land cells that
GLO-90 has, and a delivery may lack cells another has. Such a cell is *empty* until the catalogue
is asked once more for every other Copernicus DEM dataset (:func:`apply_other_datasets`): then
it is ``sea`` (no product anywhere) or a ``gap`` (Sen2Cor would process its tiles with flat
terrain), which ``--fill-gaps`` fills from another dataset's product (``filled``).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from cdse_dem.catalogue import Product
from cdse_dem.grid import FootprintSource, Geocell
from cdse_dem.tiles import Entry


class Status(StrEnum):
    """What became of a geocell; the values are the words the summary, its JSON and the plan show."""

    PLANNED = "planned"  # to be downloaded (where a dry run, or a run stopped early, leaves it)
    DOWNLOADED = "downloaded"
    PRESENT = "present"  # already complete in the output folder
    SEA = "sea"  # no Copernicus DEM product in any dataset: open sea
    FAILED = "failed"
    GAP = "gap"  # no product in the run's dataset, but another dataset has one: land without a DEM
    FILLED = "filled"  # a gap filled from another dataset's product (by this run or an earlier one)


# The statuses of a cell whose whole DEM file is in the folder, and of a cell Sen2Cor has no need of.
WHOLE = frozenset({Status.DOWNLOADED, Status.PRESENT, Status.FILLED})
NO_DEM_NEEDED = frozenset({Status.SEA})


def complete(statuses: Iterable[Status | str]) -> bool:
    """Whether cells of these statuses leave nothing missing: each is a whole DEM in the folder
    (downloaded, present, filled) or open sea. A ``gap`` is missing (land without a DEM), as is a
    ``failed`` or a ``planned`` cell. The one condition for "a tile is complete" (the GIPP lines,
    the outputs made from a complete tile)."""
    return all(status in WHOLE or status in NO_DEM_NEEDED for status in statuses)


@dataclass
class CellState:
    """One geocell of the run and what happened to it."""

    geocell: Geocell
    file_name: str
    status: Status = Status.PLANNED
    product: Product | None = None
    product_id: str | None = None
    file: str | None = None
    bytes: int = 0
    error: str | None = None
    confirmed: bool = False  # a present file the catalogue just confirmed as this run's product
    datasets: tuple[str, ...] = ()  # a gap (or a fill): the other datasets that have a product for it
    fill_from: str | None = None  # the dataset of ``product`` when the file is (to be) filled from it


@dataclass
class TilePlan:
    entry: Entry
    tile: str
    footprint_source: FootprintSource
    geocells: list[Geocell]
    footprint: object = None  # the Footprint, for the KML report
    error: str | None = None
    # why each geocell is this tile's (sen2cor.Reason: "footprint" or "sen2cor"); per tile, since a
    # cell one tile overlaps may be only in another tile's Sen2Cor rectangle
    reasons: dict[Geocell, str] = field(default_factory=dict)


@dataclass
class Plan:
    tiles: list[TilePlan]
    cells: dict[Geocell, CellState] = field(default_factory=dict)
    # present cells whose recorded product is to be compared with this run's choice (see mark_to_compare)
    compare: set[Geocell] = field(default_factory=set)
    # cells the run's dataset has no product for: sea or gap, once other datasets are asked
    empty: set[Geocell] = field(default_factory=set)

    def to_fetch(self) -> list[CellState]:
        return [c for c in self.cells.values() if c.status == Status.PLANNED and c.product is not None]

    def count(self, status: Status) -> int:
        return sum(1 for c in self.cells.values() if c.status == status)


def start_plan(tiles: list[TilePlan], file_name: Callable[[Geocell], str],
               recorded_id: Callable[[str], str | None]) -> Plan:
    """Every geocell of every tile once; those complete on disk are ``present`` already.

    ``recorded_id(file_name)`` gives the product Id of a file that is complete in the output
    folder (present under its final name and recorded in the JSON), else None.
    """
    plan = Plan(tiles)
    for tile in tiles:
        for cell in tile.geocells:
            if cell in plan.cells:
                continue
            name = file_name(cell)
            state = CellState(cell, name)
            known = recorded_id(name)
            if known is not None:
                state.status, state.product_id = Status.PRESENT, known
            plan.cells[cell] = state
    return plan


def tiles_to_search(plan: Plan) -> list[TilePlan]:
    """Tiles with a geocell not yet on disk: those the catalogue answers for, told tile by tile."""
    return [t for t in plan.tiles if any(plan.cells[c].status not in (Status.PRESENT, Status.FILLED)
                                         for c in t.geocells)]


@dataclass(frozen=True)
class OtherProduct:
    """A present file whose recorded product is not the one this run chose: it is fetched again."""

    state: CellState
    recorded_id: str
    filled_from: str | None = None  # the file was filled from this dataset: the cell's own product replaces it


def _compare_present(state: CellState, product: Product | None) -> OtherProduct | None:
    """A present file against this run's choice (see :func:`mark_to_compare`).

    Confirmed when the catalogue chose its product; kept as it is when the catalogue has nothing
    for the cell (it stays what the user already has); planned again when the catalogue chose
    another product (an earlier run asked for another delivery or collection).
    """
    if product is None or product.id == state.product_id:
        state.confirmed = product is not None
        return None
    other = OtherProduct(state, state.product_id, state.fill_from)
    state.product, state.product_id, state.status = product, product.id, Status.PLANNED
    state.fill_from = None  # a filled file is replaced by the cell's own product
    return other


def tile_counts(plan: Plan, tile: TilePlan) -> dict[Status, int]:
    counts = dict.fromkeys(Status, 0)
    for cell in tile.geocells:
        counts[plan.cells[cell].status] += 1
    return counts


def mark_known_sea(plan: Plan, is_known_sea: Callable[[Geocell], bool]) -> list[Geocell]:
    """Cells an earlier run's completed search found to be open sea: ``sea`` without a new search."""
    known = [cell for cell, state in plan.cells.items()
             if state.status == Status.PLANNED and state.product is None and is_known_sea(cell)]
    for cell in known:
        plan.cells[cell].status = Status.SEA
    return known


def mark_filled(plan: Plan, filled_from: Callable[[str], str | None]) -> list[CellState]:
    """Present files an earlier run filled (``filled_from(file_name)``: the dataset, or None): ``filled``.

    They are whole DEMs, kept as they are; each is compared with the catalogue as any file of
    another dataset is (:func:`mark_to_compare`), so the cell's own product replaces it once
    CDSE has one.
    """
    kept = []
    for state in plan.cells.values():
        source = filled_from(state.file_name) if state.status == Status.PRESENT else None
        if source is not None:
            state.status, state.fill_from = Status.FILLED, source
            kept.append(state)
    return kept


def mark_to_compare(plan: Plan, confirmed: Callable[[str], bool]) -> int:
    """Present cells whose file is not known to come from this run's dataset are searched too, so
    that a file of another delivery or collection is noticed (``confirmed(file_name)``: known)."""
    plan.compare = {cell for cell, state in plan.cells.items() if state.status in (Status.PRESENT, Status.FILLED)
                    and state.product_id is not None and not confirmed(state.file_name)}
    return len(plan.compare)


def cells_to_search(plan: Plan) -> list[Geocell]:
    """Cells neither complete on disk nor known to be sea (and present ones to compare): only
    those need the catalogue."""
    return sorted(cell for cell, state in plan.cells.items()
                  if (state.status == Status.PLANNED and state.product is None) or cell in plan.compare)


def apply_area(plan: Plan, cells: Iterable[Geocell], chosen: dict[Geocell, Product],
               bad_cells: Iterable[Geocell] = (), unplaced: bool = False) -> list["OtherProduct"]:
    """Attach a completed search's answer: each cell its area covered gets its product, or is open sea.

    A cell that already has its product keeps it, whatever its download has come to: every
    search whose area covers a cell lists all of that cell's products, so the first answer
    is already the final choice (and downloads start while other areas are searched).

    ``bad_cells`` are the cells the answer's unusable records named (``catalogue.Answer``): each
    fails (its other product may be an older one: not chosen silently in its place); when one
    named no cell at all (``unplaced``), every cell left without a product fails instead of
    being called open sea: the record we could not place may be its product.

    Present cells to compare (``plan.compare``) are planned again when the chosen product is
    not the one recorded for them (see :func:`_compare_present`); those are returned, for the log.
    """
    bad_cells = set(bad_cells)
    others: list[OtherProduct] = []
    for cell in cells:
        state = plan.cells[cell]
        if cell in plan.compare:
            plan.compare.discard(cell)  # compared once, even when several areas reach it
            other = _compare_present(state, chosen.get(cell))
            if other is not None:
                others.append(other)
            continue
        if state.status == Status.PRESENT or state.product is not None:
            continue
        product = chosen.get(cell)
        if cell in bad_cells:
            state.status, state.error = Status.FAILED, "the CDSE catalogue answered a record for it that cannot be used"
        elif product is not None:
            state.product, state.product_id = product, product.id
            state.status, state.error = Status.PLANNED, None
        elif unplaced:
            state.status, state.error = Status.FAILED, "the CDSE catalogue answered products that could not be placed"
        elif state.status != Status.FAILED:
            plan.empty.add(cell)  # sea or gap: other datasets are asked next (apply_other_datasets)
    return others


def apply_other_datasets(plan: Plan, cells: Iterable[Geocell], found: dict[Geocell, list[Product]],
                         bad_cells: Iterable[Geocell] = (), unplaced: bool = False) -> None:
    """Attach the answer of the search for other datasets: each empty cell it covered is ``sea``
    when no Copernicus DEM product exists for it, a ``gap`` (with the datasets that have it) when
    one does; a record that could not be used fails the cells it may belong to, as in
    :func:`apply_area`.
    """
    bad_cells = set(bad_cells)
    for cell in cells:
        if cell not in plan.empty:
            continue
        plan.empty.discard(cell)
        state = plan.cells[cell]
        products = found.get(cell, [])
        if cell in bad_cells or (unplaced and not products):
            state.status = Status.FAILED
            state.error = "the CDSE catalogue answered records of other datasets that cannot be used"
        elif products:
            state.status, state.datasets = Status.GAP, tuple(sorted({p.dataset for p in products}))
        else:
            state.status = Status.SEA


def plan_fill(state: CellState, source: Product) -> None:
    """A gap to fill from ``source`` (another dataset's product of the cell): planned, to fetch."""
    state.product, state.product_id, state.fill_from = source, source.id, source.dataset
    state.status, state.error = Status.PLANNED, None



def cells_failed(plan: Plan, cells: Iterable[Geocell], error: str) -> None:
    """A failed search decides nothing: its cells are failed (never sea, never a gap)."""
    for cell in cells:
        state = plan.cells[cell]
        if state.status in (Status.PLANNED, Status.SEA, Status.GAP) and state.product is None:
            state.status, state.error = Status.FAILED, error
        plan.empty.discard(cell)
