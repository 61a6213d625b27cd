"""Finding DEM products in the CDSE OData catalogue.

The query is the real one (collection, product type or dataset, Intersects of an area),
ordered so that pages neither repeat nor lose products, every page is followed (on the
catalogue itself, as far as ``$skip`` allows), and each product is mapped to its geocell so
that neighbours which only touch the area, and the second product of a doubled cell, are
dropped before anything is downloaded. Which areas to search: :mod:`cdse_dem.search_areas`.
Catalogue search needs no token.
"""

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

import requests
import shapely
from urllib3.exceptions import MaxRetryError

from cdse_dem.endpoints import origin, origin_text
from cdse_dem.errors import Interrupted, ServiceError
from cdse_dem.geocells import Geocell, geocell_of_footprint_wkt, geocell_of_name, parse_grid_id
from cdse_dem.http import (
    ATTEMPTS,
    RETRY_STATUSES,
    BadAnswer,
    RetryCancelled,
    catalogue_problem,
    catalogue_retry,
    gave_up,
    retry_waits,
    tries_of,
)

if TYPE_CHECKING:
    from shapely import Polygon

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # CDSE's largest $top: fewest round trips per search
# CDSE refuses $skip above this (422): a search with more matches must be split by area.
MAX_SKIP = 10000
# Without $orderby CDSE pages in no stable order (repeating some products, losing others);
# any documented field will do, CDSE adds Id as the tie-break.
ORDER_BY = "ContentDate/Start asc"
# A page of PAGE_SIZE CDSE records with their Attributes expanded is about 3 MB (~3 kB a
# record); 16 MiB leaves five times that, and keeps a hostile or broken page from filling
# memory (a page is parsed whole).
MAX_PAGE_BYTES = 16 * 1024 * 1024
# COP-DEM product types and CCM datasets, by (resolution, model).
_PRODUCT_TYPES = {(30, "DGED"): "DGE_30", (90, "DGED"): "DGE_90", (30, "DTED"): "DTE_30", (90, "DTED"): "DTE_90"}



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


def dataset_name(resolution: int, model: str) -> str:
    return f"COP-DEM_GLO-{resolution}-{model}"


def dataset_key(collection: str, resolution: int, model: str, delivery: str) -> tuple[str, str]:
    """The attribute that picks the DEM within its collection, and its value.

    CCM also holds the EEA-10 DEM and nine deliveries: never filter by collection alone.
    """
    if collection == "CCM":
        return "dataset", f"{dataset_name(resolution, model)}/{delivery}"
    return "productType", _PRODUCT_TYPES[(resolution, model)]


def dataset_filter(collection: str, resolution: int, model: str, delivery: str) -> str:
    """The part of every search's ``$filter`` that names the dataset (collection and attribute)."""
    attribute, value = dataset_key(collection, resolution, model, delivery)
    return (
        f"Collection/Name eq '{collection}'"
        f" and Attributes/OData.CSC.StringAttribute/any(att:att/Name eq '{attribute}'"
        f" and att/OData.CSC.StringAttribute/Value eq '{value}')"
    )


def intersects(area: "Polygon") -> str:
    """The ``Intersects`` clause of a lon/lat polygon, as CDSE documents it: ``...;POLYGON((lon lat,lon lat,...))``.

    shapely writes the WKT (6 decimals at most, ~0.1 m; whole degrees without any); the spaces it
    puts after each comma and before the parentheses are left out, as in CDSE's own examples,
    since each would take three characters of the URL (``%20``).
    """
    wkt = shapely.to_wkt(area, rounding_precision=6, trim=True).replace(", ", ",").replace(" (", "(")
    return f"OData.CSC.Intersects(area=geography'SRID=4326;{wkt}')"


def search_url(catalogue_url: str, filter_text: str) -> str:
    """A search's first page: ordered, so that paging neither repeats nor loses products."""
    return (f"{catalogue_url}/Products?$filter={quote(filter_text, safe='')}"
            f"&$orderby={quote(ORDER_BY, safe='')}&$expand=Attributes&$top={PAGE_SIZE}")


class TooManyResults(ServiceError):
    """A search matches more products than ``$skip`` can page through: split its area."""


class BadRecord(ValueError):
    """A catalogue record we cannot use; ``geocell`` is its cell when that much could be told."""

    def __init__(self, reason: str, geocell: Geocell | None = None):
        super().__init__(reason)
        self.reason, self.geocell = reason, geocell


@dataclass(frozen=True)
class Answer:
    """What a search answered: the products, and the records that could not be used.

    A record we cannot read or place may be the product of any of the searched cells, so a
    cell without a product is not open sea when ``problems`` is not empty: it is failed.
    """

    products: list[Product]
    problems: list[BadRecord]


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
    if not isinstance(pid, str) or not _ID_RE.fullmatch(pid):
        raise BadRecord("a record without a usable Id" if pid is None else f"a record with an unusable Id {pid!r:.60}")
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
            raise BadRecord(f"product {pid} has an unusable {algorithm} checksum {value!r:.60}", geocell)
    dataset = attributes.get("dataset")
    dataset = dataset if isinstance(dataset, str) else ""
    length = record.get("ContentLength")
    name = record.get("Name")
    return Product(
        id=pid,
        name=name if isinstance(name, str) else "",
        geocell=geocell,
        content_length=length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None,
        md5=(checksums.get("MD5") or None),
        blake3=(checksums.get("BLAKE3") or None),
        delivery=dataset.split("/", 1)[1] if "/" in dataset else None,
        modification_date=str(record.get("ModificationDate") or ""),
        footprint_wkt=footprint,
        s3_path=str(record.get("S3Path") or ""),
        online=bool(record.get("Online", True)),
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


def parse_products(records: Iterable[object]) -> Answer:
    """Every record of a search answer parsed: the products, and what was wrong with the others."""
    products, problems = [], []
    for record in records:
        try:
            products.append(parse_product(record))
        except BadRecord as problem:
            problems.append(problem)
    return Answer(products, problems)


def problem_lines(problems: Iterable[BadRecord], limit: int = 3) -> list[str]:
    """One line per kind of problem, with its count: a page of 1000 alike records is one line, not 1000."""
    counts: dict[str, int] = {}
    for problem in problems:
        kind = _ID_IN_REASON.sub("product …", problem.reason)
        counts[kind] = counts.get(kind, 0) + 1
    kinds = list(counts.items())
    lines = [f"{count} × {kind}" if count > 1 else kind for kind, count in kinds[:limit]]
    if len(kinds) > limit:
        rest = sum(count for _, count in kinds[limit:])
        lines.append(f"{rest} more bad records, of {len(kinds) - limit} other kinds")
    return lines


_ID_IN_REASON = re.compile(r"product \S+")


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

    def search(self, filter_text: str) -> list[dict]:
        """Every record matching ``filter_text``, following ``@odata.nextLink`` to the end.

        A next link must be a new URL on the catalogue's own origin: a page that links to
        itself (or to an earlier page) would be asked for ever, and a link elsewhere would
        send our requests to a host we never chose. Either ends the search with an error.
        """
        url: str | None = search_url(self.catalogue_url, filter_text)
        seen: set[str] = set()
        records: list[dict] = []
        while url:
            seen.add(url)
            page = self._get_json(url)
            value = page.get("value")
            if not isinstance(value, list):
                raise ServiceError(f"CDSE catalogue answered a page without a product list ({_short(url)})")
            records.extend(value)
            url = self._next_link(page, seen)
        return records

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
                    page = json.loads(self._body(reply, url))
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
    from cdse_dem.redact import scrub

    raw = reply.raw.read(64 * 1024, decode_content=True) or b""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return scrub(" ".join(text.split()))[:200]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("message") or detail
    return scrub(str(detail or body))[:300]


def _short(url: str) -> str:
    return url.split("?", 1)[0][:200]
