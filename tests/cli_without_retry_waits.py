"""The command line, with the waits between retries of the identity and catalogue requests passed
at once: what a user sees when CDSE stays down, without sitting through the backoff (~15 s).

Run as ``python tests/cli_without_retry_waits.py <arguments>`` (``helpers.run_cli(..., entry=...)``).
Only ``cdse_dem.http.pause`` is replaced; the retries, their log lines and their count are the tool's.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cdse_dem.http

cdse_dem.http.pause = lambda seconds, stop: None

from cdse_copernicus_dem_downloader import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
