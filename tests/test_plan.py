"""The plan: each geocell once per run, present files skipped, sea and failures told apart."""

from cdse_dem.catalogue import Product, choose
from cdse_dem.grid import Geocell
from cdse_dem.planning import (
    Status,
    TilePlan,
    apply_area,
    apply_other_datasets,
    cells_failed,
    cells_to_search,
    mark_known_sea,
    start_plan,
    tiles_to_search,
)
from cdse_dem.tiles import Entry


def tile(name, cells):
    return TilePlan(Entry(name, "command line", None, tile=name), name, "computed", cells)


def apply_products(plan, tile, products):
    """A search whose area is the tile's cells answered ``products``."""
    apply_area(plan, tile.geocells, choose(products, tile.geocells))


def product(cell, pid):
    return Product(pid, "n", cell, 10, None, None, "2024_1", "", "", "", True)


A, B, C, D = Geocell(49, 7), Geocell(49, 8), Geocell(50, 7), Geocell(50, 8)


def names(cell):
    return f"Copernicus_DSM_30_{cell.grid_id}_DEM.tif"


def test_shared_geocells_planned_once_and_present_ones_skipped():
    t1, t2 = tile("AAAAA", [A, B]), tile("BBBBB", [B, C])
    plan = start_plan([t1, t2], names, lambda n: "old-id" if n == names(C) else None)
    assert list(plan.cells) == [A, B, C]
    assert plan.cells[C].status == Status.PRESENT and plan.cells[C].product_id == "old-id"
    apply_products(plan, t1, [product(A, "a"), product(B, "b"), product(D, "touching")])
    apply_products(plan, t2, [product(B, "b")])
    assert [c.product_id for c in plan.to_fetch()] == ["a", "b"]
    assert D not in plan.cells


def test_tiles_all_present_need_no_search():
    t1, t2 = tile("AAAAA", [A]), tile("BBBBB", [A, B])
    plan = start_plan([t1, t2], names, lambda n: "x" if n == names(A) else None)
    assert tiles_to_search(plan) == [t2]


def test_sea_is_not_failure_and_failed_search_fails_only_unfound_cells():
    t1, t2 = tile("AAAAA", [A, B]), tile("BBBBB", [B, C])
    plan = start_plan([t1, t2], names, lambda n: None)
    apply_products(plan, t1, [product(B, "b")])
    assert plan.cells[A].status == Status.PLANNED and plan.empty == {A}  # sea or a gap: not told yet
    apply_other_datasets(plan, [A], {})  # no other dataset has it either
    cells_failed(plan, t2.geocells, "catalogue down")
    assert plan.cells[A].status == Status.SEA
    assert plan.cells[B].status == Status.PLANNED
    assert plan.cells[C].status == Status.FAILED and plan.cells[C].error == "catalogue down"


def test_a_later_answer_does_not_touch_a_cell_already_decided():
    t1, t2 = tile("AAAAA", [A, B]), tile("BBBBB", [B])
    plan = start_plan([t1, t2], names, lambda n: None)
    apply_products(plan, t1, [product(A, "a"), product(B, "b")])
    plan.cells[B].status = "downloaded"  # its download finished while t2 was being searched
    apply_products(plan, t2, [product(B, "b")])
    assert plan.cells[B].status == "downloaded" and plan.cells[B].product_id == "b"


def test_known_sea_cells_and_present_ones_are_not_searched():
    t1, t2 = tile("AAAAA", [A, B]), tile("BBBBB", [C, D])
    plan = start_plan([t1, t2], names, lambda n: "x" if n == names(A) else None)
    assert mark_known_sea(plan, lambda cell: cell in (A, C)) == [C]  # A is present: not sea
    assert plan.cells[C].status == Status.SEA and plan.cells[A].status == Status.PRESENT
    assert cells_to_search(plan) == [B, D]
