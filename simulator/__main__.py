"""``python -m simulator``: run the local CDSE until SIGINT or SIGTERM.

The first line of stdout is one JSON object with ``token_url``, ``catalogue_url`` and
``download_url`` (the values of ``CDSE_TOKEN_URL``, ``CDSE_CATALOGUE_URL``, ``CDSE_DOWNLOAD_URL``),
so a script can start it on free ports and read where it listens.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import fields

from simulator.config import Faults, SimulatorConfig, User

_FAULT_HELP = {
    "seed": "seed of the fault streams (default: --seed)",
    "drop_rate": "download: chance the connection is closed part-way through the body",
    "drop_first": "download: the first N bodies are cut off",
    "drop_at": "download: fraction of the body sent before the cut (default 0.5)",
    "error_rate": "download: chance a request starts a burst of 5xx answers",
    "error_first": "download: the first N requests answer 5xx",
    "error_burst": "download: length of a random 5xx burst (default 3)",
    "error_statuses": "download: 5xx statuses to pick from, comma-separated (default 500,503)",
    "slow_rate": "download: chance of a silence before the first body byte",
    "slow_first": "download: the first N bodies start late",
    "slow_seconds": "download: length of that silence (default 5)",
    "corrupt_rate": "download: chance a body has one byte that does not match the checksum",
    "corrupt_first": "download: the first N bodies are corrupted",
    "storm_rate": "download: chance of a 429 DAT-ZIP-100 even below the quota",
    "storm_first": "download: the first N requests get a 429",
    "retry_after": "seconds announced in Retry-After on 429 and 503 (default 1)",
    "catalogue_hang_rate": "catalogue search: chance of no answer, then a closed connection",
    "catalogue_hang_first": "catalogue search: the first N searches hang",
    "catalogue_hang_seconds": "catalogue search: how long a hang lasts (default 30)",
    "catalogue_garbage_rate": "catalogue search: chance of a 200 with an HTML page instead of JSON",
    "catalogue_garbage_first": "catalogue search: the first N searches answer HTML",
    "catalogue_error_rate": "catalogue search: chance of a 5xx",
    "catalogue_error_first": "catalogue search: the first N searches answer 5xx",
    "catalogue_error_status": "catalogue search: that status (default 503)",
    "identity_error_rate": "token endpoint: chance of a 5xx",
    "identity_error_first": "token endpoint: the first N token requests answer 5xx",
    "identity_error_status": "token endpoint: that status (default 503)",
}


def _user(text: str) -> User:
    parts = text.split(":")
    if len(parts) < 2 or not parts[0] or any(p not in ("noccm", "ccm") and not p.startswith("totp=")
                                             for p in parts[2:]):
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD[:noccm][:totp=BASE32], got {text!r}")
    ccm = "noccm" not in parts[2:]
    secret = next((p[5:] for p in parts[2:] if p.startswith("totp=")), None)
    return User(parts[0], parts[1], ccm=ccm, totp_secret=secret)


def _duplicates(text: str) -> float | int | list[str]:
    if "_" in text:
        return [t.strip() for t in text.split(",") if t.strip()]
    return float(text) if "." in text else int(text)


def build_parser() -> argparse.ArgumentParser:
    d = SimulatorConfig.__dataclass_fields__
    p = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A local stand-in for CDSE (identity, OData catalogue, download host). Prints one JSON "
                    "line {token_url, catalogue_url, download_url}, then serves until SIGINT/SIGTERM.",
        epilog="Default account: demo@example.com / demo (with CCM access). Fault flags take a rate "
               "(0..1, seeded) or a count of first requests; every request a fault hits is logged.")
    p.add_argument("--port", type=int, default=0, help="catalogue + identity port (0: a free port)")
    p.add_argument("--download-port", type=int, default=0, help="download host port (0: a free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--user", action="append", type=_user, metavar="NAME:PASSWORD[:noccm][:totp=BASE32]",
                   help="an account (repeatable; replaces the default demo account); :noccm = no CCM access "
                        "(downloads of CCM products get 403 DAT-ZIP-608); :totp=SECRET = two-factor login")
    p.add_argument("--access-lifetime", type=float, default=d["access_lifetime"].default,
                   help="access token lifetime in seconds (default 600)")
    p.add_argument("--refresh-lifetime", type=float, default=d["refresh_lifetime"].default,
                   help="refresh window from login in seconds (default 3600)")
    p.add_argument("--max-sessions", type=int, default=d["max_sessions"].default,
                   help="active sessions per user (default 100)")
    p.add_argument("--max-concurrent-downloads", type=int, default=d["max_concurrent_downloads"].default,
                   help="concurrent downloads per user before 429 DAT-ZIP-100 (default 4)")
    p.add_argument("--bandwidth", type=float, default=None,
                   help="bytes per second per download connection (default unlimited; CDSE: 20e6)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added before every reply (default 0)")
    p.add_argument("--catalogue-latency", type=float, default=0.0,
                   help="seconds more before every catalogue search answers (default 0; CDSE: 0.3-2)")
    p.add_argument("--no-nodes", dest="nodes", action="store_false",
                   help="turn the Nodes API off: 404 for every Products(<Id>)/Nodes request")
    p.add_argument("--nodes-latency", type=float, default=0.0,
                   help="seconds added before every Nodes request answers (default 0)")
    p.add_argument("--missing-grid-id", type=float, default=d["missing_grid_id"].default,
                   help="fraction of CCM products whose record has no gridId attribute (default 0.0001, "
                        "as on CDSE)")
    p.add_argument("--size", choices=("small", "realistic"), default="small",
                   help="product rasters, both at the real dimensions (3601x3601 at 30 m): small (low detail, "
                        "DEFLATE: fast tests) or realistic (uncompressed, as recorded) (default small)")
    p.add_argument("--cells-dir", default=None,
                   help="folder with copdem_glo30_cells.txt and copdem_glo90_cells.txt "
                        "(default ../shared/data beside the project, else a built-in subset)")
    p.add_argument("--duplicate-cells", type=_duplicates, default=d["duplicate_cells"].default,
                   help="CCM cells with two products per delivery: a fraction (0.01), a count (25) or "
                        "grid ids (N50_E007,N49_E008) (default 0.01)")
    p.add_argument("--cache-dir", default=None,
                   help="where generated zips are cached (default: a folder in the system temp dir)")
    p.add_argument("--seed", type=int, default=0, help="seed of names, Ids, terrain and faults (default 0)")
    faults = p.add_argument_group("faults")
    for f in fields(Faults):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "seed":
            flag = "--fault-seed"
        kind = int if isinstance(f.default, int) and f.name != "seed" else float
        if f.name == "seed":
            kind = int
        if f.name == "error_statuses":
            faults.add_argument(flag, dest="fault_" + f.name, default=None, help=_FAULT_HELP[f.name])
            continue
        faults.add_argument(flag, dest="fault_" + f.name, type=kind, default=None, help=_FAULT_HELP[f.name])
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    fault_values = {}
    for f in fields(Faults):
        value = getattr(args, "fault_" + f.name)
        if value is not None:
            if f.name == "error_statuses":
                value = tuple(int(v) for v in value.split(","))
            fault_values[f.name] = value
    return SimulatorConfig(
        users=args.user or [User("demo@example.com", "demo")],
        access_lifetime=args.access_lifetime, refresh_lifetime=args.refresh_lifetime,
        max_sessions=args.max_sessions, max_concurrent_downloads=args.max_concurrent_downloads,
        bandwidth=args.bandwidth, latency=args.latency, catalogue_latency=args.catalogue_latency,
        nodes=args.nodes, nodes_latency=args.nodes_latency, missing_grid_id=args.missing_grid_id,
        size=args.size, cells_dir=args.cells_dir,
        duplicate_cells=args.duplicate_cells, cache_dir=args.cache_dir, seed=args.seed,
        faults=Faults(**fault_values), port=args.port, download_port=args.download_port, host=args.host)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    from simulator import start_simulator

    done = threading.Event()

    def _stop(signum, frame) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    sim = start_simulator(config)
    try:
        sys.stdout.write(json.dumps(sim.urls) + "\n")
        sys.stdout.flush()
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
