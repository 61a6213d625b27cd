#!/usr/bin/env python3
"""The command line, opening a new connection for every request as the reference tool did.

Benchmark 2's one-at-a-time reference (bench_throughput.py) runs the tool as
``python benchmarks/fresh_connections.py <arguments>``: the product has no switch for this, so
this wrapper gives every HTTP session of the run ``Connection: close`` (the server then closes
each connection after its answer) and calls the command line's ``main``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cdse_dem.http

_pooled = cdse_dem.http.new_http_session


def _fresh_connections(*args, **kwargs):
    session = _pooled(*args, **kwargs)
    session.headers["Connection"] = "close"
    return session


cdse_dem.http.new_http_session = _fresh_connections

from cdse_copernicus_dem_downloader import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
