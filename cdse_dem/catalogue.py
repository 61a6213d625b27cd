"""The OData catalogue: the queries CDSE answers (by area, ordered, paged) and its product records.

Finding DEM products in the CDSE OData catalogue.

The query is the real one (collection, product type or dataset, Intersects of an area),
ordered so that pages neither repeat nor lose products, every page is followed (on the
catalogue itself, as far as ``$skip`` allows), and each product is mapped to its geocell so
that neighbours which only touch the area, and the second product of a doubled cell, are
dropped before anything is downloaded. Which areas to search: the second part below.
Catalogue search needs no token.

A cell the run's dataset has no product for is asked about once more, in every Copernicus DEM
dataset (``other_datasets_filter``): open sea when none has it, else a gap of the run's dataset.

Covering the wanted geocells with few catalogue searches: the pure part.

One search per tile costs a round trip per tile (0.3–2 s each on CDSE). The wanted cells of
a whole run are instead grouped into lon/lat rectangles of whole cells, and the rectangles
packed into searches: one ``$filter`` holds an ``or`` of ``Intersects`` clauses, one per
rectangle, as long as the URL stays short and the search stays about one page. A search's
answer decides exactly the wanted cells its rectangles cover: a cell with a product gets
it, a covered cell without one is open sea. ``Intersects`` also returns the cells that only
touch a rectangle's edge; their products count only for cells the search covers.
"""

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import parse_qs, quote, urlsplit

import requests
import shapely
from shapely import Polygon
from urllib3.exceptions import MaxRetryError

from cdse_dem.errors import Interrupted, ServiceError
from cdse_dem.fsutil import parse_json
from cdse_dem.grid import Geocell, geocell_of_footprint_wkt, geocell_of_name, parse_grid_id
from cdse_dem.http import (
    ATTEMPTS,
    RETRY_STATUSES,
    BadAnswer,
    RetryCancelled,
    catalogue_problem,
    catalogue_retry,
    gave_up,
    origin,
    origin_text,
    retry_waits,
    tries_of,
)
from cdse_dem.logs import scrub

log = logging.getLogger(__name__)



PAGE_SIZE = 1000  # CDSE's largest $top: fewest round trips per search
# CDSE refuses $skip above this (422): a search with more matches must be split by area.
MAX_SKIP = 10000
# The most pages one search can need ($skip 0 to 10,000 at 1,000 a page): a catalogue that links
# page after page past this, each a new URL, is not paging through a result.
MAX_PAGES = MAX_SKIP // PAGE_SIZE + 1
# Without $orderby CDSE pages in no stable order (repeating some products, losing others);
# any documented field will do, CDSE adds Id as the tie-break.
ORDER_BY = "ContentDate/Start asc"
# A page of PAGE_SIZE CDSE records with their Attributes expanded is about 3 MB (~3 kB a
# record); 16 MiB leaves five times that, and keeps a hostile or broken page from filling
# memory (a page is parsed whole).
MAX_PAGE_BYTES = 16 * 1024 * 1024
# COP-DEM product types and CCM datasets, by (resolution, model).
_PRODUCT_TYPES = {(30, "DGED"): "DGE_30", (90, "DGED"): "DGE_90", (30, "DTED"): "DTE_30", (90, "DTED"): "DTE_90"}
# CCM's product types (cdse-api.md section 3): one per resolution and model, whatever the delivery.
_CCM_PRODUCT_TYPES = {(30, "DGED"): "SAR_DGE_30_A4AD", (90, "DGED"): "SAR_DGE_90_A407",
                      (30, "DTED"): "SAR_DTE_30_615C", (90, "DTED"): "SAR_DTE_90_61F6"}
_RESOLUTION_IN_TYPE = re.compile(r"D[GT]E_(30|90)(?:_|$)")
# The search for other datasets asks for the fields that tell a product's dataset and choose among
# them; a product to fill a gap with is asked for again whole (its size and checksums), in its dataset.
OTHER_DATASETS_SELECT = "Id,Name,Footprint,ModificationDate"
# Rectangles of the search for other datasets are shrunk by this (degrees) inside their cells, so that
# Intersects answers no touching neighbour: that search lists every product of every dataset of a cell
# (about twenty for a land cell), and the cells it asks about are mostly sea among land.
OTHER_DATASETS_INSET = 0.1



@dataclass(frozen=True)
class Product:
    """One catalogue product: what to download and how to check it."""

    id: str
    name: str
    geocell: Geocell
    content_length: int | None
    md5: str | None
    blake3: str | None
    delivery: str | None
    modification_date: str
    footprint_wkt: str
    s3_path: str
    online: bool
    # the dataset it belongs to, as the folder's records name datasets (``Dataset.label``):
    # ``CCM COP-DEM_GLO-90-DGED/2024_1``, ``COP-DEM DGE_90``; and its resolution (30, 90), from its type
    dataset: str = ""
    resolution: int | None = None

    @property
    def collection(self) -> str:
        return self.dataset.split(" ", 1)[0]


def dataset_name(resolution: int, model: str) -> str:
    return f"COP-DEM_GLO-{resolution}-{model}"


def dataset_key(collection: str, resolution: int, model: str, delivery: str) -> tuple[str, str]:
    """The attribute that picks the DEM within its collection, and its value.

    CCM also holds the EEA-10 DEM and nine deliveries: never filter by collection alone.
    """
    if collection == "CCM":
        return "dataset", f"{dataset_name(resolution, model)}/{delivery}"
    return "productType", _PRODUCT_TYPES[(resolution, model)]


@dataclass(frozen=True)
class Dataset:
    """What a run downloads from: a collection, and in it a resolution, a model and (CCM) a delivery."""

    collection: str
    resolution: int
    model: str
    delivery: str

    @property
    def label(self) -> str:
        """As the folder's records and the log name it: ``CCM COP-DEM_GLO-30-DGED/2024_1``, ``COP-DEM DGE_30``."""
        return f"{self.collection} {dataset_key(self.collection, self.resolution, self.model, self.delivery)[1]}"

    def filter_text(self) -> str:
        return dataset_filter(self.collection, self.resolution, self.model, self.delivery)

    def of(self, product: Product) -> "Dataset":
        """The dataset of another product of this model (one the search for other datasets found)."""
        return Dataset(product.collection, product.resolution or self.resolution, self.model,
                       product.delivery or self.delivery)


def _attribute_is(attribute: str, value: str) -> str:
    return (f"Attributes/OData.CSC.StringAttribute/any(att:att/Name eq '{attribute}'"
            f" and att/OData.CSC.StringAttribute/Value eq '{value}')")


def dataset_filter(collection: str, resolution: int, model: str, delivery: str) -> str:
    """The part of every search's ``$filter`` that names the dataset (collection and attribute)."""
    attribute, value = dataset_key(collection, resolution, model, delivery)
    return f"Collection/Name eq '{collection}' and {_attribute_is(attribute, value)}"


def other_datasets_filter(model: str) -> str:
    """``$filter``'s dataset part for every Copernicus DEM GLO product of ``model``: both collections,
    both resolutions, every delivery (never EEA-10, which CCM also holds).

    A cell the run's dataset has no product for is open sea only when this finds nothing for it
    either; otherwise it is a gap of that dataset (GLO-30 lacks cells GLO-90 has; a delivery may
    lack cells another has).
    """
    types = [kinds[(resolution, model)] for kinds in (_PRODUCT_TYPES, _CCM_PRODUCT_TYPES) for resolution in (30, 90)]
    return ("(Collection/Name eq 'CCM' or Collection/Name eq 'COP-DEM') and ("
            + " or ".join(_attribute_is("productType", kind) for kind in types) + ")")


def intersects(area: "Polygon") -> str:
    """The ``Intersects`` clause of a lon/lat polygon, as CDSE documents it: ``...;POLYGON((lon lat,lon lat,...))``.

    shapely writes the WKT (6 decimals at most, ~0.1 m; whole degrees without any); the spaces it
    puts after each comma and before the parentheses are left out, as in CDSE's own examples,
    since each would take three characters of the URL (``%20``).
    """
    wkt = shapely.to_wkt(area, rounding_precision=6, trim=True).replace(", ", ",").replace(" (", "(")
    return f"OData.CSC.Intersects(area=geography'SRID=4326;{wkt}')"


def search_url(catalogue_url: str, filter_text: str, select: str | None = None) -> str:
    """A search's first page: ordered, so that paging neither repeats nor loses products; with
    ``select``, only those fields of each product (and its attributes)."""
    fields = f"&$select={quote(select, safe=',')}" if select else ""
    return (f"{catalogue_url}/Products?$filter={quote(filter_text, safe='')}"
            f"&$orderby={quote(ORDER_BY, safe='')}&$expand=Attributes{fields}&$top={PAGE_SIZE}")


class TooManyResults(ServiceError):
    """A search matches more products than ``$skip`` can page through: split its area."""


class BadRecord(ValueError):
    """A catalogue record we cannot use; ``geocell`` is its cell when that much could be told.

    ``kind`` is the reason without what varies from record to record (an Id, a value): alike
    records are counted as one kind, however many a page holds.
    """

    def __init__(self, reason: str, geocell: Geocell | None = None, kind: str | None = None):
        super().__init__(reason)
        self.reason, self.geocell = reason, geocell
        self.kind = _ID_IN_REASON.sub("product …", kind or reason)


class Answer:
    """What a search answered, taken in page by page: the products of each cell of ``wanted`` (the
    cells the search decides; products of the cells around them are dropped), and the records
    that could not be used.

    Only the products of those cells are kept, and bad records are counted by kind, so a search
    holds one page's records at a time however many pages come. A record we cannot read or
    place may be the product of any of the searched cells, so a cell without a product is not
    open sea when a record names no cell (``unplaced``): it is failed, as a cell named by a bad
    record is (``bad_cells``).
    """

    def __init__(self, wanted: Iterable[Geocell]):
        self.wanted = frozenset(wanted)
        self.found: dict[Geocell, list[Product]] = {}  # every product of each wanted cell
        self.bad_cells: set[Geocell] = set()
        self.unplaced = False
        self._kinds: dict[str, list] = {}  # kind -> [the first reason of that kind, count]

    def add(self, records: Iterable[object]) -> None:
        """One page's records."""
        for record in records:
            try:
                product = parse_product(record)
            except BadRecord as problem:
                self._bad(problem)
                continue
            if product.geocell in self.wanted:
                self.found.setdefault(product.geocell, []).append(product)

    @property
    def products(self) -> dict[Geocell, Product]:
        """The one product of each wanted cell that has any (:func:`choose`'s)."""
        return choose((p for products in self.found.values() for p in products), self.wanted)

    def _bad(self, problem: BadRecord) -> None:
        if problem.geocell is None:
            self.unplaced = True
        elif problem.geocell in self.wanted:
            self.bad_cells.add(problem.geocell)
        self._kinds.setdefault(problem.kind, [_ID_IN_REASON.sub("product …", problem.reason), 0])[1] += 1

    def problem_lines(self, limit: int = 3) -> list[str]:
        """One line per kind of problem, with its count: a page of 1000 alike records is one line, not 1000."""
        kinds = list(self._kinds.values())
        lines = [f"{count} × {reason}" if count > 1 else reason for reason, count in kinds[:limit]]
        if len(kinds) > limit:
            rest = sum(count for _, count in kinds[limit:])
            lines.append(f"{rest} more bad records, of {len(kinds) - limit} other kinds")
        return lines


_ID_IN_REASON = re.compile(r"product \S+")
_ID_RE = re.compile(r"[0-9A-Za-z-]{1,100}")  # CDSE Ids are UUIDs; the Id goes into a URL path
_CHECKSUM_RE = re.compile(r"[0-9A-Fa-f]{1,128}")


def parse_product(record: object) -> Product:
    """A catalogue record as a Product; BadRecord saying what is wrong when it cannot be used.

    Records come from the network: every field is checked for its type before use, and a
    record whose geocell cannot be told (no usable ``gridId``, no 1°×1° footprint) is refused
    rather than guessed.
    """
    if not isinstance(record, dict):
        raise BadRecord(f"a record that is not an object ({type(record).__name__})")
    pid = record.get("Id")
    if pid is None:
        raise BadRecord("a record without a usable Id")
    if not isinstance(pid, str) or not _ID_RE.fullmatch(pid):
        raise BadRecord(f"a record with an unusable Id {pid!r:.60}", kind="a record with an unusable Id")
    attributes = _name_values(record, "Attributes", pid)
    footprint = record.get("Footprint")
    footprint = footprint if isinstance(footprint, str) else ""
    geocell = None
    grid_id = attributes.get("gridId")
    if grid_id:
        try:
            geocell = parse_grid_id(str(grid_id))
        except ValueError:
            geocell = None
    if geocell is None:
        geocell = geocell_of_footprint_wkt(footprint)
    if geocell is None:  # the cell name inside urn:eop:...:Copernicus_DSM_30_S26_00_E112_00:V2957
        eop = attributes.get("eopIdentifier")
        named = geocell_of_name(eop) if isinstance(eop, str) else None
        geocell = named[0] if named else None
    if geocell is None:
        raise BadRecord(f"product {pid} names no geocell we can tell (no usable gridId or 1°×1° footprint)")
    checksums = _name_values(record, "Checksum", pid, key="Algorithm", geocell=geocell)
    for algorithm in ("MD5", "BLAKE3"):
        value = checksums.get(algorithm)
        if value is not None and not (isinstance(value, str) and _CHECKSUM_RE.fullmatch(value.strip())):
            raise BadRecord(f"product {pid} has an unusable {algorithm} checksum {value!r:.60}", geocell,
                            kind=f"an unusable {algorithm} checksum")
    dataset = attributes.get("dataset")
    dataset = dataset if isinstance(dataset, str) else ""
    length = record.get("ContentLength")
    name = record.get("Name")
    name = name if isinstance(name, str) else ""
    kind = attributes.get("productType")
    kind = kind if isinstance(kind, str) else ""
    in_type = _RESOLUTION_IN_TYPE.search(kind) or _RESOLUTION_IN_TYPE.search(name)
    return Product(
        id=pid,
        name=name,
        geocell=geocell,
        content_length=length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None,
        md5=(checksums.get("MD5") or None),
        blake3=(checksums.get("BLAKE3") or None),
        delivery=dataset.split("/", 1)[1] if "/" in dataset else None,
        modification_date=str(record.get("ModificationDate") or ""),
        footprint_wkt=footprint,
        s3_path=str(record.get("S3Path") or ""),
        online=bool(record.get("Online", True)),
        dataset=f"CCM {dataset}" if dataset else f"COP-DEM {kind}" if kind else "",
        resolution=int(in_type.group(1)) if in_type else None,
    )


def _name_values(record: dict, field: str, pid: str, *, key: str = "Name", geocell: Geocell | None = None) -> dict:
    """``{Name: Value}`` of a list of objects (``Attributes``; ``Checksum`` keyed by Algorithm, upper-cased)."""
    items = record.get(field)
    if items is None:
        return {}
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BadRecord(f"product {pid} has {field} that are not a list of objects", geocell)
    names = {}
    for item in items:
        name = item.get(key)
        if isinstance(name, str):
            names[name.upper() if key == "Algorithm" else name] = item.get("Value")
    return names


def preference(product: Product) -> tuple:
    """Order among products of one geocell: newest delivery, then ModificationDate, then Id."""
    return (product.delivery or "", product.modification_date, product.id)


def choose(products: Iterable[Product], wanted: Iterable[Geocell]) -> dict[Geocell, Product]:
    """One product per wanted geocell; products of other cells (touching neighbours) dropped."""
    wanted = set(wanted)
    chosen: dict[Geocell, Product] = {}
    for product in products:
        if product.geocell not in wanted:
            continue
        current = chosen.get(product.geocell)
        if current is None or preference(product) > preference(current):
            chosen[product.geocell] = product
    return chosen


class SearchCancelled(Interrupted):
    """The run was asked to stop: no further search request is sent."""


class Catalogue:
    """Searches the catalogue over a shared HTTP session, with timeouts and retries.

    Requests are retried by the session's catalogue adapter (``http.catalogue_retry``, mounted
    by ``new_http_session(..., endpoints)``); a whole answer that is no page (not JSON, cut
    short) is asked for again here, under the same policy. ``stop`` (set on Ctrl-C) ends a
    search before its next request and cuts its retry waits short, so an interrupted run sends
    no further search; ``sleep`` replaces those waits (tests).
    """

    def __init__(self, catalogue_url: str, http, *, timeout: tuple[float, float] = (10.0, 30.0),
                 stop: threading.Event | None = None, max_page_bytes: int = MAX_PAGE_BYTES,
                 sleep: Callable[[float], None] | None = None):
        self.catalogue_url = catalogue_url.rstrip("/")
        self.http = http
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self.max_page_bytes = max_page_bytes
        self.sleep = sleep

    def pages(self, filter_text: str, select: str | None = None) -> Iterator[list]:
        """The records matching ``filter_text`` (with ``select``: those fields), a page at a time,
        following ``@odata.nextLink`` to the end.

        A page is handed on before the next is asked for, so a search holds one page at a time
        however long it is. A next link must be a new URL on the catalogue's own origin: a page
        that links to itself (or to an earlier page) would be asked for ever, and a link
        elsewhere would send our requests to a host we never chose; and no search pages past
        ``MAX_PAGES``, all that ``$skip`` allows. Each ends the search with an error.
        """
        url: str | None = search_url(self.catalogue_url, filter_text, select)
        seen: set[str] = set()
        while url:
            if len(seen) == MAX_PAGES:
                raise ServiceError(f"CDSE catalogue answered more than {MAX_PAGES} pages for one search (at"
                                   f" most $skip {MAX_SKIP:,} at {PAGE_SIZE:,} a page); search stopped")
            seen.add(url)
            page = self._get_json(url)
            value = page.get("value")
            if not isinstance(value, list):
                raise ServiceError(f"CDSE catalogue answered a page without a product list ({_short(url)})")
            url = self._next_link(page, seen)
            page = None  # the page's other fields go now, its records once they are taken in
            yield value

    def _next_link(self, page: dict, seen: set[str]) -> str | None:
        """Follow a next page only on the catalogue itself, never twice, and only as far as
        ``$skip`` goes."""
        link = page.get("@odata.nextLink")
        if link is None:
            return None
        if not isinstance(link, str):
            raise ServiceError(f"CDSE catalogue answered a nextLink that is not a URL ({type(link).__name__});"
                               " search stopped")
        here = origin(link)
        if here is None or here != origin(self.catalogue_url):
            raise ServiceError(f"CDSE catalogue answered a nextLink to another host ({origin_text(link)});"
                               " not followed, search stopped")
        if link in seen:
            raise ServiceError(f"CDSE catalogue answered a nextLink to a page already read ({_short(link)});"
                               " search stopped")
        skip = parse_qs(urlsplit(link).query).get("$skip", ["0"])[0]
        if skip.isdigit() and int(skip) > MAX_SKIP:
            raise TooManyResults(f"more than {MAX_SKIP + PAGE_SIZE} products match one search")
        return link

    def _get_json(self, url: str) -> dict:
        """The page at ``url``. The adapter retries what a request fails by; an answer that is
        no page is tried again here, as the adapter would (its log line, its waits, its count)."""
        retry = catalogue_retry()
        try:
            with retry_waits(sleep=self.sleep, stop=self.stop):
                while True:
                    if self.stop.is_set():
                        raise SearchCancelled()
                    page = self._page(url)
                    if isinstance(page, dict):
                        return page
                    try:
                        retry = retry.increment("GET", url, error=BadAnswer(page))
                    except MaxRetryError:
                        raise ServiceError(f"CDSE catalogue gave {page} after {retry.tries} tries"
                                           f" ({_short(url)})") from None
                    retry.sleep()
        except RetryCancelled:
            raise SearchCancelled() from None

    def _page(self, url: str) -> dict | str:
        """One request: the page, or what was wrong with a whole answer (to try again); ServiceError
        when the service refused or stayed unusable after the adapter's retries."""
        try:
            reply = self.http.get(url, timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            tries = ATTEMPTS if gave_up(exc) else 1
            raise ServiceError(f"CDSE catalogue gave {catalogue_problem(exc)} after {tries} tries"
                               f" ({_short(url)})") from None
        with reply:
            status = reply.status_code
            if status == 200:
                try:
                    page = parse_json(self._body(reply, url))
                except requests.RequestException as exc:
                    return f"no whole answer ({type(exc).__name__})"
                except ValueError:
                    return "an answer that is not JSON"
                return page if isinstance(page, dict) else "an answer that is not a JSON object"
            if status in RETRY_STATUSES:
                raise ServiceError(f"CDSE catalogue gave HTTP {status} after {tries_of(reply)} tries"
                                   f" ({_short(url)})")
            raise ServiceError(f"CDSE catalogue refused the search: HTTP {status} {_detail(reply)}")

    def _body(self, reply, url: str) -> bytes:
        """The page's bytes, read no further than ``max_page_bytes`` (ServiceError past it, not retried)."""
        too_big = ServiceError(f"CDSE catalogue answered a page larger than {self.max_page_bytes // 2**20} MiB"
                               f" ({_short(url)}); not read further, search stopped")
        announced = reply.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > self.max_page_bytes:
            raise too_big
        body = bytearray()
        for chunk in reply.iter_content(1024 * 1024):
            body += chunk
            if len(body) > self.max_page_bytes:
                raise too_big
            if self.stop.is_set():
                raise SearchCancelled()
        return bytes(body)


def _detail(reply) -> str:
    """The ``detail`` of an error answer (bounded, scrubbed of our secrets before it is cut)."""

    raw = reply.raw.read(64 * 1024, decode_content=True) or b""
    text = raw.decode("utf-8", "replace")
    try:
        body = parse_json(text)
    except ValueError:
        return scrub(" ".join(text.split()))[:200]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("message") or detail
    return scrub(str(detail or body))[:300]


def _short(url: str) -> str:
    return url.split("?", 1)[0][:200]


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

    def polygon(self, inset: float = 0.0) -> shapely.Polygon:
        """The rectangle as a lon/lat box (its ring counter-clockwise from the south-east corner),
        shrunk by ``inset`` degrees on each side (then no neighbouring cell touches it)."""
        return shapely.box(self.west + inset, self.south + inset, self.east - inset, self.north - inset)

    def clause(self, inset: float = 0.0) -> str:
        return intersects(self.polygon(inset))

    def halves(self) -> "tuple[Rect, Rect]":
        """Two rectangles covering this one, cut across its longer side."""
        if self.east - self.west >= self.north - self.south:
            middle = (self.west + self.east) // 2
            return Rect(self.south, self.west, self.north, middle), Rect(self.south, middle, self.north, self.east)
        middle = (self.south + self.north) // 2
        return Rect(self.south, self.west, middle, self.east), Rect(middle, self.west, self.north, self.east)


@dataclass(frozen=True)
class SearchArea:
    """The rectangles of one search and the wanted cells its answer decides.

    ``inset``: the rectangles are searched shrunk by that much (degrees), so that only their own
    cells answer (see ``OTHER_DATASETS_INSET``).
    """

    rects: tuple[Rect, ...]
    inset: float = 0.0

    @cached_property
    def cells(self) -> frozenset[Geocell]:
        return frozenset(cell for rect in self.rects for cell in rect.cells())

    def filter_text(self, dataset_text: str) -> str:
        """``$filter``: the dataset clauses and an ``or`` of one ``Intersects`` per rectangle."""
        clauses = [rect.clause(self.inset) for rect in self.rects]
        area = clauses[0] if len(clauses) == 1 else "(" + " or ".join(clauses) + ")"
        return f"{dataset_text} and {area}"

    def url(self, catalogue_url: str, dataset_text: str, select: str | None = None) -> str:
        return search_url(catalogue_url, self.filter_text(dataset_text), select)

    def split(self) -> "tuple[SearchArea, SearchArea]":
        """Two searches covering the same cells, for an answer too large to page through."""
        if len(self.rects) > 1:
            middle = len(self.rects) // 2
            return SearchArea(self.rects[:middle], self.inset), SearchArea(self.rects[middle:], self.inset)
        (rect,) = self.rects
        if len(rect.cells()) == 1:
            raise ValueError(f"one geocell ({rect.cells()[0].grid_id}) cannot be split")
        first, second = rect.halves()
        return SearchArea((first,), self.inset), SearchArea((second,), self.inset)


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


def plan_search_areas(cells: Iterable[Geocell], catalogue_url: str, dataset_text: str, *, inset: float = 0.0,
                      select: str | None = None) -> list[SearchArea]:
    """The searches that cover ``cells``: few, each URL at most ``MAX_URL_LENGTH`` characters.

    Rectangles are packed in south-to-north, west-to-east order, so each search holds
    neighbouring rectangles (which share their touched neighbours). ``inset`` and ``select``:
    see :class:`SearchArea` and :func:`search_url`.
    """
    # URL length, counted as clauses are added: the fixed part (with the parentheses of an
    # ``or``), each encoded clause, and an encoded " or " between two.
    fixed = len(search_url(catalogue_url, f"{dataset_text} and ()", select))
    separator = len(quote(" or ", safe=""))
    areas: list[SearchArea] = []
    current: list[Rect] = []
    touched: set[tuple[int, int]] = set()
    length = fixed
    for rect in rectangles(cells):
        clause = len(quote(rect.clause(inset), safe=""))
        reach = touched | rect.touched()
        if current and (len(reach) > MAX_TOUCHED_CELLS or length + separator + clause > MAX_URL_LENGTH):
            areas.append(SearchArea(tuple(current), inset))
            current, reach, length = [rect], rect.touched(), fixed + clause
        else:
            length += clause + (separator if current else 0)
            current.append(rect)
        touched = reach
    if current:
        areas.append(SearchArea(tuple(current), inset))
    for area in areas:
        if len(area.url(catalogue_url, dataset_text, select)) > MAX_URL_LENGTH:
            raise ValueError(f"a single rectangle's search URL is longer than {MAX_URL_LENGTH} characters")
    return areas


def fill_source(products: Iterable[Product], resolution: int, collection: str) -> Product | None:
    """The product to fill a gap of ``resolution`` with, among the cell's products in other datasets.

    Another delivery at the same resolution first (its own heights, no interpolation), then the
    other resolution (GLO-90 under a GLO-30 name: interpolated; GLO-30 under a GLO-90 name: every
    third post); in the run's collection first, then by :func:`preference` (the newest delivery).
    """
    usable = [p for p in products if p.resolution in (30, 90)]
    if not usable:
        return None
    return max(usable, key=lambda p: (p.resolution == resolution, p.collection == collection, preference(p)))
