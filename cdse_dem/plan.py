"""The plan of a run: which geocell each tile needs, and what becomes of each geocell.

A geocell is planned once for the whole run, however many tiles share it, and not at all
when a complete copy is already in the output folder. The plan is also the record the
summary is written from, so the statuses here are the ones users see.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cdse_dem.catalogue import Product
from cdse_dem.entries import Entry
from cdse_dem.geocells import Geocell

PLANNED, DOWNLOADED, PRESENT, SEA, FAILED = "planned", "downloaded", "present", "sea", "failed"


@dataclass
class CellState:
    """One geocell of the run and what happened to it."""

    geocell: Geocell
    file_name: str
    status: str = PLANNED
    product: Product | None = None
    product_id: str | None = None
    file: str | None = None
    bytes: int = 0
    error: str | None = None


@dataclass
class TilePlan:
    entry: Entry
    tile: str
    footprint_source: str
    geocells: list[Geocell]
    footprint: object = None  # the Footprint, for the KML report
    error: str | None = None


@dataclass
class Plan:
    tiles: list[TilePlan]
    cells: dict[Geocell, CellState] = field(default_factory=dict)

    def to_fetch(self) -> list[CellState]:
        return [c for c in self.cells.values() if c.status == PLANNED and c.product is not None]

    def count(self, status: str) -> int:
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
                state.status, state.product_id = PRESENT, known
            plan.cells[cell] = state
    return plan


def tiles_to_search(plan: Plan, *, compare_present: bool = False) -> list[TilePlan]:
    """Tiles with a geocell not yet on disk: only those need the catalogue.

    With ``compare_present``, every tile: the product a present file came from is compared with
    the one this run chooses (another delivery or collection than the earlier run's).
    """
    if compare_present:
        return list(plan.tiles)
    return [t for t in plan.tiles if any(plan.cells[c].status != PRESENT for c in t.geocells)]


KEEP, REFETCH = "keep", "refetch"


def present_decision(recorded_id: str, chosen_id: str | None, keep_existing: bool) -> str:
    """A file already present, recorded as coming from ``recorded_id``, against this run's choice.

    Refetched when the catalogue chose another product (an earlier run asked for another
    delivery or collection), unless ``--keep-existing``; kept when the catalogue has nothing
    for the cell (it stays what the user already has).
    """
    if chosen_id is None or chosen_id == recorded_id or keep_existing:
        return KEEP
    return REFETCH


@dataclass(frozen=True)
class OtherProduct:
    """A present file whose recorded product is not the one this run chose."""

    state: CellState
    recorded_id: str
    decision: str  # KEEP (--keep-existing) or REFETCH


def apply_products(plan: Plan, tile: TilePlan, products: Iterable[Product],
                   keep_existing: bool = False) -> list[OtherProduct]:
    """Attach a tile's catalogue answer: its cells get their product, or become open sea.

    A cell that already has its product keeps it, whatever its download has come to: every
    search whose area touches a cell lists all of that cell's products, so the first answer
    is already the final choice (and downloads start while other tiles are searched).
    A present cell is planned again when the chosen product is not the one recorded for it
    (see :func:`present_decision`); those that differ are returned, for the log.
    """
    from cdse_dem.catalogue import choose

    chosen = choose(products, tile.geocells)
    others: list[OtherProduct] = []
    for cell in tile.geocells:
        state = plan.cells[cell]
        if state.status == PRESENT and state.product is None and state.product_id is not None:
            product = chosen.get(cell)
            if product is not None and product.id != state.product_id:
                decision = present_decision(state.product_id, product.id, keep_existing)
                others.append(OtherProduct(state, state.product_id, decision))
                if decision == REFETCH:
                    state.product, state.product_id, state.status = product, product.id, PLANNED
            state.product = state.product or product  # compared once, even when several tiles share it
            continue
        if state.status == PRESENT or state.product is not None:
            continue
        product = chosen.get(cell)
        if product is not None:
            state.product, state.product_id = product, product.id
            state.status, state.error = PLANNED, None
        elif state.status != FAILED:
            state.status = SEA
    return others


def search_failed(plan: Plan, tile: TilePlan, error: str) -> None:
    """A tile whose search failed: its cells that no other tile found are failed."""
    tile.error = error
    for cell in tile.geocells:
        state = plan.cells[cell]
        if state.status in (PLANNED, SEA) and state.product is None:
            state.status, state.error = FAILED, error


def tile_counts(plan: Plan, tile: TilePlan) -> dict[str, int]:
    counts = {s: 0 for s in (DOWNLOADED, PRESENT, SEA, FAILED, PLANNED)}
    for cell in tile.geocells:
        counts[plan.cells[cell].status] += 1
    return counts
