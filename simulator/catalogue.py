"""The OData catalogue: ``Products`` search and ``Products(<Id>)``, as pure request -> reply logic.

A search narrows the cells first (``Intersects``, ``gridId``, ``Name``), evaluates the filter on
each product of those cells, and makes zips only for the products of the page it returns,
because ``ContentLength`` and ``Checksum`` describe the exact bytes served. Without a spatial
clause it scans lazily and stops as soon as the page is full (unless ``$count`` or ``$orderby``
needs every match, as on CDSE where both are slow).

Order, as recorded on CDSE: without ``$orderby`` a search has no order, and each request gets
its own (see ``jittered``), so paging an unordered search repeats some products and loses
others. With ``$orderby`` (the four documented fields) CDSE adds ``Id`` as the tie-break, and
pages are stable.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from simulator.odata_filter import And, FilterError, cell_independent, parse_filter
from simulator.products import (
    CCM_ATTRIBUTES,
    COMBOS,
    COPDEM_ATTRIBUTES,
    NEVER_EVICTED,
    Combo,
    Product,
    ProductIndex,
    ProductKey,
    iso,
)
from simulator.zips import ZipMeta, ZipStore

MAX_TOP = 1000
MAX_SKIP = 10000
DEFAULT_TOP = 20
ORDER_FIELDS = {
    "ContentDate/Start": lambda p: p.content_date[0],
    "ContentDate/End": lambda p: p.content_date[1],
    "PublicationDate": lambda p: p.publication_date,
    "ModificationDate": lambda p: p.modification_date,
}
"""The ``$orderby`` fields CDSE documents (cdse-api.md §2); others are 400."""
PRODUCT_KEYS = ("@odata.mediaContentType", "Id", "Name", "ContentType", "ContentLength", "OriginDate",
                "PublicationDate", "ModificationDate", "Online", "EvictionDate", "S3Path", "Checksum",
                "ContentDate", "Footprint", "GeoFootprint")
EXPANDABLE = ("Attributes", "Assets", "Locations")
_NEEDS_ZIP = {"ContentLength", "Checksum"}


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict | list
    headers: tuple[tuple[str, str], ...] = ()


class QueryError(Exception):
    def __init__(self, status: int, detail) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def _option_error(name: str, message: str, limit: int) -> QueryError:
    return QueryError(422, [{"loc": ["query", name], "msg": message, "type": "value_error.number.not_le",
                             "ctx": {"limit_value": limit}}])


@dataclass(frozen=True)
class Query:
    filter: str | None
    top: int
    skip: int
    orderby: tuple[tuple[str, bool], ...]  # (field, descending)
    count: bool
    expand: tuple[str, ...]
    select: tuple[str, ...] | None
    params: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, pairs: Sequence[tuple[str, str]]) -> Query:
        options: dict[str, str] = {}
        for key, value in pairs:
            if key.startswith("$"):
                if key not in ("$filter", "$top", "$skip", "$orderby", "$count", "$expand", "$select",
                               "$format"):
                    raise QueryError(400, f"Invalid query option {key!r}")
                if key in ("$expand", "$select") and key in options:
                    options[key] += "," + value  # eodag repeats $expand; CDSE applies all of them
                else:
                    options[key] = value
        if options.get("$format", "json").lower() not in ("json", "application/json"):
            raise QueryError(400, f"Unsupported $format {options['$format']!r}: only json")
        top = _integer(options, "$top", DEFAULT_TOP)
        if top > MAX_TOP:
            raise _option_error("$top", f"ensure this value is less than or equal to {MAX_TOP}", MAX_TOP)
        skip = _integer(options, "$skip", 0)
        if skip > MAX_SKIP:
            raise _option_error("$skip", f"ensure this value is less than or equal to {MAX_SKIP}", MAX_SKIP)
        count_text = options.get("$count", "false").strip().lower()
        if count_text not in ("true", "false"):
            raise QueryError(400, f"Invalid $count value {options['$count']!r}: true or false")
        orderby = []
        for item in _items(options.get("$orderby")):
            words = item.split()
            if len(words) > 2 or words[0] not in ORDER_FIELDS or (
                    len(words) == 2 and words[1].lower() not in ("asc", "desc")):
                raise QueryError(400, f"Invalid $orderby {item!r}: use one of "
                                      f"{', '.join(ORDER_FIELDS)} with asc or desc")
            orderby.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
        expand = []
        for item in _items(options.get("$expand")):
            match = next((e for e in EXPANDABLE if e.lower() == item.lower()), None)
            if match is None:
                raise QueryError(400, f"Invalid $expand {item!r}: use {', '.join(EXPANDABLE)}")
            if match not in expand:
                expand.append(match)
        select = None
        if "$select" in options:
            select = tuple(_items(options["$select"]))
            unknown = [s for s in select if s not in PRODUCT_KEYS and s != "*"]
            if unknown or not select:
                raise QueryError(400, f"Invalid $select {options['$select']!r}")
            if "*" in select:
                select = None
        return cls(options.get("$filter"), top, skip, tuple(orderby), count_text == "true",
                   tuple(expand), select, tuple(pairs))


def _items(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _integer(options: dict[str, str], name: str, default: int) -> int:
    if name not in options:
        return default
    text = options[name].strip()
    if not text.isdigit():
        raise QueryError(400, f"Invalid {name} value {options[name]!r}: a non-negative integer is expected")
    return int(text)


def jittered(items: list, top: int, rng: random.Random) -> list:
    """``items`` in the order one unordered request sees them: each moves forward by up to a
    page (``top`` places), drawn afresh per request, so neighbouring pages of two requests
    overlap (a product repeats) or leave a gap (a product is lost), as on CDSE."""
    span = max(1, top)
    keys = [i + rng.random() * span for i in range(len(items))]
    return [item for _, item in sorted(zip(keys, items, strict=True), key=lambda pair: pair[0])]


class Catalogue:
    def __init__(self, index: ProductIndex, store: ZipStore) -> None:
        self.index = index
        self.store = store
        self._order_lock = threading.Lock()
        self._order_requests = itertools.count()

    def _request_rng(self) -> random.Random:
        """A seeded stream of its own for each unordered search request."""
        with self._order_lock:
            n = next(self._order_requests)
        return random.Random(f"{self.index.seed}:order:{n}")

    # --- search -------------------------------------------------------------------------------
    def search(self, pairs: Sequence[tuple[str, str]], base_url: str) -> Reply:
        try:
            query = Query.parse(pairs)
            node = parse_filter(query.filter) if query.filter is not None else None
        except QueryError as exc:
            return Reply(exc.status, {"detail": exc.detail})
        except FilterError as exc:
            return Reply(400, {"detail": str(exc)})

        cells = node.cells(self.index) if node is not None else None
        cell_iter = sorted(cells) if cells is not None else self.index.iter_cells()
        combos = self._combos(node)

        def matching():
            for cell in cell_iter:
                for product in self.index.products_in_cell(cell, combos):
                    if node is None or node.matches(product, {}):
                        yield product

        total = None
        end = query.skip + query.top
        if query.orderby:
            found = sorted(matching(), key=lambda p: p.id)  # CDSE's tie-break: Id
            for name, descending in reversed(query.orderby):
                found.sort(key=ORDER_FIELDS[name], reverse=descending)
            total = len(found)
            page, more = found[query.skip: end], end < total
        else:
            # no order: this request's own arrangement; an item can come from up to a page further on
            window = list(matching()) if query.count else list(itertools.islice(matching(), end + query.top))
            total = len(window) if query.count else None
            page, more = jittered(window, query.top, self._request_rng())[query.skip: end], len(window) > end

        context = "$metadata#Products"
        if query.expand:  # as recorded: "$metadata#Products(Attributes())" with $expand=Attributes
            context += "(" + ",".join(f"{e}()" for e in query.expand) + ")"
        body: dict = {"@odata.context": context}
        if query.count:
            body["@odata.count"] = total
        body["value"] = self.render(page, query, base_url)
        if more and query.top > 0:
            body["@odata.nextLink"] = self._next_link(query, base_url)
        return Reply(200, body)

    def _combos(self, node) -> tuple[Combo, ...]:
        """The kinds of product the cell-independent clauses of the filter allow."""
        if node is None:
            return COMBOS
        clauses = [c for c in (node.items if isinstance(node, And) else [node]) if cell_independent(c)]
        if not clauses:
            return COMBOS
        probes = [(combo, Product(ProductKey(0, 0, *combo), self.index.seed)) for combo in COMBOS]
        return tuple(combo for combo, probe in probes if all(c.matches(probe, {}) for c in clauses))

    def _next_link(self, query: Query, base_url: str) -> str:
        pairs = [(k, v) for k, v in query.params if k not in ("$skip", "$top")]
        pairs += [("$top", str(query.top)), ("$skip", str(query.skip + query.top))]
        return f"{base_url}/Products?{urlencode(pairs)}"

    # --- one product ----------------------------------------------------------------------------
    def product(self, product_id: str, pairs: Sequence[tuple[str, str]], base_url: str) -> Reply:
        try:
            query = Query.parse([(k, v) for k, v in pairs if k in ("$expand", "$select", "$format")])
        except QueryError as exc:
            return Reply(exc.status, {"detail": exc.detail})
        product = self.index.by_id(product_id)
        if product is None:
            return Reply(404, {"detail": f"Product {product_id} not found"})
        body = {"@odata.context": "$metadata#Products/$entity"}
        body.update(self.render([product], query, base_url)[0])
        return Reply(200, body)

    def attributes(self, collection: str) -> Reply:
        """``Attributes(<collection>)``: the attribute names a filter may use (CDSETool asks)."""
        names = {"CCM": CCM_ATTRIBUTES, "COP-DEM": COPDEM_ATTRIBUTES}.get(collection.strip("'"))
        if names is None:
            return Reply(404, {"detail": f"Collection {collection} not found"})
        return Reply(200, [{"Name": n, "ValueType": "String"} for n in names])

    # --- records ----------------------------------------------------------------------------------
    def render(self, products: list[Product], query: Query, base_url: str) -> list[dict]:
        keys = set(query.select) if query.select is not None else set(PRODUCT_KEYS)
        needs_zip = bool(keys & _NEEDS_ZIP) or "Locations" in query.expand
        metas = self.store.ensure_many(products) if needs_zip else [None] * len(products)
        records = []
        for product, meta in zip(products, metas, strict=True):
            full = product_record(product, meta, base_url)
            record = {k: v for k, v in full.items() if k in keys or k == "@odata.mediaContentType"}
            if "Attributes" in query.expand:
                record["Attributes"] = [
                    {"@odata.type": "#OData.CSC.StringAttribute", "Name": n, "Value": v, "ValueType": "String"}
                    for n, v in product.attributes()]
            if "Assets" in query.expand:
                record["Assets"] = []
            if "Locations" in query.expand:
                record["Locations"] = [{
                    "FormatType": "Extracted",
                    "DownloadLink": f"{base_url}/Products({product.id})/$value",
                    "ContentLength": meta.length, "Checksum": full["Checksum"],
                    "S3Path": product.s3_path}]
            records.append(record)
        return records


def product_record(product: Product, meta: ZipMeta | None, base_url: str) -> dict:
    """Every key of a CDSE product, in CDSE's order and formats."""
    start, end = product.content_date
    checksum_date = iso(product.modification_date)
    return {
        "@odata.mediaContentType": "application/octet-stream",
        "Id": product.id,
        "Name": product.name,
        "ContentType": "application/octet-stream",
        "ContentLength": meta.length if meta else 0,
        "OriginDate": iso(product.origin_date),
        "PublicationDate": iso(product.publication_date),
        "ModificationDate": iso(product.modification_date),
        "Online": True,
        "EvictionDate": NEVER_EVICTED,
        "S3Path": product.s3_path,
        "Checksum": [
            {"Value": meta.md5, "Algorithm": "MD5", "ChecksumDate": checksum_date},
            {"Value": meta.blake3, "Algorithm": "BLAKE3", "ChecksumDate": checksum_date},
        ] if meta else [],
        "ContentDate": {"Start": iso(start), "End": iso(end)},
        "Footprint": product.footprint,
        "GeoFootprint": product.geo_footprint,
    }
