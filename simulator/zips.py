"""Product zips laid out as CDSE's, generated once per product and cached on disk.

The catalogue must state ``ContentLength`` and the MD5/BLAKE3 of the exact bytes the download
host serves, so a product's zip is made the first time either side needs it, written to a
temporary file and renamed (a concurrent request for the same product waits on the same lock,
another process at worst makes an identical file), and described by a small JSON beside it.
Bytes depend only on the product, the size and the seed, so checksums are stable across runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from simulator.products import Product

FORMAT_VERSION = 4  # 4: terrain continuous across ±180° (3: recorded names and layout; 2: textured HEM)
_QUICKLOOK_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hn"
    "Pk1xeXBkeFxlZ2P/wAALCAAIAAgBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAABv/EABcQAQADAAAAAAAAAAAAAAAAAAQAITH/2gAIAQEA"
    "AD8ANiHlT//Z")
_EULA_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")


@dataclass(frozen=True)
class ZipMeta:
    path: Path
    length: int
    md5: str
    blake3: str


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"cdse-simulator-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"


class ZipStore:
    """Makes, caches and describes product zips for one size and seed."""

    def __init__(self, cache_dir: Path | str | None, size: str, seed: int) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.seed = seed
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._meta: dict[str, ZipMeta] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                        thread_name_prefix="sim-zip")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _path(self, product: Product) -> Path:
        return self.cache_dir / f"{product.id}-{self.size}-v{FORMAT_VERSION}.zip"

    def ensure(self, product: Product) -> ZipMeta:
        """The zip of ``product`` on disk, made now if needed, with its length and checksums."""
        key = product.id
        with self._lock:
            meta = self._meta.get(key)
            if meta is not None:
                return meta
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                meta = self._meta.get(key)
            if meta is None:
                meta = self._load(product) or self._make(product)
                with self._lock:
                    self._meta[key] = meta
        return meta

    def ensure_many(self, products: Iterable[Product]) -> list[ZipMeta]:
        """``ensure`` for a page of results, made in parallel (numpy, zlib and hashing release the GIL)."""
        items = list(products)
        missing = [p for p in items if p.id not in self._meta]
        if len(missing) > 1:
            list(self._pool.map(self.ensure, missing))
        return [self.ensure(p) for p in items]

    def _load(self, product: Product) -> ZipMeta | None:
        path = self._path(product)
        try:
            info = json.loads(path.with_suffix(".json").read_text())
            if path.stat().st_size != info["length"]:
                return None
            return ZipMeta(path, info["length"], info["md5"], info["blake3"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _make(self, product: Product) -> ZipMeta:
        path = self._path(product)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".part-", suffix=".zip")
        try:
            with os.fdopen(fd, "wb") as out:
                write_product_zip(out, product, self.size)
            md5, b3, length = _digests(Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = ZipMeta(path, length, md5, b3)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".part-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            json.dump({"length": length, "md5": md5, "blake3": b3, "name": product.name}, out)
        os.replace(tmp, path.with_suffix(".json"))
        return meta


def _digests(path: Path) -> tuple[str, str, int]:
    from blake3 import blake3

    md5, b3, length = hashlib.md5(), blake3(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            b3.update(chunk)
            length += len(chunk)
    return md5.hexdigest(), b3.hexdigest(), length


PREVIEW_LAYERS = ("DEM", "EDM", "FLM", "HEM", "WBM", "SRC")
"""The six quick looks of a recorded product's PREVIEW/ (beside ``_QL.kml`` and ``_SRC.kml``)."""
QUICKLOOK_ROWS = 694
"""Rows of a quick look: with the columns, about the 480 kB of a recorded one in "realistic"."""
SMALL_QUICKLOOK_ROWS = 61
"""Rows of a quick look in the "small" size: a client never reads them."""
GSC_FILES = 4
"""A recorded CCM product's root holds four ``GSC_CR_ESA_COP-DEM_<dataset>_<date>_<time>.xml``."""


def write_product_zip(out, product: Product, size: str) -> None:
    """Write the zip of ``product`` to the binary file ``out`` (seekable), laid out as recorded.

    Root folder: the product Name without ``.DEM`` (hash included in CCM). In it, CCM products
    carry four ``GSC_CR_ESA_...xml`` (and, for about half of them, ``INSPIRE.xml``), COP-DEM
    products ``INSPIRE.xml``, a JPEG quick look and ``GSC#<stem>.xml``. The cell folder holds
    ``<cell>.xml``, ``DEM/`` (the layer a client keeps), ``AUXFILES/`` (EDM, FLM, WBM, HEM
    GeoTIFFs and ACM.kml), ``INFO/eula_F.pdf`` and ``PREVIEW/`` (six quick looks, two KMLs).

    Every raster has the real dimensions in both sizes. "realistic": uncompressed GeoTIFFs, a
    height error layer (HEM) of noise as large as the DEM, as recorded (a GLO-90 zip ~13 MB).
    "small": a one-minute-block field in DEFLATE GeoTIFFs and zip-deflated DTED, tens of kB.
    """
    import numpy as np

    from simulator.dted import dted_bytes
    from simulator.geotiff import geotiff_parts
    from simulator.terrain import coarse_elevation, elevation, raster_shape

    lat, lon = product.key.cell
    res = product.key.resolution
    realistic = size == "realistic"
    rows, cols = raster_shape(lat, res, size)
    dem = elevation(lat, lon, rows, cols, product.seed) if realistic else coarse_elevation(
        lat, lon, rows, cols, product.seed)
    dx, dy = 1.0 / (cols - 1), 1.0 / (rows - 1)
    root = product.root_folder + "/"
    dsm = product.dsm_name
    cell_dir = f"{root}{dsm}/"
    when = product.publication_date.timetuple()[:6]

    def member(name: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=when)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def write_tif(zf: zipfile.ZipFile, name: str, array, deflate_member: bool, sx=dx, sy=dy) -> None:
        header, data = geotiff_parts(array, lon, lat + 1, sx, sy, compress=not realistic)
        with zf.open(member(name, deflate_member and realistic), "w") as w:
            w.write(header)
            w.write(memoryview(data).cast("B"))

    with zipfile.ZipFile(out, "w", compresslevel=1) as zf:
        if product.collection == "CCM":
            for name in gsc_names(product):
                zf.writestr(member(root + name, True), _gsc_xml(product))
            if product.has_inspire:
                zf.writestr(member(root + "INSPIRE.xml", True), _inspire_xml(product))
        else:
            zf.writestr(member(root + "INSPIRE.xml", True), _inspire_xml(product))
            zf.writestr(member(f"{root}{product.stem}-ql.jpg", False), _QUICKLOOK_JPEG)
            zf.writestr(member(f"{root}GSC#{product.stem}.xml", True), _gsc_xml(product))
        zf.writestr(member(f"{cell_dir}{dsm}.xml", True), _cell_xml(product, rows, cols))
        dem_name = f"{cell_dir}DEM/{dsm}{product.dem_suffix}"
        if product.key.model == "DTED":  # DTED has no compression of its own: the zip deflates it
            zf.writestr(member(dem_name, not realistic), dted_bytes(dem, lat, lon, 2 if res != 90 else 1))
        else:
            write_tif(zf, dem_name, dem, False)
        if realistic:
            high = dem > np.float32(np.median(dem[:: max(1, rows // 50), :: max(1, cols // 50)]))
            layers = {
                "EDM": _edit_mask(high, product.seed, lat, lon),
                "FLM": np.zeros_like(high, dtype=np.uint8),
                "WBM": (dem < np.float32(130.0)).astype(np.uint8),
                "HEM": _height_error(dem, high, product.seed, lat, lon),
            }
        else:  # the same layers, constant: a few hundred bytes each, at the DEM's raster
            high = np.zeros(dem.grid.shape, dtype=bool)
            layers = {
                "EDM": dem.like(np.zeros(high.shape, dtype=np.uint8)),
                "FLM": dem.like(np.zeros(high.shape, dtype=np.uint8)),
                "WBM": dem.like(np.zeros(high.shape, dtype=np.uint8)),
                "HEM": dem.like(np.full(high.shape, 1.0, dtype=np.float32)),
            }
        for layer, array in layers.items():
            write_tif(zf, f"{cell_dir}AUXFILES/{dsm}_{layer}.tif", array, True)
        zf.writestr(member(f"{cell_dir}AUXFILES/{dsm}_ACM.kml", True), _acm_kml(product))
        zf.writestr(member(f"{cell_dir}INFO/eula_F.pdf", True), _EULA_PDF)
        ql_rows = QUICKLOOK_ROWS if realistic else SMALL_QUICKLOOK_ROWS
        pick_rows = np.linspace(0, rows - 1, ql_rows).round().astype(int)
        qcols = round((ql_rows - 1) * (cols - 1) / (rows - 1)) + 1
        pick_cols = np.linspace(0, cols - 1, qcols).round().astype(int)
        layers["DEM"] = dem
        layers["SRC"] = np.ones_like(high, dtype=np.uint8) if realistic else dem.like(np.ones_like(high, np.uint8))
        for layer in PREVIEW_LAYERS:
            array = _quicklook(layers[layer], pick_rows, pick_cols)
            write_tif(zf, f"{cell_dir}PREVIEW/{dsm}_{layer}_QL.tif", array, True,
                      sx=1.0 / (qcols - 1), sy=1.0 / (ql_rows - 1))
        zf.writestr(member(f"{cell_dir}PREVIEW/{dsm}_QL.kml", True), _acm_kml(product))
        zf.writestr(member(f"{cell_dir}PREVIEW/{dsm}_SRC.kml", True), _acm_kml(product))


def _quicklook(raster, pick_rows, pick_cols):
    """A layer sampled at the quick look's rows and columns, stretched to bytes (a block raster
    stays one: its blocks are simply picked)."""
    import numpy as np

    from simulator.terrain import BlockRaster

    values = raster.grid if isinstance(raster, BlockRaster) else raster[np.ix_(pick_rows, pick_cols)]
    low, span = float(values.min()), float(values.max() - values.min()) or 1.0
    stretched = ((values - low) * (255.0 / span)).astype(np.uint8)
    if isinstance(raster, BlockRaster):
        return BlockRaster(stretched, raster.row_of[pick_rows], raster.col_of[pick_cols])
    return stretched


def gsc_names(product: Product) -> list[str]:
    """``GSC_CR_ESA_COP-DEM_GLO-90-DGED_20240301_101500.xml`` and three more, as recorded."""
    dataset = product.dataset_full[len("COP-DEM_"):]
    moment = product.origin_date
    return [f"GSC_CR_ESA_COP-DEM_{dataset}_{(moment + timedelta(minutes=7 * i)).strftime('%Y%m%d_%H%M%S')}.xml"
            for i in range(GSC_FILES)]


def _aux_texture(seed: int, lat: int, lon: int):
    """The seeded random stream of one cell's auxiliary layers."""
    import numpy as np

    return np.random.default_rng([seed, lat + 90, lon + 180])


def _height_error(dem, high, seed: int, lat: int, lon: int):
    """A height error map (metres, float32) with the texture of a real one: per-pixel noise on a
    terrain-dependent base. It barely deflates, as on CDSE, which is what brings a realistic
    GLO-90 DGED zip near CDSE's size (about 13 MB; constant masks made it 6)."""
    import numpy as np

    noise = _aux_texture(seed, lat, lon).random(dem.shape, dtype=np.float32) * np.float32(3.0)
    return np.where(high, np.float32(1.5), np.float32(0.75)) + noise


def _edit_mask(high, seed: int, lat: int, lon: int):
    """An editing mask (uint8 codes 0-15), speckled as real ones are."""
    import numpy as np

    codes = _aux_texture(seed + 1, lat, lon).integers(0, 16, size=high.shape, dtype=np.uint8)
    return np.where(high, codes, np.uint8(0))


def _inspire_xml(product: Product) -> str:
    start, end = product.content_date
    lat, lon = product.key.cell
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<gmd:MD_Metadata xmlns:gmd="http://www.isotc211.org/2005/gmd" xmlns:gco="http://www.isotc211.org/2005/gco">
  <gmd:fileIdentifier><gco:CharacterString>{product.stem}</gco:CharacterString></gmd:fileIdentifier>
  <gmd:identificationInfo><gmd:MD_DataIdentification>
    <gmd:citation><gmd:CI_Citation><gmd:title><gco:CharacterString>Copernicus DEM {product.dataset_full} \
{product.grid_id}</gco:CharacterString></gmd:title></gmd:CI_Citation></gmd:citation>
    <gmd:extent><gmd:EX_Extent><gmd:geographicElement><gmd:EX_GeographicBoundingBox>
      <gmd:westBoundLongitude><gco:Decimal>{lon}</gco:Decimal></gmd:westBoundLongitude>
      <gmd:eastBoundLongitude><gco:Decimal>{lon + 1}</gco:Decimal></gmd:eastBoundLongitude>
      <gmd:southBoundLatitude><gco:Decimal>{lat}</gco:Decimal></gmd:southBoundLatitude>
      <gmd:northBoundLatitude><gco:Decimal>{lat + 1}</gco:Decimal></gmd:northBoundLatitude>
    </gmd:EX_GeographicBoundingBox></gmd:geographicElement></gmd:EX_Extent></gmd:extent>
    <gmd:temporalExtent><gco:CharacterString>{start.isoformat()} {end.isoformat()}</gco:CharacterString>\
</gmd:temporalExtent>
  </gmd:MD_DataIdentification></gmd:identificationInfo>
</gmd:MD_Metadata>
"""


def _gsc_xml(product: Product) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<GSC><name>{product.name}</name>'
            f"<productType>{product.product_type}</productType><gridId>{product.grid_id}</gridId></GSC>\n")


def _cell_xml(product: Product, rows: int, cols: int) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<DEM><tile>{product.dsm_name}</tile>'
            f"<rows>{rows}</rows><columns>{cols}</columns><format>{product.key.model}</format></DEM>\n")


def _acm_kml(product: Product) -> str:
    ring = " ".join(f"{x},{y}" for x, y in product.footprint_ring())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2"><Document>'
            f"<Placemark><name>{product.dsm_name}</name><Polygon><outerBoundaryIs><LinearRing>"
            f"<coordinates>{ring}</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>"
            "</Document></kml>\n")
