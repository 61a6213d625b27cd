"""The DEM layer alone, through CDSE's Nodes API: less than half the bytes of the product zip.

A product's files are a tree of nodes on the download host (cdse-api.md, section 4). The
root's name differs between collections (a ``COP-DEM`` root is the product Name, a ``CCM``
one is not recorded), so it is never built: the product's root listing names it, and every
level after it is reached through the ``Nodes.uri`` the level above gives, down to
``<cell>/DEM/<cell>_DEM.tif`` (``.dt1``/``.dt2`` for DTED). Each uri must stay on the
download host, since the token goes with it. The walk is made once per product; a re-fetch
of the file reuses what it found.

A node file has no checksum: its length is checked against the listing's ``ContentLength``
as bytes arrive, and the whole file against the DEM integrity check (:mod:`cdse_dem.integrity`)
before it is renamed into place. Every failure here is a :class:`NodesFailed`, which a run in
``auto`` mode answers by fetching the product's zip instead (:mod:`cdse_dem.transfer`).
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdse_dem.downloading import DownloadFailed, Expected, StallLimits, fetch_file, get_json
from cdse_dem.extract import DEM_SUFFIXES
from cdse_dem.fsutil import remove_quietly, replace_into_place
from cdse_dem.geocells import Geocell
from cdse_dem.integrity import dem_problem
from cdse_dem.retry import Backoff

log = logging.getLogger(__name__)

# A node file that arrives whole (its length right) but fails the integrity check is fetched
# once more; failing twice, it is not a transfer accident: the product goes the zip way.
CHECK_TRIES = 2
_NODES = "/Nodes"
_VALUE = "/$value"
DEM_FOLDER = "DEM"


class NodesFailed(DownloadFailed):
    """The Nodes API did not give this product's DEM layer whole; its zip may still."""


@dataclass(frozen=True)
class Node:
    """One entry of a Nodes listing."""

    name: str
    content_length: int  # bytes; 0 for a folder
    children: int
    uri: str  # the listing of this node's children: ``.../Nodes(<name>)/Nodes``

    @property
    def value_url(self) -> str:
        """The node's bytes: its uri with the last ``/Nodes`` replaced by ``/$value``."""
        return self.uri[: -len(_NODES)] + _VALUE


@dataclass(frozen=True)
class Located:
    """A product's DEM node, and what finding it cost: the seconds of its listings' requests."""

    node: Node
    listing_seconds: float


@dataclass(frozen=True)
class NodeFile:
    path: Path  # under its final name, whole and checked
    bytes: int
    seconds: float  # the request that brought it, from its slot to its last byte


def parse_listing(body, where: str) -> list[Node]:
    """The nodes of one listing (``{"result": [...]}``); anything else is a NodesFailed."""
    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        raise NodesFailed(f"unexpected Nodes listing for {where} (no 'result' list)")
    nodes = []
    for item in body["result"]:
        node = _node(item)
        if node is None:
            raise NodesFailed(f"unexpected Nodes listing for {where}: an entry is not a node ({str(item)[:120]})")
        nodes.append(node)
    return nodes


def _node(item) -> Node | None:
    if not isinstance(item, dict):
        return None
    name, length, children = item.get("Name"), item.get("ContentLength"), item.get("ChildrenNumber", 0)
    uri = (item.get("Nodes") or {}).get("uri") if isinstance(item.get("Nodes"), dict) else None
    if not isinstance(name, str) or not name or not isinstance(uri, str) or not uri.endswith(_NODES):
        return None
    if not _is_count(length) or not _is_count(children):
        return None
    return Node(name, length, children, uri)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def dem_node_path(file_name: str) -> tuple[str, str, str]:
    """The names under the root that lead to a DEM file: (``<cell>``, ``DEM``, ``<cell>_DEM.tif``)."""
    suffix = next((s for s in DEM_SUFFIXES if file_name.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{file_name} is not named like a DEM layer")
    return file_name[: -len(suffix)], DEM_FOLDER, file_name


@dataclass
class NodeClient:
    """What every Nodes request of a run shares: the session, the HTTP pool, the hosts, the policy."""

    session: object
    http: object
    endpoints: object
    backoff: Backoff | None = None
    stop: threading.Event | None = None
    timeout: tuple[float, float] | None = None  # None: the download loop's (its read timeout is the stall silence)
    stall: StallLimits | None = None
    slot: object = None  # the account's connections: CDSE counts a listing as one, as it does a download
    wanted: Callable[[], bool] | None = None  # False once the run has left Nodes: a walk under way stops

    def listing(self, uri: str, label: str, *, first: bool = False) -> tuple[list[Node], float]:
        """The nodes under ``uri``, and the seconds the request took."""
        try:
            body, seconds = get_json(uri, self.session, self.http, self.endpoints, label=label,
                                     backoff=self.backoff, stop=self.stop, stall=self.stall, timeout=self.timeout,
                                     first=first, slot=self.slot)
        except NodesFailed:
            raise
        except DownloadFailed as exc:  # 404 (Nodes off), 5xx after retries, a foreign host, not JSON
            raise NodesFailed(str(exc)) from None
        return parse_listing(body, label), seconds

    def locate_dem(self, product, file_name: str) -> Located:
        """The DEM layer's node of ``product``: root listing, then its ``Nodes.uri`` down to the file.

        The first request is the geocell's first: past the time budget it raises BudgetExhausted.
        """
        label = f"the Nodes of {file_name} ({product.id})"
        roots, spent = self.listing(f"{self.endpoints.download_url}/Products({product.id}){_NODES}", label,
                                    first=True)
        folders = [n for n in roots if n.children > 0]
        if len(folders) != 1:
            names = ", ".join(n.name for n in roots) or "nothing"
            raise NodesFailed(f"unexpected Nodes root for {product.id}: {names}")
        node = folders[0]
        for name in dem_node_path(file_name):
            if self.wanted is not None and not self.wanted():
                raise NodesFailed("the run has left the Nodes API")
            nodes, seconds = self.listing(node.uri, label)
            node, spent = _child(nodes, name, node.name), spent + seconds
        if node.children or node.content_length <= 0:
            raise NodesFailed(f"the node {file_name} of {product.id} is not a file "
                              f"({node.content_length} bytes, {node.children} children)")
        return Located(node, spent)

    def fetch_dem(self, node: Node, out_dir: Path, file_name: str, *, cell: Geocell, resolution: int,
                  on_bytes: Callable[[int], None] | None = None) -> NodeFile:
        """Stream ``node`` into ``out_dir`` as ``file_name``, checked whole.

        Length first (as bytes arrive), then the DEM integrity check; only then the rename. The
        name is ours, never the server's: nothing it says reaches the file system.
        """
        suffix = Path(file_name).suffix
        label = f"{file_name} (Nodes)"
        problem = None
        for _ in range(CHECK_TRIES):
            try:
                fetched = fetch_file(node.value_url, out_dir, file_name, self.session, self.http, self.endpoints,
                                     label=label, expect=Expected(length=node.content_length),
                                     backoff=self.backoff, on_bytes=on_bytes, stop=self.stop, stall=self.stall,
                                     timeout=self.timeout, first=False, durable=True, slot=self.slot)
            except NodesFailed:
                raise
            except DownloadFailed as exc:
                raise NodesFailed(str(exc)) from None
            try:
                problem = dem_problem(fetched.path, resolution=resolution, cell=cell, suffix=suffix)
                if problem is None:
                    final = Path(out_dir) / file_name
                    replace_into_place(fetched.path, final)
                    return NodeFile(final, fetched.bytes, fetched.request_seconds)
            except BaseException:
                remove_quietly(fetched.path)
                raise
            remove_quietly(fetched.path)
            if on_bytes is not None:
                on_bytes(-fetched.bytes)  # the progress total stays true across the re-fetch
            log.debug("%s failed its check (%s)", label, problem)
        raise NodesFailed(f"{file_name} from the Nodes API failed its check {CHECK_TRIES} times: {problem}")


def _child(nodes: list[Node], name: str, parent: str) -> Node:
    matches = [n for n in nodes if n.name == name] or [n for n in nodes if n.name.casefold() == name.casefold()]
    if len(matches) != 1:
        found = ", ".join(n.name for n in nodes[:12]) or "nothing"
        raise NodesFailed(f"no single node {name} under {parent} (found: {found})")
    return matches[0]
