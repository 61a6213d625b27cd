"""One HTTP connection pool per run, shared by catalogue, identity and download calls.

A pool sized to the worker count lets every download worker keep its connection alive
between products (the reference tool opened a new session per file).
"""

from cdse_dem import __version__

USER_AGENT = f"cdse-copernicus-dem-downloader/{__version__}"
TIMEOUT = (10.0, 60.0)  # connect, read: every request has both


def new_http_session(pool_size: int = 4):
    """A pooled session. ``CDSE_DEM_FRESH_CONNECTIONS=1`` opens a new connection per request instead,
    as the reference tool did: the benchmarks compare the two."""
    import os

    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    if os.environ.get("CDSE_DEM_FRESH_CONNECTIONS") == "1":
        session.headers["Connection"] = "close"
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 4), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
