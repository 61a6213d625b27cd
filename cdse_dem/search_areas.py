"""Covering the wanted geocells with few catalogue searches: the pure part.

One search per tile costs a round trip per tile (0.3–2 s each on CDSE). The wanted cells of
a whole run are instead grouped into lon/lat rectangles of whole cells, and the rectangles
packed into searches: one ``$filter`` holds an ``or`` of ``Intersects`` clauses, one per
rectangle, as long as the URL stays short and the search stays about one page. A search's
answer decides exactly the wanted cells its rectangles cover: a cell with a product gets
it, a covered cell without one is open sea. ``Intersects`` also returns the cells that only
touch a rectangle's edge; their products count only for cells the search covers.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import quote

import shapely

from cdse_dem.catalogue import Product, choose, intersects, search_url
from cdse_dem.geocells import Geocell

# The bound on a search URL: gateways and proxies refuse longer request lines.
MAX_URL_LENGTH = 4000
# A rectangle's horizontal edges may be read as great circles by the service: at 20° of
# longitude an edge bows at most 0.44° (at 45° of latitude), less than a cell, so every
# cell of the rectangle is still intersected however the service reads it.
MAX_RECT_WIDTH = 20
# Cells one search may reach (its own and their touching neighbours, whose products
# Intersects also returns): at most about 2.5 pages of $top=1000, so a country is a few
# searches that run side by side rather than one long chain of pages; far below what
# $skip (at most 10,000) can page through, since a cell has at most two products.
MAX_TOUCHED_CELLS = 2500


@dataclass(frozen=True, order=True)
class Rect:
    """Whole cells from (south, west) to (north, east), edges on degree lines (east/north exclusive)."""

    south: int
    west: int
    north: int
    east: int

    def cells(self) -> list[Geocell]:
        return [Geocell(lat, lon) for lat in range(self.south, self.north) for lon in range(self.west, self.east)]

    def touched(self) -> set[tuple[int, int]]:
        """The cells Intersects may answer for: the rectangle's and those touching its edges."""
        return {(lat, (lon + 180) % 360 - 180)
                for lat in range(max(self.south - 1, -90), min(self.north + 1, 90))
                for lon in range(self.west - 1, self.east + 1)}

    def polygon(self) -> shapely.Polygon:
        """The rectangle as a lon/lat box (its ring counter-clockwise from the south-east corner)."""
        return shapely.box(self.west, self.south, self.east, self.north)

    def clause(self) -> str:
        return intersects(self.polygon())

    def halves(self) -> "tuple[Rect, Rect]":
        """Two rectangles covering this one, cut across its longer side."""
        if self.east - self.west >= self.north - self.south:
            middle = (self.west + self.east) // 2
            return Rect(self.south, self.west, self.north, middle), Rect(self.south, middle, self.north, self.east)
        middle = (self.south + self.north) // 2
        return Rect(self.south, self.west, middle, self.east), Rect(middle, self.west, self.north, self.east)


@dataclass(frozen=True)
class SearchArea:
    """The rectangles of one search and the wanted cells its answer decides."""

    rects: tuple[Rect, ...]

    @cached_property
    def cells(self) -> frozenset[Geocell]:
        return frozenset(cell for rect in self.rects for cell in rect.cells())

    def filter_text(self, dataset_text: str) -> str:
        """``$filter``: the dataset clauses and an ``or`` of one ``Intersects`` per rectangle."""
        clauses = [rect.clause() for rect in self.rects]
        area = clauses[0] if len(clauses) == 1 else "(" + " or ".join(clauses) + ")"
        return f"{dataset_text} and {area}"

    def url(self, catalogue_url: str, dataset_text: str) -> str:
        return search_url(catalogue_url, self.filter_text(dataset_text))

    def split(self) -> "tuple[SearchArea, SearchArea]":
        """Two searches covering the same cells, for an answer too large to page through."""
        if len(self.rects) > 1:
            middle = len(self.rects) // 2
            return SearchArea(self.rects[:middle]), SearchArea(self.rects[middle:])
        (rect,) = self.rects
        if len(rect.cells()) == 1:
            raise ValueError(f"one geocell ({rect.cells()[0].grid_id}) cannot be split")
        first, second = rect.halves()
        return SearchArea((first,)), SearchArea((second,))


def rectangles(cells: Iterable[Geocell]) -> list[Rect]:
    """Wanted cells as few rectangles: runs along each row, stacked while rows repeat the run.

    Exactly the wanted cells are covered, each once; no rectangle is wider than
    ``MAX_RECT_WIDTH`` nor reaches more than ``MAX_TOUCHED_CELLS`` cells.
    """
    rows: dict[int, list[int]] = {}
    for cell in set(cells):
        rows.setdefault(cell.lat, []).append(cell.lon)
    runs_by_row: dict[int, list[tuple[int, int]]] = {}
    for lat, lons in rows.items():
        lons.sort()
        runs, start = [], lons[0]
        for previous, lon in zip(lons, [*lons[1:], None], strict=True):
            if lon != previous + 1 or previous + 1 - start >= MAX_RECT_WIDTH:
                runs.append((start, previous + 1))
                if lon is not None:
                    start = lon
        runs_by_row[lat] = runs
    rects: list[Rect] = []
    open_rects: dict[tuple[int, int], Rect] = {}  # (west, east) → rectangle reaching the row below
    for lat in sorted(runs_by_row):
        still_open = {}
        for west, east in runs_by_row[lat]:
            below = open_rects.pop((west, east), None)
            if below is not None and below.north == lat and \
                    (east - west + 2) * (lat + 1 - below.south + 2) <= MAX_TOUCHED_CELLS:
                still_open[(west, east)] = Rect(below.south, west, lat + 1, east)
            else:
                if below is not None:
                    rects.append(below)
                still_open[(west, east)] = Rect(lat, west, lat + 1, east)
        rects.extend(open_rects.values())
        open_rects = still_open
    rects.extend(open_rects.values())
    return sorted(rects)


def plan_search_areas(cells: Iterable[Geocell], catalogue_url: str, dataset_text: str) -> list[SearchArea]:
    """The searches that cover ``cells``: few, each URL at most ``MAX_URL_LENGTH`` characters.

    Rectangles are packed in south-to-north, west-to-east order, so each search holds
    neighbouring rectangles (which share their touched neighbours).
    """
    # URL length, counted as clauses are added: the fixed part (with the parentheses of an
    # ``or``), each encoded clause, and an encoded " or " between two.
    fixed = len(search_url(catalogue_url, f"{dataset_text} and ()"))
    separator = len(quote(" or ", safe=""))
    areas: list[SearchArea] = []
    current: list[Rect] = []
    touched: set[tuple[int, int]] = set()
    length = fixed
    for rect in rectangles(cells):
        clause = len(quote(rect.clause(), safe=""))
        reach = touched | rect.touched()
        if current and (len(reach) > MAX_TOUCHED_CELLS or length + separator + clause > MAX_URL_LENGTH):
            areas.append(SearchArea(tuple(current)))
            current, reach, length = [rect], rect.touched(), fixed + clause
        else:
            length += clause + (separator if current else 0)
            current.append(rect)
        touched = reach
    if current:
        areas.append(SearchArea(tuple(current)))
    for area in areas:
        if len(area.url(catalogue_url, dataset_text)) > MAX_URL_LENGTH:
            raise ValueError(f"a single rectangle's search URL is longer than {MAX_URL_LENGTH} characters")
    return areas


def products_of_area(area: SearchArea, products: Iterable[Product]) -> dict[Geocell, Product]:
    """One product per cell the area covers; products of cells that only touch it are dropped."""
    return choose(products, area.cells)
