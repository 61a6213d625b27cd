"""Download the Copernicus DEM geocells that Sen2Cor needs, from CDSE.

A library with a small API, and ``cdse_copernicus_dem_downloader.py``, a thin command line over
it::

    import cdse_dem

    result = cdse_dem.download(["32UMA", "S2B_MSIL1C_..._T33TXF_....SAFE"], "dem/CopernicusDEM90",
                               resolution=90, model="DGED", stop=None)
    result.ok, result.exit_status, result.files, result.bytes_downloaded
    result.tiles[0].geocells[0].status      # planned | downloaded | present | sea | failed | gap | filled
    cdse_dem.plan([...])                    # what --dry-run shows, as objects
    cdse_dem.check([...], "dem/CopernicusDEM90").ready   # what --check says
    cdse_dem.plan(aoi="corsica.geojson", points=[(45.83, 6.86)])   # tiles from an area and a point
    cdse_dem.tiles_for_area((8.5, 41.3, 9.6, 43.1))      # ['32TML', ...]: the tiles of a W,S,E,N box

Errors are :class:`DemError` subclasses, each with the ``exit_status`` the command line gives
it. The names below load on first use (PEP 562), so that ``import cdse_dem`` stays instant
for the command line's ``--help``.

Modules, one concept each (the pure core: ``tiles``, ``grid``, ``areas``, ``sen2cor``'s rule, ``planning``,
``catalogue``'s queries and product choice, ``settings``' precedence; the rest is I/O):

- ``job``: one run, from a request to its Result: the API functions, the order of the work, the stop event
- ``report``: the Result records (the ``--summary-json`` document), the printed summary and plan,
  ``--check``'s verdict per tile and Sen2Cor's missing-tiles list, the ``--kml-report`` picture
- ``errors``: the exceptions, and the exit status each leads to
- ``settings``: the tool home and its folders, the choices (collections, deliveries, coverage, transfer),
  configuration.xml checked against its XSD, and the precedence of the command line over it
- ``tiles``: the 56,686 Sentinel-2 tile ids (data/), and tile lists, tile ids, SAFE names and folders of
  products as users give them
- ``areas``: the tiles of an area (GeoJSON, WKT, a W,S,E,N box) or of a point, from every tile's bounds and
  the footprints of the few that may meet it
- ``grid``: a tile's lon/lat footprint (the tiling KML through its index, or computed) and the 1°×1° geocells
  it overlaps
- ``sen2cor``: the cells Sen2Cor asks for beyond the footprint, and the two DEM lines of its L2A_GIPP.xml
- ``processors``: each complete tile's DEM as sen2like (a GeoTIFF on the tile's grid) and FORCE (a VRT over
  its geocells) read it, and a quicklook of it; made with GDAL (rasterio, an optional extra) as geocells land
- ``planning``: a run's plan: each geocell once, and what becomes of it
- ``catalogue``: the OData catalogue: searches by area (few, ordered, paged), records to products
- ``search``: a run's searches side by side, each answer handed to the plan and the downloads; the stop flag
- ``credentials``: where the user name and password come from, their RSA-encrypted store, the terminal prompt
- ``http``: the three CDSE addresses, the pooled session without ``.netrc`` (whose connections a stop can
  cut), its declared retries, and the download token (an ``AuthBase`` that knows CDSE's download hosts)
- ``session``: the CDSE login every download shares: tokens, refresh, logout; the run's time budget
- ``fetch``: parallel downloads of the planned geocells, each recorded as it ends
- ``transfer``: one product's bytes, verified as they arrive: the account's connection slots, the zip,
  the Nodes API, and the choice between them
- ``dem_folder``: the folder Sen2Cor reads: is a file a whole DEM (GeoTIFF/DTED), the DEM layer out of a zip,
  ``dict_filename_dem_id.json`` and the open-sea record
- ``gapfill``: a gap's file (land the dataset lacks) made from another dataset's product of the cell: resampled,
  written as a real file of that resolution and latitude
- ``fsutil``: temporaries, atomic writes, files set aside, the files the user names (regular, size-capped),
  JSON that cannot be parsed, disk full; OS locks and account slots (in a folder of the user's own)
- ``logs``: the command line's log set-up, and secrets kept out of every record and output
"""

import logging

__version__ = "2.1.0"
RELEASE_DATE = "07-December-2026"

# A library logs, the application decides where to: without a handler of the caller's, Python's
# last-resort handler would print our warnings to stderr. Set here, it holds whichever module comes first.
logging.getLogger("cdse_dem").addHandler(logging.NullHandler())

# name -> the module that defines it
_EXPORTS = {
    "download": "cdse_dem.job",
    "plan": "cdse_dem.job",
    "check": "cdse_dem.job",
    "tiles_for_area": "cdse_dem.areas",
    "Result": "cdse_dem.report",
    "TileResult": "cdse_dem.report",
    "GeocellResult": "cdse_dem.report",
    "TileCheck": "cdse_dem.report",
    "MissingFile": "cdse_dem.report",
    "InvalidEntry": "cdse_dem.report",
    "Totals": "cdse_dem.report",
    "Credentials": "cdse_dem.credentials",
    "DemError": "cdse_dem.errors",
    "UsageError": "cdse_dem.errors",
    "ConfigError": "cdse_dem.errors",
    "InputError": "cdse_dem.errors",
    "CredentialError": "cdse_dem.errors",
    "AuthRejected": "cdse_dem.errors",
    "ServiceError": "cdse_dem.errors",
    "AccessDenied": "cdse_dem.errors",
    "BudgetExhausted": "cdse_dem.errors",
    "DiskFull": "cdse_dem.errors",
    "Interrupted": "cdse_dem.errors",
}

__all__ = ["RELEASE_DATE", "__version__", *_EXPORTS]


def __getattr__(name: str):
    """The API, imported when first asked for (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cdse_dem' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups do not come here again
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
