"""The command line where rasterio cannot be imported: what a user without the ``processors`` extra sees.

Run as ``python tests/cli_without_rasterio.py <arguments>`` (``helpers.run_cli(..., entry=...)``).
``sys.modules["rasterio"] = None`` makes every ``import rasterio`` raise ImportError, as when the
package is not installed; nothing else changes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.modules["rasterio"] = None  # type: ignore[assignment]

from cdse_copernicus_dem_downloader import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
