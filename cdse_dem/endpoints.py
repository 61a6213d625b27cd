"""The three CDSE service addresses, real by default, overridable by environment.

CDSE's two download hosts (and the configured one, e.g. a local simulator) are the only
ones that ever receive the access token (``token_hosts``, used by ``http.DownloadToken``);
the token URL receives the credentials.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
DEFAULT_CATALOGUE_URL = "https://catalogue.dataspace.copernicus.eu/odata/v1"
# Where CDSE's documentation and its own browser download, and where the catalogue's 301 points.
DEFAULT_DOWNLOAD_URL = "https://download.dataspace.copernicus.eu/odata/v1"
# CDSE's download hosts: the only hosts, with the configured one, the token may go to.
CDSE_DOWNLOAD_HOSTS = ("https://download.dataspace.copernicus.eu", "https://zipper.dataspace.copernicus.eu")


@dataclass(frozen=True)
class Endpoints:
    token_url: str = DEFAULT_TOKEN_URL
    catalogue_url: str = DEFAULT_CATALOGUE_URL
    download_url: str = DEFAULT_DOWNLOAD_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Endpoints":
        env = os.environ if environ is None else environ
        return cls(
            token_url=env.get("CDSE_TOKEN_URL") or DEFAULT_TOKEN_URL,
            catalogue_url=(env.get("CDSE_CATALOGUE_URL") or DEFAULT_CATALOGUE_URL).rstrip("/"),
            download_url=(env.get("CDSE_DOWNLOAD_URL") or DEFAULT_DOWNLOAD_URL).rstrip("/"),
        )

    def product_url(self, product_id: str) -> str:
        """Where a product's bytes are fetched: the download host, never the catalogue."""
        return f"{self.download_url}/Products({product_id})/$value"

    @property
    def token_hosts(self) -> tuple[str, ...]:
        """Where the access token may go: the configured download host and CDSE's two
        (``http.DownloadToken`` adds it for these hosts only)."""
        return (self.download_url, *CDSE_DOWNLOAD_HOSTS)


def origin_text(url: str) -> str:
    """``scheme://host:port`` of ``url``, to name a host in a message (never its path or query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"[:100] if parts.netloc else url[:100]


def origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of ``url``, the default port filled in; None for a malformed port
    (it names no host of ours)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    return parts.scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(parts.scheme)
