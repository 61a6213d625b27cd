"""Download the Copernicus DEM geocells that Sen2Cor needs, from CDSE.

The package is a library; ``cdse_copernicus_dem_downloader.py`` is a thin command line
over it. Modules import their heavy dependencies lazily so that ``--help`` stays instant.
"""

__version__ = "2.0.0"
RELEASE_DATE = "24-November-2026"
