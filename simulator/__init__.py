"""A faithful local stand-in for CDSE: identity, OData catalogue and download host.

    from simulator import SimulatorConfig, User, Faults, start_simulator
    with start_simulator(SimulatorConfig(access_lifetime=2)) as sim:
        os.environ.update(sim.env)      # CDSE_TOKEN_URL, CDSE_CATALOGUE_URL, CDSE_DOWNLOAD_URL
        ...
        sim.request_log()               # every request the simulator answered

Importing this package is cheap; numpy, shapely and the servers load in ``start_simulator``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from simulator.config import Faults, SimulatorConfig, User
from simulator.requestlog import RequestRecord

__all__ = ["Faults", "RequestRecord", "Simulator", "SimulatorConfig", "User", "start_simulator", "totp"]


def totp(secret: str, at: float | None = None) -> str:
    """The current RFC 6238 code for a TOTP user's secret (what the user's app would show)."""
    from simulator.identity import totp as _totp

    return _totp(secret, at)


@dataclass
class Simulator:
    """A running simulator: its addresses, its request log, and ``stop()``."""

    config: SimulatorConfig
    token_url: str
    catalogue_url: str
    download_url: str
    services: Any = field(repr=False)
    _servers: list = field(repr=False, default_factory=list)
    _threads: list = field(repr=False, default_factory=list)
    _stopped: bool = field(repr=False, default=False)

    @property
    def env(self) -> dict[str, str]:
        return {"CDSE_TOKEN_URL": self.token_url, "CDSE_CATALOGUE_URL": self.catalogue_url,
                "CDSE_DOWNLOAD_URL": self.download_url}

    @property
    def urls(self) -> dict[str, str]:
        """The first line ``python -m simulator`` prints."""
        return {"token_url": self.token_url, "catalogue_url": self.catalogue_url,
                "download_url": self.download_url}

    def request_log(self) -> list[RequestRecord]:
        return self.services.log.snapshot()

    def clear_log(self) -> None:
        self.services.log.clear()

    def active_sessions(self, user: str) -> int:
        return self.services.identity.active_sessions(user)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.services.stopping.set()
        closers = [threading.Thread(target=server.shutdown, daemon=True) for server in self._servers]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
        self.services.close_connections()
        for server in self._servers:
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self.services.store.close()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulator(config: SimulatorConfig | None = None, **overrides: Any) -> Simulator:
    """Start both hosts on loopback in daemon threads and return the running handle."""
    from dataclasses import replace

    from simulator.catalogue import Catalogue
    from simulator.cells import load_cells
    from simulator.products import ProductIndex
    from simulator.server import TOKEN_PATH, Services, make_server
    from simulator.zips import ZipStore

    config = replace(config or SimulatorConfig(), **overrides) if overrides else (config or SimulatorConfig())
    index = ProductIndex(load_cells(config.cells_dir), config.seed, config.duplicate_cells, config.missing_grid_id)
    store = ZipStore(config.cache_dir, config.size, config.seed)
    services = Services(config, Catalogue(index, store), store)
    catalogue = make_server(services, "catalogue", config.host, config.port)
    try:
        download = make_server(services, "download", config.host, config.download_port)
    except OSError:
        catalogue.server_close()
        raise
    host = config.host if ":" not in config.host else f"[{config.host}]"
    base = f"http://{host}:{catalogue.server_address[1]}"
    services.catalogue_url = f"{base}/odata/v1"
    services.download_url = f"http://{host}:{download.server_address[1]}/odata/v1"
    sim = Simulator(config, base + TOKEN_PATH, services.catalogue_url, services.download_url, services,
                    [catalogue, download])
    for server in sim._servers:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"sim-{server.RequestHandlerClass.kind}", daemon=True)
        thread.start()
        sim._threads.append(thread)
    return sim
