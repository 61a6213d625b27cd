"""A run's catalogue searches: by area, in parallel, each answer handed on as it arrives.

Work in threads that an interrupted run never waits for, and the stop flag that interrupts it.

``concurrent.futures`` joins its worker threads when the interpreter exits, and its
``shutdown`` runs every queued item first: a stop during slow catalogue searches would
wait for all of them and their retries. These workers are daemon threads that take no new
item once ``stop`` is set, so the run ends as soon as the caller's thread returns; a request
already on the wire is simply dropped (with the process, or when it ends by itself).

A run is stopped from outside (the caller's ``threading.Event``, which the command line
sets on SIGINT/SIGTERM) and from inside (the searches are over; a fatal error stops the
downloads). :class:`Stop` gives each part of a run a flag of its own that the outer one
sets too, without ever setting the caller's event.

Running a run's catalogue searches: areas side by side, cells to the fetcher as each answers.

The areas come from :mod:`cdse_dem.catalogue`. Each answer goes to the plan and the
fetcher at once, so downloads start while other areas are still searched. Users still see
one block of lines per tile, written when the last of its cells is decided. A search that
matches more products than ``$skip`` can page through is split in two and searched again; a
failed search fails its cells (it decides nothing, so none of them is called sea).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from cdse_dem import planning
from cdse_dem.catalogue import (
    OTHER_DATASETS_INSET,
    OTHER_DATASETS_SELECT,
    Answer,
    Dataset,
    SearchArea,
    TooManyResults,
    fill_source,
    other_datasets_filter,
    plan_search_areas,
)
from cdse_dem.errors import DemError, Interrupted
from cdse_dem.grid import FootprintSource, Geocell
from cdse_dem.report import gap_message

log = logging.getLogger(__name__)


T = TypeVar("T")
R = TypeVar("R")
POLL = 0.05  # seconds; how often a waiting caller looks at the stop flag (a stop ends its wait this late)
PARENT_POLL = 0.05  # seconds; how late a wait notices that the outer flag was set


class Stop:
    """A stop flag (``is_set``, ``set``, ``wait``, as ``threading.Event``) that is also set once
    ``parent`` is.

    Setting it never sets the parent: the end of the searches, or a fatal download error,
    stops that part of the run and leaves the caller's event alone. A wait ends at once when
    this flag is set, and within ``PARENT_POLL`` when the parent is.
    """

    def __init__(self, parent: threading.Event | Stop | None = None):
        self._own = threading.Event()
        self._parent = parent

    def set(self) -> None:
        self._own.set()

    def is_set(self) -> bool:
        if self._own.is_set():
            return True
        if self._parent is not None and self._parent.is_set():
            self._own.set()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        if self._parent is None:
            return self._own.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            step = PARENT_POLL if deadline is None else min(PARENT_POLL, deadline - time.monotonic())
            if step <= 0:
                return False
            self._own.wait(step)
        return True


def interruptible_sleep(stop: threading.Event | Stop) -> Callable[[float], None]:
    """A ``time.sleep`` for retry loops that raises Interrupted as soon as ``stop`` is set."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted("stopped while waiting to try again")

    return sleep


def call_unless_stopped(call: Callable[[], R], stop: threading.Event | Stop,
                        abandoned: Callable[[R], None] | None = None) -> R:
    """``call()`` run in a daemon thread and waited for; Interrupted when ``stop`` is set first.

    For calls that may block longer than a stop may wait (a login whose identity service hangs
    for its 30 s read timeout). A result that arrives after the caller gave up goes to
    ``abandoned`` (a login is logged out again), so nothing it opened is left behind.
    """
    answer: queue.SimpleQueue = queue.SimpleQueue()
    lock = threading.Lock()
    gave_up = False

    def target() -> None:
        try:
            value = call()
        except BaseException as exc:  # handed to the caller, never lost in a thread
            answer.put((None, exc))
            return
        with lock:
            late = gave_up
            if not late:
                answer.put((value, None))
        if late and abandoned is not None:
            abandoned(value)

    threading.Thread(target=target, name="interruptible", daemon=True).start()
    while True:
        try:
            value, exc = answer.get(timeout=PARENT_POLL)
        except queue.Empty:
            if not stop.is_set():
                continue
            with lock:
                if answer.empty():
                    gave_up = True
                    raise Interrupted("stopped while waiting for the answer") from None
            continue
        if exc is not None:
            raise exc
        return value


def answers(work: Callable[[T], R], items: Iterable[T], threads: int,
            stop: threading.Event | Stop) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """``(item, result, None)`` or ``(item, None, exception)`` for each item, as each finishes.

    At most ``threads`` items run at once. Items not started when ``stop`` is set are never
    started, and the caller stops waiting within ``POLL``; the caller sets ``stop`` when it
    leaves early (an exception).
    """
    todo: queue.SimpleQueue = queue.SimpleQueue()
    done: queue.SimpleQueue = queue.SimpleQueue()
    count = 0
    for item in items:
        todo.put(item)
        count += 1

    def worker() -> None:
        while not stop.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((item, work(item), None))
            except BaseException as exc:  # handed to the caller, never lost in a thread
                done.put((item, None, exc))

    for n in range(min(threads, count)):
        threading.Thread(target=worker, name=f"search-{n}", daemon=True).start()
    for _ in range(count):
        while True:
            if stop.is_set():
                return
            try:
                yield done.get(timeout=POLL)
                break
            except queue.Empty:
                pass


def search_all(plan: planning.Plan, catalogue, dataset: Dataset, fetcher, threads: int, *,
               fill_gaps: bool = False) -> int:
    """Search the catalogue for every cell of ``plan`` still undecided; the number of searches made.

    First ``dataset`` itself, by area. The cells it has no product for are then asked about once
    more, in every other Copernicus DEM dataset (one batch of area searches, shrunk inside their
    cells): open sea, or a gap. With ``fill_gaps`` each gap's source product (see
    :func:`cdse_dem.catalogue.fill_source`) is searched for whole in its own dataset, one batch
    per source dataset, and handed to the fetcher to fill the cell.

    Searches run on :func:`cdse_dem.search.answers` workers, which a stopped run never
    waits for: once ``catalogue.stop`` is set (by the run's stop, or here on the way out) no
    search not yet sent is sent, and this returns within a fraction of a second, leaving the
    cells not yet answered ``planned``. A stop during a login (the first product found) raises
    Interrupted.
    """
    cells = planning.cells_to_search(plan)
    tiles = _TileLines(plan, cells)
    tiles.report_ready()
    if not cells:
        return 0
    searches = 0
    text = dataset.filter_text()

    def own_answer(area: SearchArea, answer: Answer) -> None:
        others = planning.apply_area(plan, area.cells, answer.products, answer.bad_cells, answer.unplaced)
        for other in others:
            if other.filled_from:
                log.info("%s was filled from %s; CDSE now has its own product %s in %s: replacing the filled "
                         "file", other.state.file_name, other.filled_from, other.state.product_id, dataset.label)
            else:
                log.info("%s came from product %s; this run chose %s: downloading it again",
                         other.state.file_name, other.recorded_id, other.state.product_id)
        _to_fetch(plan, fetcher, area.cells)
        tiles.decided(area.cells - plan.empty)

    found: dict[Geocell, list] = {}

    def others_answer(area: SearchArea, answer: Answer) -> None:
        found.update(answer.found)
        planning.apply_other_datasets(plan, area.cells, answer.found, answer.bad_cells, answer.unplaced)
        tiles.decided(area.cells)

    try:
        areas = plan_search_areas(cells, catalogue.catalogue_url, text)
        log.info("Searching the catalogue for %d geocell(s) in %d search(es)", len(cells), len(areas))
        searches += _searches(plan, catalogue, areas, text, None, threads, tiles, own_answer)
        empty = sorted(plan.empty)
        if empty and not catalogue.stop.is_set():
            others_text = other_datasets_filter(dataset.model)
            areas = plan_search_areas(empty, catalogue.catalogue_url, others_text, inset=OTHER_DATASETS_INSET,
                                      select=OTHER_DATASETS_SELECT)
            log.info("%s has no product for %d geocell(s): asking whether any other Copernicus DEM dataset has "
                     "them (open sea, or a gap in the DEM) in %d search(es)", dataset.label, len(empty), len(areas))
            searches += _searches(plan, catalogue, areas, others_text, OTHER_DATASETS_SELECT, threads, tiles,
                                  others_answer)
        gaps = [state for state in plan.cells.values() if state.status == planning.Status.GAP]
        if gaps:
            log.warning("%s", gap_message(gaps, dataset, found, fill=fill_gaps))
        if gaps and fill_gaps and not catalogue.stop.is_set():
            searches += _search_fill_sources(plan, catalogue, dataset, gaps, found, fetcher, threads, tiles)
    finally:
        catalogue.stop.set()  # searches still queued (an error, a Ctrl-C) are never sent
    return searches


def _search_fill_sources(plan, catalogue, dataset: Dataset, gaps, found, fetcher, threads: int, tiles) -> int:
    """Each gap's source product, searched for whole (size, checksums) in its own dataset: one batch of
    area searches per source dataset; the cells then go to the fetcher, to be filled."""
    by_source: dict[Dataset, list[Geocell]] = {}
    for state in gaps:
        source = fill_source(found.get(state.geocell, ()), dataset.resolution, dataset.collection)
        if source is None:
            continue
        by_source.setdefault(dataset.of(source), []).append(state.geocell)
    searches = 0
    for source_dataset, cells in sorted(by_source.items(), key=lambda item: item[0].label):
        text = source_dataset.filter_text()

        def answered(area: SearchArea, answer: Answer) -> None:
            for cell, product in answer.products.items():
                if plan.cells[cell].status == planning.Status.GAP:
                    planning.plan_fill(plan.cells[cell], product)
            _to_fetch(plan, fetcher, area.cells)

        log.info("--fill-gaps: filling %d gap geocell(s) from %s: %s", len(cells), source_dataset.label,
                 " ".join(cell.grid_id for cell in sorted(cells)))
        areas = plan_search_areas(cells, catalogue.catalogue_url, text)
        searches += _searches(plan, catalogue, areas, text, None, threads, tiles, answered)
    return searches


def _to_fetch(plan: planning.Plan, fetcher, cells) -> None:
    """The answered cells to download, tile by tile in the plan's order: each tile is whole (and its
    outputs can be made, cdse_dem.processors) as early as can be, not all of them at the end."""
    if fetcher is not None:
        wanted = set(cells)
        fetcher.add([state for cell, state in plan.cells.items() if cell in wanted
                     and state.status == planning.Status.PLANNED and state.product is not None])


def _searches(plan, catalogue, areas: list[SearchArea], text: str, select: str | None, threads: int,
              tiles: _TileLines, answered: Callable[[SearchArea, Answer], None]) -> int:
    """``areas`` searched side by side, each answer handed to ``answered`` as it comes (a failed
    search fails its cells); the number of searches made."""
    searches = 0

    def work(area: SearchArea) -> list[tuple[SearchArea, Answer | None, DemError | None]]:
        return _search(catalogue, area, text, select)

    for _, results, error in answers(work, areas, threads, catalogue.stop):
        if error is not None:
            raise error  # a stop, or a bug: _search turns service failures into results
        # the results are the leaves of the area's halving: n answers took 2n - 1 searches
        searches += 2 * len(results) - 1
        for area, answer, failure in results:
            if failure is not None:
                _failed(plan, tiles, area, str(failure))
                continue
            for line in answer.problem_lines():
                log.warning("CDSE catalogue answered %s", line)
            answered(area, answer)
    return searches


def _search(catalogue, area: SearchArea, dataset_text: str,
            select: str | None = None) -> list[tuple[SearchArea, Answer | None, DemError | None]]:
    """The area's answer; an area with more matches than ``$skip`` reaches is searched in halves."""
    answer = Answer(area.cells)
    try:
        for page in catalogue.pages(area.filter_text(dataset_text), select):
            answer.add(page)
    except TooManyResults as exc:
        try:
            halves = area.split()
        except ValueError:
            return [(area, None, exc)]
        log.info("%s: searching its area in two halves", exc)
        return [result for half in halves for result in _search(catalogue, half, dataset_text, select)]
    except Interrupted:
        raise  # the run stops: no answer, and not a failure of the area's cells
    except DemError as exc:
        return [(area, None, exc)]
    return [(area, answer, None)]


def _failed(plan, tiles: _TileLines, area: SearchArea, error: str) -> None:
    planning.cells_failed(plan, area.cells, error)
    tiles.failed(area.cells, error)


class _TileLines:
    """The per-tile lines users saw when each tile had its own search, written as tiles complete."""

    def __init__(self, plan: planning.Plan, searched: list[Geocell]):
        self.plan = plan
        wanted = set(searched)
        self.tiles = {id(t): t for t in planning.tiles_to_search(plan)}
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
        sea = [c.grid_id for c in tile.geocells if self.plan.cells[c].status == planning.Status.SEA]
        if sea:
            log.info("No DEM in CDSE (open sea) for %d of %d geocells%s: %s", len(sea), len(tile.geocells),
                     "" if searched else " (found by an earlier run)", " ".join(sea))
