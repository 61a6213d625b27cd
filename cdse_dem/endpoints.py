"""The three CDSE service addresses, real by default, overridable by environment.

CDSE's two download hosts (and the configured one, e.g. a local simulator) are the only
ones that ever receive the access token; the token URL receives the credentials. Keeping
the hosts in one record lets the download code refuse to send the token anywhere else
(a redirect to a foreign host must not carry it).
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

    def is_download_host(self, url: str) -> bool:
        """True when ``url`` points at the configured download host (scheme, host, port)."""
        return origin(url) == origin(self.download_url)

    def may_receive_token(self, url: str) -> bool:
        """True for CDSE's two download hosts and the configured one: the token goes nowhere else."""
        return self.is_download_host(url) or origin(url) in {origin(host) for host in CDSE_DOWNLOAD_HOSTS}


def same_origin(url: str, other: str) -> bool:
    """True when both URLs name the same scheme, host and port (a malformed port matches nothing)."""
    try:
        return origin(url) == origin(other)
    except ValueError:
        return False


def origin_text(url: str) -> str:
    """``scheme://host:port`` of ``url``, to name a host in a message (never its path or query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"[:100] if parts.netloc else url[:100]


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port
