"""Finding and fetching a product's DEM file through the Nodes API, against a small fake download host.

The fake serves one product's tree as CDSE's Nodes API does (``{"result": [...]}``, unquoted
names, a root name its catalogue record does not give), by listings and by paths of names, and
records every request with its Authorization header, so the tests see what a server would see.
"""

import json
import logging
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import numpy as np
import pytest
import requests

from cdse_dem.grid import Geocell
from cdse_dem.http import Backoff, Endpoints
from cdse_dem.settings import Transfer
from cdse_dem.transfer import (
    CHECK_TRIES,
    FALLBACKS_BEFORE_SWITCH,
    NodeClient,
    NodeSample,
    NodesFailed,
    TransferChoice,
    dem_node_path,
    parse_listing,
    root_named_by_record,
)
from simulator.geotiff import geotiff_bytes

PRODUCT_ID = "0b2c5a5e-1d52-4a4b-9a70-4c2a1f0e9d11"
ROOT = "DEM1_SAR_DGE_90_20110815T220001_20121017T220048_ADS_000000_x7Qz_4cb0c173"
CELL = "Copernicus_DSM_30_N50_00_E007_00"
DEM = f"{CELL}_DEM.tif"
QUICK = Backoff(attempts=3, base=0.01, cap=0.02)
TOKEN = "token-abc"
LIST_ROOT = f"/odata/v1/Products({PRODUCT_ID})/Nodes"
DEM_PATH = f"/odata/v1/Products({PRODUCT_ID})/Nodes({ROOT})/Nodes({CELL})/Nodes(DEM)/Nodes({DEM})/$value"
WALK = [f"/odata/v1/Products({PRODUCT_ID})/Nodes({ROOT})/Nodes",
        f"/odata/v1/Products({PRODUCT_ID})/Nodes({ROOT})/Nodes({CELL})/Nodes",
        f"/odata/v1/Products({PRODUCT_ID})/Nodes({ROOT})/Nodes({CELL})/Nodes(DEM)/Nodes"]


def _dem_bytes() -> bytes:
    data = np.linspace(100, 900, 1201 * 801, dtype=np.float32).reshape(1201, 801)  # 801 columns north of 50°
    return geotiff_bytes(data, 7.0, 51.0, 1 / 800, 1 / 1200)


GOOD_DEM = _dem_bytes()


class FakeHost:
    """A download host serving one product's tree; ``files`` maps node paths to bytes.

    ``by_path=False``: a host that serves a file only once the listing of its folder was asked
    (a host that does not serve paths of names it has not listed).
    """

    def __init__(self, files: dict[tuple[str, ...], bytes], *, uri_host: str | None = None, by_path: bool = True):
        self.files = files
        self.by_path = by_path
        self.listed: set[tuple[str, ...]] = set()
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.status: dict[str, int] = {}  # path regex → forced status
        self.body_override: dict[str, bytes] = {}  # path regex → 200 body
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                host.requests.append((unquote(self.path), self.headers.get("Authorization")))
                status, body = host.answer(unquote(self.path))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/odata/v1"
        self.uri_base = uri_host or self.url
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def _children(self, prefix: tuple[str, ...]) -> list[dict]:
        names = sorted({p[len(prefix)] for p in self.files if p[: len(prefix)] == prefix and len(p) > len(prefix)})
        result = []
        for name in names:
            path = (*prefix, name)
            is_file = path in self.files
            uri = f"{self.uri_base}/Products({PRODUCT_ID})" + "".join(f"/Nodes({n})" for n in path) + "/Nodes"
            result.append({"Id": name, "Name": name, "ContentLength": len(self.files[path]) if is_file else 0,
                           "ChildrenNumber": 0 if is_file else len(self._children(path)), "Nodes": {"uri": uri}})
        return result

    def answer(self, path: str) -> tuple[int, bytes]:
        for pattern, status in self.status.items():
            if re.search(pattern, path):
                return status, json.dumps({"code": "DAT-ZIP-000", "message": "forced"}).encode()
        for pattern, body in self.body_override.items():
            if re.search(pattern, path):
                return 200, body
        match = re.fullmatch(rf"/odata/v1/Products\({PRODUCT_ID}\)((?:/Nodes\([^()]+\))*)/(Nodes|\$value)", path)
        if match is None:
            return 404, b'{"detail": "Not Found"}'
        names = tuple(re.findall(r"/Nodes\(([^()]+)\)", match.group(1)))
        if match.group(2) == "$value":
            if names not in self.files or not (self.by_path or names[:-1] in self.listed):
                return 404, b'{"code": "DAT-ZIP-404", "message": "Not found"}'
            return 200, self.files[names]
        self.listed.add(names)
        return 200, json.dumps({"result": self._children(names)}).encode()


def _tree(dem: bytes = GOOD_DEM, root: str = ROOT) -> dict[tuple[str, ...], bytes]:
    return {
        (root, "GSC_CR_ESA_COP-DEM_x.xml"): b"<xml/>",
        (root, CELL, f"{CELL}.xml"): b"<xml/>",
        (root, CELL, "DEM", DEM): dem,
        (root, CELL, "AUXFILES", f"{CELL}_HEM.tif"): b"h" * 1000,
        (root, CELL, "PREVIEW", f"{CELL}_DEM_QL.tif"): b"q" * 100,
    }


class FakeSession:
    def __init__(self):
        self.rejected = 0

    def access_token(self):
        return TOKEN

    def may_start(self):
        return True

    def token_rejected(self, token):
        self.rejected += 1


@dataclass
class Product:
    """A CCM product by default: its S3Path ends in the Name without ``.DEM``, so its root is listed."""

    id: str = PRODUCT_ID
    name: str = ROOT + ".DEM"
    s3_path: str = f"/eodata/CCM/COP-DEM_GLO-90-DGED/SAR_DGE_90_A407/2011/08/15/{ROOT}"
    content_length: int = 13_000_000


COP_DEM = Product(s3_path=f"/eodata/auxdata/CopDEM/COP-DEM_GLO-90-DGED/{ROOT}.DEM")  # its root: its Name


@pytest.fixture
def host():
    hosts = []

    def make(files=None, **kw):
        h = FakeHost(_tree() if files is None else files, **kw)
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.stop()


def _client(host) -> NodeClient:
    endpoints = Endpoints(token_url="http://127.0.0.1:9/token", catalogue_url="http://127.0.0.1:9/odata/v1",
                          download_url=host.url)
    return NodeClient(FakeSession(), requests.Session(), endpoints, backoff=QUICK)


HOME_CELL = Geocell(50, 7)


def _fetch(client, product, out_dir, *, cell=HOME_CELL):
    out_dir.mkdir(exist_ok=True)
    located = client.locate_dem(product, DEM)
    return client.fetch_dem(product, located, out_dir, DEM, cell=cell, resolution=90)


def test_a_product_costs_its_root_listing_and_its_file_by_its_path_of_names(host, tmp_path):
    fake = host()
    client = _client(fake)
    located = client.locate_dem(Product(), DEM)
    assert fake.paths == [LIST_ROOT] and located.length is None and located.listing_seconds > 0
    told = []
    got = client.fetch_dem(Product(), located, tmp_path, DEM, cell=Geocell(50, 7), resolution=90,
                           on_length=told.append)
    assert fake.paths == [LIST_ROOT, DEM_PATH]
    assert got.path == tmp_path / DEM and got.path.read_bytes() == GOOD_DEM and got.bytes == len(GOOD_DEM)
    assert told == [len(GOOD_DEM)]  # the length, from the answer, before the first byte
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEM]
    assert got.listing_seconds == located.listing_seconds and 0 < got.first_byte_seconds <= got.seconds
    assert {auth for _, auth in fake.requests} == {f"Bearer {TOKEN}"}
    assert not any("'" in path for path in fake.paths)  # names unquoted


def test_a_root_the_record_names_costs_no_listing(host, tmp_path):
    fake = host(_tree(root=COP_DEM.name))
    got = _fetch(_client(fake), COP_DEM, tmp_path)
    assert fake.paths == [DEM_PATH.replace(f"Nodes({ROOT})", f"Nodes({COP_DEM.name})")]
    assert got.path.read_bytes() == GOOD_DEM and got.listing_seconds == 0


@pytest.mark.parametrize(("product", "root"), [
    (COP_DEM, COP_DEM.name),  # recorded: a COP-DEM root is its Name, the end of its S3Path
    (Product(), None),  # CCM: the S3Path ends in the Name without .DEM, the root is not recorded
    (Product(s3_path=""), None),
    (Product(name="a b(c).DEM", s3_path="/eodata/x/a b(c).DEM"), None),  # never a name to escape
])
def test_a_root_is_built_only_where_the_record_names_it(product, root):
    assert root_named_by_record(product) == root


def test_a_host_serving_no_paths_of_names_is_walked_and_said_once(host, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cdse_dem")
    fake = host(by_path=False)
    client = _client(fake)
    assert _fetch(client, Product(), tmp_path / "a").path.read_bytes() == GOOD_DEM
    assert fake.paths == [LIST_ROOT, DEM_PATH, *WALK, DEM_PATH]  # 404, then the walk
    fake.requests.clear()
    fake.listed.clear()
    assert _fetch(client, Product(), tmp_path / "b").path.read_bytes() == GOOD_DEM
    assert fake.paths == [LIST_ROOT, *WALK, DEM_PATH]  # walked from the start: no path tried in vain
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "does not serve a file by its path of names (HTTP 404" in lines[0], lines


def test_a_root_the_record_names_wrongly_makes_the_run_list_roots(host, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cdse_dem")
    fake = host()  # its root is not COP_DEM's Name
    client = _client(fake)
    assert _fetch(client, COP_DEM, tmp_path / "a").path.read_bytes() == GOOD_DEM
    wrong = DEM_PATH.replace(f"Nodes({ROOT})", f"Nodes({COP_DEM.name})")
    assert fake.paths == [wrong, LIST_ROOT, *WALK, DEM_PATH]
    fake.requests.clear()
    assert _fetch(client, COP_DEM, tmp_path / "b").path.read_bytes() == GOOD_DEM
    assert fake.paths == [LIST_ROOT, DEM_PATH]  # the root listed, the path of names still used
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"under {ROOT}, not {COP_DEM.name}" in lines[0], lines


def test_a_dted_path_ends_in_its_own_suffix():
    assert dem_node_path("Copernicus_DSM_10_S09_00_E026_00_DEM.dt2") == (
        "Copernicus_DSM_10_S09_00_E026_00", "DEM", "Copernicus_DSM_10_S09_00_E026_00_DEM.dt2")


@pytest.mark.parametrize("bad", [
    GOOD_DEM[: len(GOOD_DEM) // 2],  # a truncated GeoTIFF: its length matches a (lying) listing
    b"<html><body>502 Bad Gateway</body></html>" + b" " * 5000,  # not a GeoTIFF at all
])
def test_a_file_failing_the_integrity_check_twice_is_a_nodes_failure_and_leaves_nothing(host, tmp_path, bad):
    fake = host(_tree(bad))
    with pytest.raises(NodesFailed, match=f"failed its check {CHECK_TRIES} times"):
        _fetch(_client(fake), Product(), tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert fake.paths == [LIST_ROOT] + [DEM_PATH] * CHECK_TRIES


def test_a_file_of_another_cell_is_refused(host, tmp_path):
    with pytest.raises(NodesFailed, match="not on N51_E007"):
        _fetch(_client(host()), Product(), tmp_path, cell=Geocell(51, 7))
    assert list(tmp_path.iterdir()) == []


def test_nodes_off_is_a_nodes_failure(host):
    fake = host()
    fake.status[r"/Nodes$"] = 404
    with pytest.raises(NodesFailed, match="HTTP 404"):
        _client(fake).locate_dem(Product(), DEM)
    assert len(fake.requests) == 1  # a 404 is not retried


def test_5xx_is_retried_then_a_nodes_failure(host):
    fake = host()
    fake.status[r"/Nodes$"] = 503
    with pytest.raises(NodesFailed, match=r"after 3 tries.*HTTP 503"):
        _client(fake).locate_dem(Product(), DEM)
    assert len(fake.requests) == QUICK.attempts


@pytest.mark.parametrize("body", [b'{"value": []}', b"[]", b"<html>oops</html>",
                                  b'{"result": [{"Name": "x"}]}', b'{"result": []}'])
def test_an_unexpected_root_listing_is_a_nodes_failure(host, body):
    fake = host()
    fake.body_override[rf"Products\({PRODUCT_ID}\)/Nodes$"] = body
    with pytest.raises(NodesFailed):
        _client(fake).locate_dem(Product(), DEM)


def test_a_missing_dem_node_is_a_nodes_failure_of_that_product_alone(host, tmp_path):
    fake = host({k: v for k, v in _tree().items() if k[-1] != DEM})  # no DEM folder at all
    client = _client(fake)
    with pytest.raises(NodesFailed, match=f"no single node DEM under {CELL}"):
        _fetch(client, Product(), tmp_path)
    assert fake.paths == [LIST_ROOT, DEM_PATH, *WALK[:2]]  # its path answered 404; the walk says why
    assert client.direct and client.roots_from_records  # the next product is still fetched by its path
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("by_path", [True, False])
def test_a_uri_on_another_host_never_receives_the_token(host, tmp_path, by_path):
    foreign = host()
    fake = host(uri_host=foreign.url, by_path=by_path)  # its listings point at the foreign host
    client = _client(fake)
    client.direct = by_path  # the file by its path of names (from the root's uri), or the walk
    with pytest.raises(NodesFailed, match="refusing to send the access token"):
        _fetch(client, Product(), tmp_path)
    assert foreign.requests == [] and fake.paths == [LIST_ROOT]


def test_parse_listing_reads_cdse_s_shape():
    body = {"result": [{"Id": "a", "Name": "a", "ContentLength": 3, "ChildrenNumber": 0,
                        "Nodes": {"uri": "https://download.dataspace.copernicus.eu/odata/v1/Products(x)/Nodes(a)/Nodes"}}]}
    [node] = parse_listing(body, "x")
    assert node.value_url == "https://download.dataspace.copernicus.eu/odata/v1/Products(x)/Nodes(a)/$value"
    with pytest.raises(NodesFailed):
        parse_listing({"result": [{"Name": "a", "ContentLength": -1, "Nodes": {"uri": "u/Nodes"}}]}, "x")


def test_three_products_failing_switch_the_rest_of_the_run_to_zips(caplog):
    caplog.set_level(logging.DEBUG)
    choice = TransferChoice(Transfer.AUTO)
    for n in range(FALLBACKS_BEFORE_SWITCH + 2):
        assert choice.use_nodes() == (n < FALLBACKS_BEFORE_SWITCH)
        choice.node_failed(f"cell{n}", "HTTP 404")
    choice.report()
    shown = [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"]
    assert shown == ["The Nodes API failed for 3 products (last: HTTP 404); the rest of the run downloads "
                     "whole zips"]
    assert not choice.use_nodes()


def test_fewer_fallbacks_are_one_line_at_the_end(caplog):
    caplog.set_level(logging.DEBUG)
    choice = TransferChoice(Transfer.AUTO)
    choice.node_failed("cell0", "HTTP 503")
    choice.node_failed("cell1", "failed its check 2 times")
    assert choice.use_nodes()
    choice.report()
    shown = [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"]
    assert shown == ["2 product(s) were fetched as whole zips: the Nodes API failed for them "
                     "(last: failed its check 2 times)"]


def test_nodes_mode_never_falls_back_and_zip_mode_never_tries():
    nodes = TransferChoice("nodes")
    for n in range(5):
        nodes.node_failed(f"cell{n}", "HTTP 404")
    assert nodes.use_nodes() and not nodes.falls_back
    assert not TransferChoice("zip").use_nodes()


def test_a_listing_too_large_is_refused(host):
    from cdse_dem.transfer import DownloadFailed, get_json

    fake = host()
    fake.body_override[rf"Products\({PRODUCT_ID}\)/Nodes$"] = b'{"result": [' + b" " * 5000 + b"]}"
    client = _client(fake)
    with pytest.raises(DownloadFailed, match="larger than 1,000 bytes"):
        get_json(f"{fake.url}/Products({PRODUCT_ID})/Nodes", client.session, client.http, client.endpoints,
                 label="x", max_bytes=1000)


@pytest.mark.parametrize(("zip_mb", "dem_mb", "listing_s", "first_byte_s", "file_s", "switches"), [
    # GLO-90 at 20 MB/s, 0.35 s a Nodes request: 0.7 s of waiting to spare 0.32 s of bytes
    (12.16, 5.78, 0.35, 0.35, 0.64, True),
    (12.16, 5.78, 0.05, 0.05, 0.34, False),  # the same at 0.05 s a request: Nodes is faster
    (12.16, 5.78, 0.0, 0.35, 0.64, False),  # the record names the root: 0.35 s of waiting, close: Nodes kept
    (102.2, 51.9, 0.35, 0.35, 2.95, False),  # GLO-30, 0.35 s a request: 2.5 s spared
    (8.16, 3.85, 0.35, 0.35, 2.27, False),  # GLO-90 at 2 MB/s, 0.35 s a request: 2.2 s spared
    (12.16, 5.78, 0.012, 0.005, 0.03, False),  # loopback, no cap: both tiny, Nodes kept
    (12.16, 5.78, 1.40, 0.35, 0.64, True),  # a walk's four listings
])
def test_auto_leaves_nodes_only_when_zips_are_really_faster(
        caplog, zip_mb, dem_mb, listing_s, first_byte_s, file_s, switches):
    from cdse_dem.transfer import SPEED_SAMPLES

    caplog.set_level(logging.DEBUG)
    choice = TransferChoice(Transfer.AUTO)
    for n in range(SPEED_SAMPLES + 2):
        assert choice.use_nodes() == (not switches or n < SPEED_SAMPLES)
        choice.node_fetched(NodeSample(int(zip_mb * 1e6), int(dem_mb * 1e6), listing_s, first_byte_s, file_s))
    lines = [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"]
    assert len(lines) == int(switches) and choice.use_nodes() == (not switches)
    if switches:
        assert lines[0].startswith(f"Whole zips are faster here: a product waits {listing_s + first_byte_s:.2f} s")


def test_nodes_mode_is_never_judged_slow():
    choice = TransferChoice(Transfer.NODES)
    for _ in range(10):
        choice.node_fetched(NodeSample(12_000_000, 5_800_000, 5.0, 0.5, 1.0))
    assert choice.use_nodes()
