"""The Nodes API of the download host: a product's zip seen as a tree of folders and files.

``Products(<Id>)/Nodes`` lists the root; ``.../Nodes(<a>)/Nodes(<b>)/Nodes`` lists a level;
``.../Nodes(<file>)/$value`` is that file's bytes (cdse-api.md §4). Each level answers
``{"result": [{"Id", "Name", "ContentLength", "ChildrenNumber", "Nodes": {"uri"}}]}``. Names go
in the path unquoted: a quoted one is a malformed request (400 DAT-ZIP-104).

The tree is read from the product's cached zip (its central directory only) and a file is
streamed from its zip member, so a node costs no more than the zip that is made once anyway,
and its bytes are exactly the member's.

Root node name: for ``COP-DEM`` products the product Name with ``.DEM``, as recorded. For
``CCM`` products it is not recorded; the simulator names it as the zip's root folder (the Name
without ``.DEM``), so a client that builds the name from the collection's rule would be wrong for
one of the two: a client must list the root rather than build its name.
"""

from __future__ import annotations

import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from simulator.products import Product

_SEGMENT = re.compile(r"Nodes\(([^()/]*)\)")


class NodeRequestError(Exception):
    """A Nodes request the download host refuses: its status, ``DAT-ZIP`` code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Node:
    name: str
    member: str | None = None  # the zip member of a file; None for a folder
    size: int = 0
    children: dict[str, Node] = field(default_factory=dict)

    @property
    def is_file(self) -> bool:
        return self.member is not None


@dataclass(frozen=True)
class NodeRequest:
    """``names`` from the root down, and whether the request lists (``/Nodes``) or reads (``/$value``)."""

    names: tuple[str, ...]
    value: bool


def parse_node_path(rest: str) -> NodeRequest:
    """The part of a path after ``Products(<Id>)``: ``/Nodes``, ``/Nodes(a)/Nodes``, ``/Nodes(a)/$value``."""
    if rest.endswith("/$value"):
        body, value = rest[: -len("/$value")], True
    elif rest.endswith("/Nodes"):
        body, value = rest[: -len("/Nodes")], False
    else:
        raise NodeRequestError(400, "DAT-ZIP-104", f"Malformed OData request path: {rest}")
    names = []
    position = 0
    while position < len(body):
        match = _SEGMENT.match(body, position + 1) if body[position] == "/" else None
        if match is None:
            raise NodeRequestError(400, "DAT-ZIP-104", f"Malformed OData request path: {rest}")
        name = match.group(1)
        if not name or "'" in name or '"' in name:
            raise NodeRequestError(400, "DAT-ZIP-104",
                                   f"Malformed OData request path: node names go unquoted, not {name!r}")
        names.append(name)
        position = match.end()
    if value and not names:
        raise NodeRequestError(400, "DAT-ZIP-104", f"Malformed OData request path: {rest}")
    return NodeRequest(tuple(names), value)


def root_node_name(product: Product) -> str:
    """``COP-DEM``: the Name (recorded); ``CCM``: the zip root, Name without ``.DEM`` (not recorded)."""
    return product.name if product.collection == "COP-DEM" else product.root_folder


class NodeTrees:
    """The node tree of each product zip, read once from its central directory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trees: dict[Path, Node] = {}

    def root(self, product: Product, zip_path: Path) -> Node:
        """A folder holding the product's one root node."""
        with self._lock:
            tree = self._trees.get(zip_path)
        if tree is None:
            tree = _read_tree(zip_path, product.root_folder, root_node_name(product))
            with self._lock:
                self._trees[zip_path] = tree
        return tree

    def find(self, product: Product, zip_path: Path, names: tuple[str, ...]) -> Node:
        node = self.root(product, zip_path)
        for name in names:
            child = node.children.get(name)
            if child is None:
                raise NodeRequestError(404, "DAT-ZIP-404", f"Node {name} not found")
            node = child
        return node


def _read_tree(zip_path: Path, root_folder: str, root_name: str) -> Node:
    top = Node("")
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            parts = info.filename.rstrip("/").split("/")
            if parts[0] != root_folder:
                continue
            parts[0] = root_name
            folder = top
            for part in parts[:-1]:
                folder = folder.children.setdefault(part, Node(part))
            if not info.is_dir():
                folder.children[parts[-1]] = Node(parts[-1], info.filename, info.file_size)
            else:
                folder.children.setdefault(parts[-1], Node(parts[-1]))
    return top


def listing(node: Node, product_url: str, names: tuple[str, ...]) -> dict:
    """One level, as CDSE answers it: ``result``, not ``value``."""
    base = product_url + "".join(f"/Nodes({quote(n, safe='')})" for n in names)
    return {"result": [{
        "Id": child.name,
        "Name": child.name,
        "ContentLength": child.size if child.is_file else 0,
        "ChildrenNumber": len(child.children),
        "Nodes": {"uri": f"{base}/Nodes({quote(child.name, safe='')})/Nodes"},
    } for child in node.children.values()]}


@contextmanager
def open_member(zip_path: Path, member: str) -> Iterator:
    """A file's bytes, read from its zip member (inflated on the fly when deflated)."""
    with zipfile.ZipFile(zip_path) as archive, archive.open(member) as stream:
        yield stream
