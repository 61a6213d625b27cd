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
DELIVERIES = ("2019_1", "2019_2", "2020_1", "2020_2", "2021_1", "2021_2", "2022_1", "2023_1", "2024_1")
"""The CCM deliveries CDSE serves (cdse-api.md §3), each a full set of cells."""
GLO_KINDS = ((30, "DGED"), (90, "DGED"), (30, "DTED"), (90, "DTED"))
EEA_KINDS = ((10, "DGED"), (10, "INSP"))
"""The Copernicus EEA-10 DEM, which CDSE also files under ``CCM``: a client filtering on the
collection alone gets these too. Only over Europe (``EEA_AREA``), in one delivery (``EEA_DELIVERY``,
not recorded: a choice of the simulator). Their zips are stand-ins at the GLO-30 raster size."""
KINDS = GLO_KINDS + EEA_KINDS
EEA_DELIVERY = "2021_1"
EEA_AREA = (34, 72, -32, 45)
"""south, north, west, east of the cells (south-west corners) with an EEA-10 product: the EEA-39 countries."""
CCM_TYPES = {(30, "DGED"): "SAR_DGE_30_A4AD", (90, "DGED"): "SAR_DGE_90_A407",
             (30, "DTED"): "SAR_DTE_30_615C", (90, "DTED"): "SAR_DTE_90_61F6",
             (10, "DGED"): "SAR_DGE_10_9319", (10, "INSP"): "SAR_INS_10_52C5"}
COPDEM_TYPES = {(30, "DGED"): "DGE_30", (90, "DGED"): "DGE_90",
                (30, "DTED"): "DTE_30", (90, "DTED"): "DTE_90"}
CCM_AUTHORITY = "Airbus DE"
Combo = tuple[str, str, int, str]  # collection, delivery ("" for COP-DEM), resolution, model
COMBOS: tuple[Combo, ...] = (
    *(("COP-DEM", "", res, model) for res, model in GLO_KINDS),
    *(("CCM", delivery, res, model) for delivery in DELIVERIES for res, model in GLO_KINDS),
    *(("CCM", EEA_DELIVERY, res, model) for res, model in EEA_KINDS),
)
CCM_ATTRIBUTES = ("authority", "dataset", "datasetFull", "eopIdentifier", "gridId", "orderReference",
                  "platformShortName", "productType", "resolutionClass", "sensorType")
COPDEM_ATTRIBUTES = ("authority", "productType", "spatialResolution")
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


def in_eea_area(cell: Cell) -> bool:
    south, north, west, east = EEA_AREA
    return south <= cell[0] < north and west <= cell[1] < east


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
    return _number(seed, "id-mask") & 0xFFFFFFFF


def _key_number(key: ProductKey) -> int:
    """26 bits: lat (8), lon (9), kind (3), collection (1), delivery (4), copy (1)."""
    kind = KINDS.index((key.resolution, key.model))
    delivery = DELIVERIES.index(key.delivery) if key.delivery else 0
    return ((((((key.lat + 90) << 9 | (key.lon + 180)) << 3 | kind) << 1 | (key.collection == "CCM")) << 4
             | delivery) << 1) | key.copy


def product_id(key: ProductKey, seed: int) -> str:
    """A version-5 UUID (SHA-1 of the product's identity) whose last 32 bits carry the key,
    scrambled with the seed, so that any Id a client presents is resolved without a table."""
    name = f"{seed}/{key.collection}/{key.delivery}/{key.resolution}/{key.model}/{grid_id(key.cell)}/{key.copy}"
    raw = bytearray(uuid.uuid5(_NAMESPACE, name).bytes)
    raw[12:16] = (_key_number(key) ^ _mask(seed)).to_bytes(4, "big")
    return str(uuid.UUID(bytes=bytes(raw)))


def decode_key(value: uuid.UUID, seed: int) -> ProductKey | None:
    n = int.from_bytes(value.bytes[12:16], "big") ^ _mask(seed)
    copy, n = n & 1, n >> 1
    delivery, n = n & 15, n >> 4
    ccm, n = n & 1, n >> 1
    kind, n = n & 7, n >> 3
    lon, lat = (n & 0x1FF) - 180, (n >> 9) - 90
    if not (-90 <= lat < 90 and -180 <= lon < 180) or delivery >= len(DELIVERIES) or kind >= len(KINDS):
        return None
    res, model = KINDS[kind]
    return ProductKey(lat, lon, "CCM" if ccm else "COP-DEM", DELIVERIES[delivery] if ccm else "", res, model, copy)


class Product:
    """One catalogue product; every property is what CDSE shows for it."""

    def __init__(self, key: ProductKey, seed: int, missing_grid_id: float = 0.0) -> None:
        self.key = key
        self.seed = seed
        self.missing_grid_id = missing_grid_id

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
        family = "EEA" if self.key.resolution == 10 else "GLO"
        return f"COP-DEM_{family}-{self.key.resolution}-{self.key.model}"

    @property
    def dataset(self) -> str:
        return f"{self.dataset_full}/{self.key.delivery}"

    @property
    def dsm_name(self) -> str:
        return dsm_name(self.key.cell, self.key.resolution)

    @property
    def dem_suffix(self) -> str:
        if self.key.model != "DTED":
            return "_DEM.tif"
        return "_DEM.dt2" if self.key.resolution == 30 else "_DEM.dt1"

    # --- derived from hashes: computed once when asked -------------------------------------
    @cached_property
    def _n(self) -> int:
        k = self.key
        return _number(self.seed, "product", k.collection, k.delivery, k.resolution, k.model,
                       k.lat, k.lon, k.copy)

    @cached_property
    def acquisition(self) -> tuple[datetime, datetime]:
        """The TanDEM-X acquisition span in the name."""
        return acquisition(self.seed, self.key.cell)

    @property
    def content_date(self) -> tuple[datetime, datetime]:
        """As recorded: Start is the acquisition start in the name, End is Start + 1 s."""
        start = self.acquisition[0]
        return start, start + timedelta(seconds=1)

    @cached_property
    def version(self) -> str:
        """Four letters or digits: the name's ``_jSLP`` (COP-DEM), ``_2957`` and ``:V2957`` (CCM)."""
        return "".join(_ALPHABET[(self._n >> (6 * i)) % len(_ALPHABET)] for i in range(4))

    @cached_property
    def name(self) -> str:
        """``DEM1_SAR_DGE_90_<start>_<end>_ADS_000000_jSLP.DEM``; in CCM with an 8-hex hash that
        differs between deliveries: ``..._ADS_000000_2957_4cb0c173.DEM``, as recorded."""
        start, end = self.acquisition
        code = {"DGED": "DGE", "DTED": "DTE", "INSP": "INS"}[self.key.model]
        tail = self.version
        if self.key.collection == "CCM":
            tail += f"_{self._n >> 32:08x}"
        return f"DEM1_SAR_{code}_{self.key.resolution}_{stamp(start)}_{stamp(end)}_ADS_000000_{tail}.DEM"

    @property
    def stem(self) -> str:
        return self.name[: -len(".DEM")]

    @cached_property
    def id(self) -> str:
        return product_id(self.key, self.seed)

    @property
    def root_folder(self) -> str:
        """The zip's top folder: the Name without ``.DEM`` (hash included), as recorded."""
        return self.stem

    @property
    def eop_identifier(self) -> str:
        """``urn:eop:DLR:CDEM90:Copernicus_DSM_30_S26_00_E112_00:V2957``, as recorded."""
        return f"urn:eop:DLR:CDEM{self.key.resolution}:{self.dsm_name}:V{self.version}"

    @property
    def has_inspire(self) -> bool:
        """Whether the zip root also holds ``INSPIRE.xml``: recorded "sometimes"; here half of them."""
        return bool(self._n >> 63)

    @property
    def has_grid_id(self) -> bool:
        """False for the seeded few CCM products whose record lacks ``gridId`` (as 3 of 26,479 on CDSE)."""
        if self.key.collection != "CCM" or self.missing_grid_id <= 0:
            return True
        return _number(self.seed, "no-grid-id", *self.key) >= self.missing_grid_id * 2.0**64

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
        if self.key.collection == "CCM":  # cdse-api.md §6: by the date of the name's start
            day = self.acquisition[0].strftime("%Y/%m/%d")
            return f"/eodata/CCM/{self.dataset_full}/{self.product_type}/{day}/{self.stem}"
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
        """The (Name, Value) string attributes, in the order CDSE lists them (alphabetical)."""
        names = CCM_ATTRIBUTES if self.key.collection == "CCM" else COPDEM_ATTRIBUTES
        return [(n, v) for n in names if (v := self.attribute(n)) is not None]

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
                return self.grid_id if self.has_grid_id else None
            if name == "eopIdentifier":
                return self.eop_identifier
            if name == "authority":
                return CCM_AUTHORITY
            if name == "sensorType":
                return "DEM"
            if name == "platformShortName":
                return "DEM1"
            if name == "resolutionClass":  # the value is not recorded: the resolution in metres
                return str(self.key.resolution)
            if name == "orderReference":  # not recorded either: one order per dataset
                return f"{self.dataset_full}_{self.key.delivery}"
            return None
        if name == "authority":
            return "ESA"
        if name == "spatialResolution":
            return str(self.key.resolution)
        return None


class ProductIndex:
    """Products per cell, by Id, and by the acquisition stamp that every name carries."""

    def __init__(self, cells: CellLists, seed: int, duplicate_cells: float | int | Iterable[str],
                 missing_grid_id: float = 0.0) -> None:
        self.cells = cells
        self.seed = seed
        self.missing_grid_id = missing_grid_id
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

    def has(self, cell: Cell, resolution: int) -> bool:
        """Whether the cell has products at this resolution (EEA-10: GLO-30 cells over Europe)."""
        if resolution == 10:
            return in_eea_area(cell) and self.cells.has(cell, 30)
        return self.cells.has(cell, resolution)

    def keys_in_cell(self, cell: Cell, combos: Iterable[Combo] = COMBOS) -> list[ProductKey]:
        """The products of a cell, in a fixed order, limited to ``combos`` (a scan's pre-filter)."""
        lat, lon = cell
        keys = []
        copies = None
        for collection, delivery, res, model in combos:
            if not self.has(cell, res):
                continue
            if collection == "COP-DEM" or res == 10:
                keys.append(ProductKey(lat, lon, collection, delivery, res, model))
                continue
            if copies is None:
                copies = 2 if self.is_duplicated(cell) else 1
            for copy in range(copies):
                keys.append(ProductKey(lat, lon, collection, delivery, res, model, copy))
        return keys

    def products_in_cell(self, cell: Cell, combos: Iterable[Combo] = COMBOS) -> list[Product]:
        return [Product(k, self.seed, self.missing_grid_id) for k in self.keys_in_cell(cell, combos)]

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
        if not self.has(key.cell, key.resolution) or (key.copy and not self.is_duplicated(key.cell)):
            return None
        if key.collection == "COP-DEM" and (key.delivery or key.copy or key.resolution == 10):
            return None
        if key.collection == "CCM" and not key.delivery:
            return None
        if key.resolution == 10 and (key.delivery != EEA_DELIVERY or key.copy):
            return None
        product = Product(key, self.seed, self.missing_grid_id)
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
