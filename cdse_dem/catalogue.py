"""Finding DEM products in the CDSE OData catalogue.

The query is the real one (collection, product type or dataset, Intersects of an area),
ordered so that pages neither repeat nor lose products, every page is followed (on the
catalogue itself, as far as ``$skip`` allows), and each product is mapped to its geocell so
that neighbours which only touch the area, and the second product of a doubled cell, are
dropped before anything is downloaded. Which areas to search: :mod:`cdse_dem.search_areas`.
Catalogue search needs no token.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from cdse_dem.endpoints import origin
from cdse_dem.errors import ServiceError
from cdse_dem.geocells import Geocell, geocell_of_footprint_wkt, geocell_of_name, parse_grid_id
from cdse_dem.retry import Backoff, retry_after, wait_for

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # CDSE's largest $top: fewest round trips per search
# CDSE refuses $skip above this (422): a search with more matches must be split by area.
MAX_SKIP = 10000
# Without $orderby CDSE pages in no stable order (repeating some products, losing others);
# any documented field will do, CDSE adds Id as the tie-break.
ORDER_BY = "ContentDate/Start asc"
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


def intersects(area_wkt: str) -> str:
    return f"OData.CSC.Intersects(area=geography'SRID=4326;{area_wkt}')"


def product_filter(collection: str, resolution: int, model: str, delivery: str, area_wkt: str) -> str:
    """The ``$filter`` of one search, in the form CDSE documents."""
    return f"{dataset_filter(collection, resolution, model, delivery)} and {intersects(area_wkt)}"


def area_wkt(polygon) -> str:
    """A lon/lat polygon as the catalogue takes it: ``POLYGON((lon lat,...))``, 6 decimals (~0.1 m)."""
    ring = ",".join(f"{x:.6f} {y:.6f}".replace(".000000", "") for x, y in polygon.exterior.coords)
    return f"POLYGON(({ring}))"


def search_url(catalogue_url: str, filter_text: str) -> str:
    """A search's first page: ordered, so that paging neither repeats nor loses products."""
    return (f"{catalogue_url}/Products?$filter={quote(filter_text, safe='')}"
            f"&$orderby={quote(ORDER_BY, safe='')}&$expand=Attributes&$top={PAGE_SIZE}")


class TooManyResults(ServiceError):
    """A search matches more products than ``$skip`` can page through: split its area."""


def parse_product(record: dict) -> Product | None:
    """A catalogue record as a Product; None when it names no geocell we can tell."""
    attributes = {a.get("Name"): a.get("Value") for a in record.get("Attributes") or []}
    geocell = None
    if attributes.get("gridId"):
        try:
            geocell = parse_grid_id(str(attributes["gridId"]))
        except ValueError:
            geocell = None
    if geocell is None:
        geocell = geocell_of_footprint_wkt(record.get("Footprint") or "")
    if geocell is None:  # the cell name inside urn:eop:...:Copernicus_DSM_30_S26_00_E112_00:V2957
        named = geocell_of_name(str(attributes.get("eopIdentifier") or ""))
        geocell = named[0] if named else None
    if geocell is None:
        log.warning("Product %s names no geocell: skipped", record.get("Name"))
        return None
    checksums = {c.get("Algorithm", "").upper(): c.get("Value") for c in record.get("Checksum") or []}
    dataset = str(attributes.get("dataset") or "")
    length = record.get("ContentLength")
    return Product(
        id=str(record["Id"]),
        name=str(record.get("Name", "")),
        geocell=geocell,
        content_length=int(length) if isinstance(length, int) and length > 0 else None,
        md5=(checksums.get("MD5") or None),
        blake3=(checksums.get("BLAKE3") or None),
        delivery=dataset.split("/", 1)[1] if "/" in dataset else None,
        modification_date=str(record.get("ModificationDate") or ""),
        footprint_wkt=str(record.get("Footprint") or ""),
        s3_path=str(record.get("S3Path") or ""),
        online=bool(record.get("Online", True)),
    )


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


class Catalogue:
    """Searches the catalogue over a shared HTTP session, with timeouts and retries."""

    def __init__(self, catalogue_url: str, http, *, backoff: Backoff | None = None,
                 timeout: tuple[float, float] = (10.0, 30.0)):
        self.catalogue_url = catalogue_url.rstrip("/")
        self.http = http
        self.backoff = backoff or Backoff()
        self.timeout = timeout

    def search(self, filter_text: str) -> list[dict]:
        """Every record matching ``filter_text``, following ``@odata.nextLink`` to the end."""
        url: str | None = search_url(self.catalogue_url, filter_text)
        records: list[dict] = []
        while url:
            page = self._get_json(url)
            value = page.get("value")
            if not isinstance(value, list):
                raise ServiceError(f"CDSE catalogue answered a page without a product list ({_short(url)})")
            records.extend(value)
            url = page.get("@odata.nextLink")
            if url:
                self._check_next_link(str(url))
        return records

    def _check_next_link(self, url: str) -> None:
        """Follow a next page only on the catalogue itself, and only as far as ``$skip`` goes."""
        if origin(url) != origin(self.catalogue_url):
            raise ServiceError(f"CDSE catalogue pointed its next page elsewhere ({_short(url)}): not followed")
        skip = parse_qs(urlsplit(url).query).get("$skip", ["0"])[0]
        if skip.isdigit() and int(skip) > MAX_SKIP:
            raise TooManyResults(f"more than {MAX_SKIP + PAGE_SIZE} products match one search")

    def _get_json(self, url: str) -> dict:
        import requests

        delays = self.backoff.delays()
        while True:
            problem, wait = None, None
            try:
                reply = self.http.get(url, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = f"no answer ({type(exc).__name__})"
            else:
                if reply.status_code == 200:
                    try:
                        page = reply.json()
                    except ValueError:
                        problem = "an answer that is not JSON"
                    else:
                        if isinstance(page, dict):
                            return page
                        problem = "an answer that is not a JSON object"
                elif reply.status_code == 429 or reply.status_code >= 500:
                    problem, wait = f"HTTP {reply.status_code}", retry_after(reply.headers)
                else:
                    raise ServiceError(f"CDSE catalogue refused the search: HTTP {reply.status_code}"
                                       f" {_detail(reply)}")
            delay = next(delays, None)
            if delay is None:
                raise ServiceError(f"CDSE catalogue gave {problem} after {self.backoff.attempts} tries"
                                   f" ({_short(url)})")
            delay = wait_for(delay, wait)
            log.warning("CDSE catalogue gave %s; retrying in %.1f s", problem, delay)
            time.sleep(delay)


def _detail(reply) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:200].strip()
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("message") or detail
    return str(detail or body)[:300]


def _short(url: str) -> str:
    return url.split("?", 1)[0]

