"""The plan of a run: which geocell each tile needs, and what becomes of each geocell.

A geocell is planned once for the whole run, however many tiles share it, and not at all
when a complete copy is already in the output folder. The plan is also the record the
summary is written from, so the statuses here are the ones users see.
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
    SEA = "sea"  # the catalogue has no product for it: open sea
    FAILED = "failed"


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
    return [t for t in plan.tiles if any(plan.cells[c].status != Status.PRESENT for c in t.geocells)]


@dataclass(frozen=True)
class OtherProduct:
    """A present file whose recorded product is not the one this run chose: it is fetched again."""

    state: CellState
    recorded_id: str


def _compare_present(state: CellState, product: Product | None) -> OtherProduct | None:
    """A present file against this run's choice (see :func:`mark_to_compare`).

    Confirmed when the catalogue chose its product; kept as it is when the catalogue has nothing
    for the cell (it stays what the user already has); planned again when the catalogue chose
    another product (an earlier run asked for another delivery or collection).
    """
    if product is None or product.id == state.product_id:
        state.confirmed = product is not None
        return None
    other = OtherProduct(state, state.product_id)
    state.product, state.product_id, state.status = product, product.id, Status.PLANNED
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


def mark_to_compare(plan: Plan, confirmed: Callable[[str], bool]) -> int:
    """Present cells whose file is not known to come from this run's dataset are searched too, so
    that a file of another delivery or collection is noticed (``confirmed(file_name)``: known)."""
    plan.compare = {cell for cell, state in plan.cells.items() if state.status == Status.PRESENT
                    and state.product_id is not None and not confirmed(state.file_name)}
    return len(plan.compare)


def cells_to_search(plan: Plan) -> list[Geocell]:
    """Cells neither complete on disk nor known to be sea (and present ones to compare): only
    those need the catalogue."""
    return sorted(cell for cell, state in plan.cells.items()
                  if (state.status == Status.PLANNED and state.product is None) or cell in plan.compare)


def apply_area(plan: Plan, cells: Iterable[Geocell], chosen: dict[Geocell, Product],
               problems: Iterable = ()) -> list["OtherProduct"]:
    """Attach a completed search's answer: each cell its area covered gets its product, or is open sea.

    A cell that already has its product keeps it, whatever its download has come to: every
    search whose area covers a cell lists all of that cell's products, so the first answer
    is already the final choice (and downloads start while other areas are searched).

    ``problems`` are the answer's records that could not be used (``catalogue.BadRecord``). A
    cell named by one fails (its other product may be an older one: not chosen silently in
    its place); when one names no cell at all, every cell left without a product fails
    instead of being called open sea: the record we could not place may be its product.

    Present cells to compare (``plan.compare``) are planned again when the chosen product is
    not the one recorded for them (see :func:`_compare_present`); those are returned, for the log.
    """
    problems = list(problems)
    bad_cells = {p.geocell for p in problems if p.geocell is not None}
    unplaced = any(p.geocell is None for p in problems)
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
            state.status = Status.SEA
    return others



def cells_failed(plan: Plan, cells: Iterable[Geocell], error: str) -> None:
    """A failed search decides nothing: its cells are failed (never sea)."""
    for cell in cells:
        state = plan.cells[cell]
        if state.status in (Status.PLANNED, Status.SEA) and state.product is None:
            state.status, state.error = Status.FAILED, error
