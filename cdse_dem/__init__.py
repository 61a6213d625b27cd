"""Download the Copernicus DEM geocells that Sen2Cor needs, from CDSE.

A library with a small API, and ``cdse_copernicus_dem_downloader.py``, a thin command line over
it::

    import cdse_dem

    result = cdse_dem.download(["32UMA", "S2B_MSIL1C_..._T33TXF_....SAFE"], "dem/CopernicusDEM90",
                               resolution=90, model="DGED", stop=None)
    result.ok, result.exit_status, result.files, result.bytes_downloaded
    result.tiles[0].geocells[0].status      # planned | downloaded | present | sea | failed
    cdse_dem.plan([...])                    # what --dry-run shows, as objects
    cdse_dem.check([...], "dem/CopernicusDEM90").ready   # what --check says

Errors are :class:`DemError` subclasses, each with the ``exit_status`` the command line gives
it. The names below load on first use (PEP 562), so that ``import cdse_dem`` stays instant
for the command line's ``--help``.

Modules:

- ``job``: one run, tiles to Result: the API functions, the order of the work, the stop event
- ``report``: the Result objects, the summary/plan lines and the --summary-json document
- ``errors``: the exceptions and the exit statuses they lead to
- ``options``: the choices (collections, deliveries, ...) and the command line's precedence
- ``config``: configuration.xml, validated against configuration.xsd
- ``paths``: the tool home (configuration/, auxiliary/, credentials/, output_dir/), ``~`` expansion
- ``entries``: tile lists, tile ids and SAFE names as the user wrote them
- ``tiles``: the 56,686 Sentinel-2 tile ids (data/)
- ``footprint``: a tile's lon/lat outline, from the tiling KML or computed
- ``kml_index``: the tiling KML's index, built once beside it
- ``geocells``: the 1°×1° cells a footprint overlaps, and their names
- ``sen2cor``: the cells Sen2Cor asks for beyond the footprint
- ``planning``: the plan of a run: each geocell once, and what becomes of it
- ``search_areas``: the geocells to search grouped into few catalogue searches
- ``area_search``: those searches run side by side, answers to the plan and the downloads
- ``catalogue``: the OData catalogue: queries, paging, records to products
- ``background``: daemon worker threads, and the stop flag a run hands down to its parts
- ``credentials``: where the user name and password come from
- ``keystore``: the stored, RSA-encrypted password
- ``prompt``: asking on the terminal (the command line only)
- ``redact``: keeping secrets out of logs, messages and files
- ``endpoints``: the three CDSE service addresses
- ``http``: the pooled requests session, without .netrc
- ``retry``: the backoff and Retry-After policy
- ``session``: the CDSE login shared by every download: tokens, refresh, logout, the time budget
- ``fetch``: parallel downloads of the planned geocells, recorded one by one
- ``transfer``: the Nodes-or-zip choice of a run
- ``nodes``: CDSE's Nodes API: the DEM file alone
- ``downloading``: one product zip or file, verified as it arrives, retried, stoppable
- ``connections``: the account's download connections, shared by its runs on this machine
- ``locks``: OS file locks: per geocell, per record, per account slot
- ``extract``: the DEM layer out of a verified zip
- ``integrity``: is a file a whole DEM of its cell (GeoTIFF/DTED headers)
- ``cache``: dict_filename_dem_id.json, the folder's record
- ``sea_record``: open-sea cells and each file's dataset, for the next run
- ``fsutil``: temporaries, atomic writes, reading inputs, disk full
- ``readiness``: --check's verdict per tile, and Sen2Cor's missing-tiles list
- ``gipp``: Sen2Cor's L2A_GIPP.xml: the two DEM lines
- ``kml_report``: --kml-report, footprints and geocells coloured by status
- ``logs``: the command line's log format and handlers
"""

__version__ = "2.0.0"
RELEASE_DATE = "24-November-2026"

# name -> the module that defines it
_EXPORTS = {
    "download": "cdse_dem.job",
    "plan": "cdse_dem.job",
    "check": "cdse_dem.job",
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
