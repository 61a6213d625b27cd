"""What one simulator run looks like: accounts, lifetimes, quotas, sizes and faults.

Plain dataclasses with no heavy imports, so that ``python -m simulator --help`` stays instant
and tests can build a configuration without starting anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class User:
    """A CDSE account. ``ccm=False`` is an account that never enabled CCM access (403 DAT-ZIP-608).

    ``totp_secret`` (base32, as an authenticator app stores it) makes the login need a ``totp`` field.
    """

    name: str
    password: str
    ccm: bool = True
    totp_secret: str | None = None


@dataclass(frozen=True)
class Faults:
    """Misbehaviour injected on purpose, seeded so that a run is repeatable.

    Each fault has a ``*_rate`` (chance per eligible request, drawn from its own seeded stream)
    and a ``*_first`` (the first N eligible requests get it for sure), so tests can be exact and
    soaks can be random. "Download" faults apply to ``$value`` requests that passed the token,
    CCM and quota checks (the 429 storm applies before the quota). Every request a fault hit is
    recorded with the fault's name in the request log.
    """

    seed: int | None = None
    """Seed of the fault streams; None takes ``SimulatorConfig.seed``."""

    drop_rate: float = 0.0
    drop_first: int = 0
    drop_at: float = 0.5
    """Download: the connection is closed after this fraction of the body ("drop")."""

    error_rate: float = 0.0
    error_first: int = 0
    error_burst: int = 3
    """Download: a hit starts a burst of this many consecutive 5xx answers ("error500"/"error503")."""
    error_statuses: tuple[int, ...] = (500, 503)

    slow_rate: float = 0.0
    slow_first: int = 0
    slow_seconds: float = 5.0
    """Download: headers are sent, then nothing for this long before the first body byte ("slow")."""

    corrupt_rate: float = 0.0
    corrupt_first: int = 0
    """Download: full length, but one byte differs from the zip the checksums describe ("corrupt")."""

    storm_rate: float = 0.0
    storm_first: int = 0
    """Download: 429 DAT-ZIP-100 with Retry-After even below the quota ("storm429")."""

    retry_after: float = 1.0
    """Seconds announced in Retry-After on every 429 and 503."""

    catalogue_hang_rate: float = 0.0
    catalogue_hang_first: int = 0
    catalogue_hang_seconds: float = 30.0
    """Catalogue search: no answer for this long, then the connection is closed ("hang")."""

    catalogue_garbage_rate: float = 0.0
    catalogue_garbage_first: int = 0
    """Catalogue search: 200 with an HTML page instead of JSON ("garbage")."""

    catalogue_error_rate: float = 0.0
    catalogue_error_first: int = 0
    catalogue_error_status: int = 503
    """Catalogue search: a 5xx answer ("catalogue503" etc.)."""

    identity_error_rate: float = 0.0
    identity_error_first: int = 0
    identity_error_status: int = 503
    """Token endpoint: a 5xx answer ("identity503" etc.)."""


def _default_users() -> list[User]:
    return [User("demo@example.com", "demo")]


@dataclass
class SimulatorConfig:
    """Every knob of a simulator run; the defaults are CDSE's own values where it has one."""

    users: list[User] = field(default_factory=_default_users)
    access_lifetime: float = 600.0
    refresh_lifetime: float = 3600.0
    max_sessions: int = 100
    max_concurrent_downloads: int = 4
    bandwidth: float | None = None
    """Bytes per second per download connection; None: as fast as loopback goes (CDSE: 20 MB/s)."""
    latency: float = 0.0
    """Seconds added before every reply, on both hosts."""
    catalogue_latency: float = 0.0
    """Seconds more before the answer of every catalogue search (``Products?...``): the real
    catalogue takes 0.3-2 s, which is what makes per-tile searching slow (benchmarks)."""
    nodes: bool = True
    """Serve the Nodes API (single files of a product) on the download host; False: 404 for every
    Nodes request, as a client must survive if CDSE withdraws or breaks it."""
    nodes_latency: float = 0.0
    """Seconds added before the answer of every Nodes request (listings and files): Nodes is
    reported slower to start than a whole-product download."""
    missing_grid_id: float = 0.0001
    """Fraction of CCM products (seeded, per product) whose record lacks ``gridId``: CDSE has 3 of
    26,479 in ``COP-DEM_GLO-90-DGED/2024_1``, so a client must fall back to the footprint."""
    size: str = "small"
    """Both keep the real raster dimensions (3601x3601 at 30 m, 1201x1201 at 90 m, fewer columns
    towards the poles). "realistic": uncompressed GeoTIFFs with textured layers, as recorded
    (a GLO-90 zip about 13 MB). "small": a low-detail field in DEFLATE-compressed GeoTIFFs
    (and zip-deflated DTED), so that a zip is tens of kB and fast to make, for tests."""
    cells_dir: Path | str | None = None
    """Folder with copdem_glo30_cells.txt / copdem_glo90_cells.txt; None: ../shared/data, else built-in."""
    duplicate_cells: float | int | Iterable[str] = 0.01
    """CCM cells carrying two products per delivery: a fraction (float), a count (int), or grid ids."""
    cache_dir: Path | str | None = None
    """Where generated zips are kept; None: a per-user folder under the system temp directory."""
    seed: int = 0
    faults: Faults = field(default_factory=Faults)
    port: int = 0
    download_port: int = 0
    host: str = "127.0.0.1"
    clock: Callable[[], float] | None = field(default=None, repr=False, compare=False)
    """The identity service's clock (token lifetimes, refresh windows, sessions); None: time.monotonic.
    A test hands the same fake clock to the client's session, so that lifetimes pass without waiting."""

    def __post_init__(self) -> None:
        if self.size not in ("small", "realistic"):
            raise ValueError(f"size must be 'small' or 'realistic', not {self.size!r}")
        if not self.users:
            raise ValueError("at least one user is needed")
        if not 0.0 <= self.missing_grid_id <= 1.0:
            raise ValueError(f"missing_grid_id must be a fraction in [0, 1], not {self.missing_grid_id!r}")
        for name in ("latency", "catalogue_latency", "nodes_latency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
