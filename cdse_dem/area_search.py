"""Running a run's catalogue searches: areas side by side, cells to the fetcher as each answers.

The areas come from :mod:`cdse_dem.search_areas`. Each answer goes to the plan and the
fetcher at once, so downloads start while other areas are still searched. Users still see
one block of lines per tile, written when the last of its cells is decided. A search that
matches more products than ``$skip`` can page through is split in two and searched again; a
failed search fails its cells (it decides nothing, so none of them is called sea).
"""

import logging

from cdse_dem import planning as plan_mod
from cdse_dem.background import answers
from cdse_dem.catalogue import Answer, TooManyResults, parse_products, problem_lines
from cdse_dem.errors import DemError, Interrupted
from cdse_dem.footprint import FootprintSource
from cdse_dem.geocells import Geocell
from cdse_dem.search_areas import SearchArea, plan_search_areas, products_of_area

log = logging.getLogger(__name__)


def search_all(plan: plan_mod.Plan, catalogue, dataset_text: str, fetcher, threads: int) -> int:
    """Search the catalogue for every cell of ``plan`` still undecided; the number of searches made.

    Searches run on :func:`cdse_dem.background.answers` workers, which a stopped run never
    waits for: once ``catalogue.stop`` is set (by the run's stop, or here on the way out) no
    search not yet sent is sent, and this returns within a fraction of a second, leaving the
    cells not yet answered ``planned``. A stop during a login (the first product found) raises
    Interrupted.
    """
    cells = plan_mod.cells_to_search(plan)
    areas = plan_search_areas(cells, catalogue.catalogue_url, dataset_text)
    tiles = _TileLines(plan, cells)
    tiles.report_ready()
    if not areas:
        return 0
    log.info("Searching the catalogue for %d geocell(s) in %d search(es)", len(cells), len(areas))
    searches = 0

    def work(area: SearchArea) -> list[tuple[SearchArea, Answer | None, DemError | None]]:
        return _search(catalogue, area, dataset_text)

    try:
        for _, results, error in answers(work, areas, threads, catalogue.stop):
            if error is not None:
                raise error  # a stop, or a bug: _search turns service failures into results
            # the results are the leaves of the area's halving: n answers took 2n - 1 searches
            searches += 2 * len(results) - 1
            for area, answer, failure in results:
                if failure is not None:
                    _failed(plan, tiles, area, str(failure))
                    continue
                for line in problem_lines(answer.problems):
                    log.warning("CDSE catalogue answered %s", line)
                others = plan_mod.apply_area(plan, area.cells, products_of_area(area, answer.products),
                                             answer.problems)
                for other in others:
                    log.info("%s came from product %s; this run chose %s: downloading it again",
                             other.state.file_name, other.recorded_id, other.state.product_id)
                if fetcher is not None:
                    fetcher.add([plan.cells[c] for c in sorted(area.cells)
                                 if plan.cells[c].status == plan_mod.Status.PLANNED])
                tiles.decided(area.cells)
    finally:
        catalogue.stop.set()  # searches still queued (an error, a Ctrl-C) are never sent
    return searches


def _search(catalogue, area: SearchArea, dataset_text: str) -> list[tuple[SearchArea, Answer | None, DemError | None]]:
    """The area's answer; an area with more matches than ``$skip`` reaches is searched in halves."""
    try:
        records = catalogue.search(area.filter_text(dataset_text))
    except TooManyResults as exc:
        try:
            halves = area.split()
        except ValueError:
            return [(area, None, exc)]
        log.info("%s: searching its area in two halves", exc)
        return [result for half in halves for result in _search(catalogue, half, dataset_text)]
    except Interrupted:
        raise  # the run stops: no answer, and not a failure of the area's cells
    except DemError as exc:
        return [(area, None, exc)]
    return [(area, parse_products(records), None)]


def _failed(plan, tiles: "_TileLines", area: SearchArea, error: str) -> None:
    plan_mod.cells_failed(plan, area.cells, error)
    tiles.failed(area.cells, error)


class _TileLines:
    """The per-tile lines users saw when each tile had its own search, written as tiles complete."""

    def __init__(self, plan: plan_mod.Plan, searched: list[Geocell]):
        self.plan = plan
        wanted = set(searched)
        self.tiles = {id(t): t for t in plan_mod.tiles_to_search(plan)}
        self.pending = {key: {c for c in t.geocells if c in wanted} for key, t in self.tiles.items()}
        self.by_cell: dict[Geocell, list] = {}
        for tile in self.tiles.values():
            for cell in self.pending[id(tile)]:
                self.by_cell.setdefault(cell, []).append(tile)

    def report_ready(self) -> None:
        """Tiles decided without a search (every cell present or known to be sea)."""
        for key in [k for k, cells in self.pending.items() if not cells]:
            self._report(self.tiles.pop(key), searched=False)

    def decided(self, cells) -> None:
        for tile in self._touched(cells):
            pending = self.pending[id(tile)]
            pending.difference_update(cells)
            if not pending and id(tile) in self.tiles:
                self._report(self.tiles.pop(id(tile)), searched=True)

    def failed(self, cells, error: str) -> None:
        for tile in self._touched(cells):
            if id(tile) in self.tiles:
                self._header(self.tiles.pop(id(tile)))
                log.error("Tile %s: %s", tile.tile, error)
            tile.error = tile.error or error

    def _touched(self, cells) -> list:
        seen: dict[int, object] = {}
        for cell in cells:
            for tile in self.by_cell.get(cell, ()):
                seen[id(tile)] = tile
        return list(seen.values())

    def _header(self, tile) -> None:
        log.info("Tile_ID: %s", tile.tile)
        log.info("Tile Found (footprint: %s)",
                 "tiling KML" if tile.footprint_source == FootprintSource.KML else "computed")

    def _report(self, tile, *, searched: bool) -> None:
        self._header(tile)
        if searched:
            log.info("DEM_LIST from url retrieved")
        sea = [c.grid_id for c in tile.geocells if self.plan.cells[c].status == plan_mod.Status.SEA]
        if sea:
            log.info("No DEM in CDSE (open sea) for %d of %d geocells%s: %s", len(sea), len(tile.geocells),
                     "" if searched else " (found by an earlier run)", " ".join(sea))
