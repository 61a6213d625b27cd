"""One HTTP connection pool per run, shared by catalogue, identity and download calls.

A pool sized to the worker count lets every download worker keep its connection alive
between products (the reference tool opened a new session per file).

requests, left to itself, adds HTTP Basic from ``~/.netrc`` to every request made without
explicit auth, and again after every redirect: a ``default`` line for some other service
would replace the download's Bearer token and send that password to the catalogue, the
download host and any host a page links to. So our session does not trust the environment
(``trust_env = False``) and takes back from it only what a user sets on purpose: the proxies
(``HTTPS_PROXY``, ``NO_PROXY``, ...) and the CA bundle (``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE``). ``.netrc`` is read by our own code, for the identity host only
(credentials.py). Every request carries only the credentials we put there.
"""

import os

from cdse_dem import __version__

USER_AGENT = f"cdse-copernicus-dem-downloader/{__version__}"
TIMEOUT = (10.0, 60.0)  # connect, read: every request has both


def _session_class():
    import requests
    from requests.utils import get_environ_proxies

    class NoNetrcSession(requests.Session):
        """A requests Session with the environment's proxies and CA bundle, never its ``.netrc``."""

        def __init__(self):
            super().__init__()
            self.trust_env = False

        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            proxies = dict(proxies or {})
            for scheme, proxy in get_environ_proxies(url, no_proxy=proxies.get("no_proxy")).items():
                proxies.setdefault(scheme, proxy)
            if verify is True or verify is None:
                verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
            return super().merge_environment_settings(url, proxies, stream, verify, cert)

    return NoNetrcSession


def new_http_session(pool_size: int = 4):
    """A pooled session. ``CDSE_DEM_FRESH_CONNECTIONS=1`` opens a new connection per request instead,
    as the reference tool did: the benchmarks compare the two."""
    from requests.adapters import HTTPAdapter

    session = _session_class()()
    session.headers["User-Agent"] = USER_AGENT
    if os.environ.get("CDSE_DEM_FRESH_CONNECTIONS") == "1":
        session.headers["Connection"] = "close"
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 4), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
