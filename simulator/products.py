"""The product records of the two DEM collections, derived from the cell lists and a seed.

Nothing is stored: a product is a function of its key (collection, resolution, model, delivery,
cell, copy) and the seed, so Ids and names are stable across runs and ~740,000 products cost
nothing until a query touches them. Properties are computed lazily because a full scan
evaluates filters on keys (collection, product type, grid id) far more often than on names.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import NamedTuple

from simulator.cells import Cell, CellLists, dsm_name, grid_id, parse_grid_id

COLLECTIONS = ("COP-DEM", "CCM")
DELIVERIES = ("2019_1", "2020_1", "2021_1", "2022_1", "2023_1", "2024_1")
KINDS = ((30, "DGED"), (90, "DGED"), (30, "DTED"), (90, "DTED"))
CCM_TYPES = {(30, "DGED"): "SAR_DGE_30_A4AD", (90, "DGED"): "SAR_DGE_90_A407",
             (30, "DTED"): "SAR_DTE_30_615C", (90, "DTED"): "SAR_DTE_90_61F6"}
COPDEM_TYPES = {(30, "DGED"): "DGE_30", (90, "DGED"): "DGE_90",
                (30, "DTED"): "DTE_30", (90, "DTED"): "DTE_90"}
Combo = tuple[str, str, int, str]  # collection, delivery ("" for COP-DEM), resolution, model
COMBOS: tuple[Combo, ...] = (
    *(("COP-DEM", "", res, model) for res, model in KINDS),
    *(("CCM", delivery, res, model) for delivery in DELIVERIES for res, model in KINDS),
)
NEVER_EVICTED = "9999-12-31T23:59:59.999999Z"
_NAMESPACE = uuid.UUID("6f1c2a4e-52a5-4f43-9a53-0cd5e0000000")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_EPOCH = datetime(2010, 12, 12, tzinfo=UTC)


def iso(moment: datetime) -> str:
    """CDSE's timestamp format: 6-digit microseconds and ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _number(seed: int, *parts: object) -> int:
    """A stable 64-bit number for ``parts`` (Python's ``hash`` changes between runs)."""
    text = "|".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def acquisition(seed: int, cell: Cell) -> tuple[datetime, datetime]:
    """TanDEM-X acquisition span of a cell (Dec 2010 to 2015), shared by all its products."""
    n = _number(seed, "acq", *cell)
    start = _EPOCH + timedelta(seconds=n % (3 * 365 * 86400))
    end = start + timedelta(days=300 + (n >> 32) % 600, seconds=(n >> 16) % 86400)
    return start, end


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


class ProductKey(NamedTuple):
    """What identifies a product; ``copy`` is 1 for the second product of a duplicated CCM cell.

    A named tuple rather than a dataclass: a full scan makes ~740,000 of them.
    """

    lat: int
    lon: int
    collection: str
    delivery: str
    resolution: int
    model: str
    copy: int = 0

    @property
    def cell(self) -> Cell:
        return self.lat, self.lon


def _mask(seed: int) -> int:
    return _number(seed, "id-mask") & 0xFFFFFF


def _key_number(key: ProductKey) -> int:
    """24 bits: lat (8), lon (9), kind (2), collection (1), delivery (3), copy (1)."""
    kind = KINDS.index((key.resolution, key.model))
    delivery = DELIVERIES.index(key.delivery) if key.delivery else 0
    return ((((((key.lat + 90) << 9 | (key.lon + 180)) << 2 | kind) << 1 | (key.collection == "CCM")) << 3
             | delivery) << 1) | key.copy


def product_id(key: ProductKey, seed: int) -> str:
    """A version-5 UUID (SHA-1 of the product's identity) whose last 24 bits carry the key,
    scrambled with the seed, so that any Id a client presents is resolved without a table."""
    name = f"{seed}/{key.collection}/{key.delivery}/{key.resolution}/{key.model}/{grid_id(key.cell)}/{key.copy}"
    raw = bytearray(uuid.uuid5(_NAMESPACE, name).bytes)
    raw[13:16] = (_key_number(key) ^ _mask(seed)).to_bytes(3, "big")
    return str(uuid.UUID(bytes=bytes(raw)))


def decode_key(value: uuid.UUID, seed: int) -> ProductKey | None:
    n = int.from_bytes(value.bytes[13:16], "big") ^ _mask(seed)
    copy, n = n & 1, n >> 1
    delivery, n = n & 7, n >> 3
    ccm, n = n & 1, n >> 1
    kind, n = n & 3, n >> 2
    lon, lat = (n & 0x1FF) - 180, (n >> 9) - 90
    if not (-90 <= lat < 90 and -180 <= lon < 180) or delivery >= len(DELIVERIES):
        return None
    res, model = KINDS[kind]
    return ProductKey(lat, lon, "CCM" if ccm else "COP-DEM", DELIVERIES[delivery] if ccm else "", res, model, copy)


class Product:
    """One catalogue product; every property is what CDSE shows for it."""

    def __init__(self, key: ProductKey, seed: int) -> None:
        self.key = key
        self.seed = seed

    def __repr__(self) -> str:
        return f"Product({self.key})"

    # --- attributes a filter looks at first: cheap --------------------------------------
    @property
    def collection(self) -> str:
        return self.key.collection

    @property
    def product_type(self) -> str:
        kind = (self.key.resolution, self.key.model)
        return CCM_TYPES[kind] if self.key.collection == "CCM" else COPDEM_TYPES[kind]

    @property
    def grid_id(self) -> str:
        return grid_id(self.key.cell)

    @property
    def dataset_full(self) -> str:
        return f"COP-DEM_GLO-{self.key.resolution}-{self.key.model}"

    @property
    def dataset(self) -> str:
        return f"{self.dataset_full}/{self.key.delivery}"

    @property
    def dsm_name(self) -> str:
        return dsm_name(self.key.cell, self.key.resolution)

    @property
    def dem_suffix(self) -> str:
        if self.key.model == "DGED":
            return "_DEM.tif"
        return "_DEM.dt2" if self.key.resolution == 30 else "_DEM.dt1"

    # --- derived from hashes: computed once when asked -------------------------------------
    @cached_property
    def _n(self) -> int:
        k = self.key
        return _number(self.seed, "product", k.collection, k.delivery, k.resolution, k.model,
                       k.lat, k.lon, k.copy)

    @cached_property
    def content_date(self) -> tuple[datetime, datetime]:
        return acquisition(self.seed, self.key.cell)

    @cached_property
    def name(self) -> str:
        start, end = self.content_date
        code = "DGE" if self.key.model == "DGED" else "DTE"
        n = self._n
        tail = "".join(_ALPHABET[(n >> (6 * i)) % len(_ALPHABET)] for i in range(4))
        return f"DEM1_SAR_{code}_{self.key.resolution}_{stamp(start)}_{stamp(end)}_ADS_000000_{tail}.DEM"

    @property
    def stem(self) -> str:
        return self.name[: -len(".DEM")]

    @cached_property
    def id(self) -> str:
        return product_id(self.key, self.seed)

    @cached_property
    def root_folder(self) -> str:
        """The zip's top folder: CCM zips carry an 8-hex suffix, as on CDSE."""
        if self.key.collection == "CCM":
            return f"{self.stem}_{self._n >> 32:08x}"
        return self.stem

    @cached_property
    def dates(self) -> tuple[datetime, datetime, datetime]:
        """OriginDate, PublicationDate, ModificationDate."""
        k, n = self.key, self._n
        if k.collection == "CCM":
            base = datetime(int(k.delivery[:4]), 3, 1, tzinfo=UTC)
        else:
            base = datetime(2021, 4, 1, tzinfo=UTC)
        origin = base + timedelta(seconds=n % (60 * 86400), microseconds=(n >> 20) % 1_000_000)
        publication = datetime(2023, 10, 1, tzinfo=UTC) + timedelta(
            seconds=(n >> 8) % (200 * 86400), microseconds=(n >> 30) % 1_000_000)
        if k.collection == "CCM" and int(k.delivery[:4]) >= 2023:
            publication = max(publication, origin + timedelta(days=30))
        modification = publication + timedelta(days=k.copy * 40, seconds=(n >> 40) % 86400,
                                                microseconds=(n >> 12) % 1_000_000)
        return origin, publication, modification

    @property
    def origin_date(self) -> datetime:
        return self.dates[0]

    @property
    def publication_date(self) -> datetime:
        return self.dates[1]

    @property
    def modification_date(self) -> datetime:
        return self.dates[2]

    @property
    def s3_path(self) -> str:
        if self.key.collection == "CCM":
            return f"/eodata/CCM/{self.dataset_full}/{self.product_type}/{self.key.delivery}/{self.name}"
        return f"/eodata/auxdata/CopDEM/{self.dataset_full}/{self.name}"

    def footprint_ring(self) -> list[tuple[int, int]]:
        lat, lon = self.key.cell
        return [(lon, lat), (lon + 1, lat), (lon + 1, lat + 1), (lon, lat + 1), (lon, lat)]

    @property
    def footprint(self) -> str:
        ring = ", ".join(f"{x} {y}" for x, y in self.footprint_ring())
        return f"geography'SRID=4326;POLYGON (({ring}))'"

    @property
    def geo_footprint(self) -> dict:
        return {"type": "Polygon", "coordinates": [[[x, y] for x, y in self.footprint_ring()]]}

    def attributes(self) -> list[tuple[str, str]]:
        """The (Name, Value) string attributes, in the order CDSE lists them."""
        if self.key.collection == "CCM":
            return [("dataset", self.dataset), ("datasetFull", self.dataset_full),
                    ("eopIdentifier", self.stem), ("gridId", self.grid_id),
                    ("productType", self.product_type)]
        return [("authority", "ESA"), ("productType", self.product_type),
                ("spatialResolution", str(self.key.resolution))]

    def attribute(self, name: str) -> str | None:
        """One attribute's value, computed alone: filters ask for one, scans ask ~740,000 times."""
        if name == "productType":
            return self.product_type
        if self.key.collection == "CCM":
            if name == "dataset":
                return self.dataset
            if name == "datasetFull":
                return self.dataset_full
            if name == "gridId":
                return self.grid_id
            if name == "eopIdentifier":
                return self.stem
            return None
        if name == "authority":
            return "ESA"
        if name == "spatialResolution":
            return str(self.key.resolution)
        return None


class ProductIndex:
    """Products per cell, by Id, and by the acquisition stamp that every name carries."""

    def __init__(self, cells: CellLists, seed: int, duplicate_cells: float | int | Iterable[str]) -> None:
        self.cells = cells
        self.seed = seed
        self._dups = self._duplicates(duplicate_cells)
        self._lock = threading.Lock()
        self._by_stamp: dict[str, list[Cell]] | None = None

    def _duplicates(self, spec: float | int | Iterable[str]) -> frozenset[Cell] | float:
        if isinstance(spec, bool):
            raise TypeError("duplicate_cells must be a fraction, a count or grid ids")
        if isinstance(spec, float):
            return spec
        if isinstance(spec, int):
            ranked = sorted(self.cells.all_cells(), key=lambda c: _number(self.seed, "dup", *c))
            return frozenset(ranked[:spec])
        cells = set()
        for text in spec:
            cell = parse_grid_id(text)
            if cell is None:
                raise ValueError(f"not a grid id: {text!r}")
            cells.add(cell)
        return frozenset(cells)

    def is_duplicated(self, cell: Cell) -> bool:
        if isinstance(self._dups, float):
            return _number(self.seed, "dup", *cell) < self._dups * 2.0**64
        return cell in self._dups

    def keys_in_cell(self, cell: Cell, combos: Iterable[Combo] = COMBOS) -> list[ProductKey]:
        """The products of a cell, in a fixed order, limited to ``combos`` (a scan's pre-filter)."""
        lat, lon = cell
        keys = []
        copies = None
        for collection, delivery, res, model in combos:
            if not self.cells.has(cell, res):
                continue
            if collection == "COP-DEM":
                keys.append(ProductKey(lat, lon, collection, delivery, res, model))
                continue
            if copies is None:
                copies = 2 if self.is_duplicated(cell) else 1
            for copy in range(copies):
                keys.append(ProductKey(lat, lon, collection, delivery, res, model, copy))
        return keys

    def products_in_cell(self, cell: Cell, combos: Iterable[Combo] = COMBOS) -> list[Product]:
        return [Product(k, self.seed) for k in self.keys_in_cell(cell, combos)]

    def iter_cells(self) -> Iterator[Cell]:
        return iter(self.cells.all_cells())

    def by_id(self, text: str) -> Product | None:
        """The product with this Id, or None: decoded from the Id itself, then checked."""
        try:
            wanted = uuid.UUID(text)
        except ValueError:
            return None
        key = decode_key(wanted, self.seed)
        if key is None or key.delivery not in ("", *DELIVERIES):
            return None
        if not self.cells.has(key.cell, key.resolution) or (key.copy and not self.is_duplicated(key.cell)):
            return None
        if key.collection == "COP-DEM" and (key.delivery or key.copy):
            return None
        if key.collection == "CCM" and not key.delivery:
            return None
        product = Product(key, self.seed)
        return product if product.id == str(wanted) else None

    def cells_for_name(self, name: str) -> list[Cell]:
        """Cells whose products could carry ``name`` (names embed the cell's acquisition start)."""
        parts = name.split("_")
        if len(parts) < 6 or not name.startswith("DEM1_SAR_"):
            return []
        with self._lock:
            if self._by_stamp is None:
                table: dict[str, list[Cell]] = {}
                for cell in self.cells.all_cells():
                    table.setdefault(stamp(acquisition(self.seed, cell)[0]), []).append(cell)
                self._by_stamp = table
            return list(self._by_stamp.get(parts[4], []))
