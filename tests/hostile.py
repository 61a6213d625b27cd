"""A hostile CDSE for the tests: one misbehaviour per mode, and a stranger that records what reaches it.

The simulator stays faithful to the real CDSE; this server is what a broken or malicious one
could do instead (issue 11). It serves the three services on one loopback port:

- ``/token``: a Keycloak-like token endpoint issuing the distinctive ``ACCESS`` / ``REFRESH`` tokens;
- ``/odata/v1/Products``: a catalogue answering one well-formed record per 1°×1° cell of the
  searched polygon's bounding box (``ok``), or the mode's broken page;
- ``/zipper/odata/v1/Products(<id>)/$value``: a download host that answers 404 (``ok``) or misbehaves;
  in the ``nodes_*`` modes it serves each product's Nodes tree (root, folder, cell, ``DEM``, the
  file) with one thing wrong, and 404 for its zip.

The stranger listens on a second loopback address (127.0.0.2): a host nobody should ever send
anything to. It answers 200 with an empty product list or an empty token, and records every request
(headers and body), so a test can check that nothing (above all no secret) reached it.

Every handler answers fast: slow modes hold a request at most ``HOLD`` seconds (or until ``release()``).
"""

from __future__ import annotations

import functools
import io
import json
import re
import select
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

ACCESS = "hostile-access-Zq8vXw3LmT5pK2rN9sY4"
REFRESH = "hostile-refresh-Hd6jB1cF7gV0aU3eW8oI"
HOLD = 1.0  # seconds a slow mode holds a request at most
HUGE_PAGE_BYTES = 240 * 1000 * 1000  # the size of the page of issue 11, row 11
TRICKLE_INTERVAL = 0.05  # seconds between the bytes of a trickling download
SILENT_HOLD = 300.0  # seconds a silent host holds a request at most (until released, or the client hangs up)
DEEP = 100_000  # how deeply the deep modes nest their JSON
HUGE_FILE = 10**12  # bytes a huge node file or zip is announced at
BIG_LISTING_BYTES = 5 * 1024 * 1024  # a listing past the client's 4 MiB

# one misbehaviour per mode; every other service of the server behaves
OK = "ok"
TOKEN_REDIRECT = "token_redirect"  # the token endpoint answers 307 to the stranger
TOKEN_QUOTES_FORM = "token_quotes_form"  # a refusal whose error_description quotes the login form
MALFORMED = "malformed"  # records that are not objects, lack Id, bad Attributes/Checksum, a NUL in an Id
UNPLACEABLE = "unplaceable"  # 500 identical records with no gridId and a footprint that is no cell
NEXTLINK_NUMBER = "nextlink_number"
NEXTLINK_SELF = "nextlink_self"
NEXTLINK_FOREIGN = "nextlink_foreign"  # to the stranger
HUGE_PAGE = "huge_page"  # a 240 MB page, streamed without Content-Length
CATALOGUE_SLOW = "catalogue_slow"  # every search held up to HOLD s, then 503
DOWNLOAD_QUOTES_AUTH = "download_quotes_auth"  # 400 whose message quotes the Authorization header
DOWNLOAD_REDIRECT = "download_redirect"  # 302 to the stranger
TRICKLE = "trickle"  # 200, then a byte every TRICKLE_INTERVAL
SILENT = "silent"  # 200 and headers, then nothing
# issue 23
NEXTLINK_ENDLESS = "nextlink_endless"  # every page links to a next one, each a new URL on the catalogue itself
CATALOGUE_DEEP = "catalogue_deep"  # a page of JSON nested DEEP levels down
ZIP_HUGE = "zip_huge"  # records announcing zips of HUGE_FILE bytes
ZIP_ENDLESS = "zip_endless"  # records without a size; the zip streams on and on, no Content-Length
NODES_HUGE_FILE = "nodes_huge_file"  # the DEM node announced at HUGE_FILE bytes (and streamed if asked)
NODES_DEEP = "nodes_deep"  # the root listing nested DEEP levels down
NODES_BACKSLASH = "nodes_backslash"  # the root's uri is http://<stranger>\@<this host>/...
NODES_BIG_LISTING = "nodes_big_listing"  # a root listing of BIG_LISTING_BYTES, with its Content-Length
NODES_NAN = "nodes_nan"  # the DEM file's tie point is NaN
SILENT_HOST = "silent_host"  # the download host accepts connections and never answers

MODES = (OK, TOKEN_REDIRECT, TOKEN_QUOTES_FORM, MALFORMED, UNPLACEABLE, NEXTLINK_NUMBER, NEXTLINK_SELF,
         NEXTLINK_FOREIGN, HUGE_PAGE, CATALOGUE_SLOW, DOWNLOAD_QUOTES_AUTH, DOWNLOAD_REDIRECT, TRICKLE, SILENT,
         NEXTLINK_ENDLESS, CATALOGUE_DEEP, ZIP_HUGE, ZIP_ENDLESS, NODES_HUGE_FILE, NODES_DEEP, NODES_BACKSLASH,
         NODES_BIG_LISTING, NODES_NAN, SILENT_HOST)
NODES_MODES = (NODES_HUGE_FILE, NODES_DEEP, NODES_BACKSLASH, NODES_BIG_LISTING, NODES_NAN)

_POLYGON = re.compile(r"POLYGON\s*\(\((.*?)\)\)")


@dataclass
class Seen:
    """One request as a server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float  # time.monotonic() (the same clock in every process of this machine)

    @property
    def service(self) -> str:
        return "token" if self.path.startswith("/token") else (
            "download" if self.path.startswith("/zipper") else "catalogue")

    def text(self) -> str:
        """Everything received, as one string to search for secrets."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {unquote(self.path)}\n{head}\n\n{self.body.decode('latin-1')}"


@dataclass
class _State:
    mode: str = OK
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    sent_bytes: int = 0  # bytes of the huge page written before the client hung up
    cells: dict[str, tuple[int, int]] = field(default_factory=dict)  # product id -> (lat, lon), as answered
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)


def cells_of_filter(path: str) -> list[tuple[int, int]]:
    """(lat, lon) of each 1° cell the searched polygon's bounding box reaches into."""
    match = _POLYGON.search(unquote(path))
    if not match:
        return []
    pairs = [tuple(map(float, p.split())) for p in match.group(1).split(",")]
    lons, lats = [p[0] for p in pairs], [p[1] for p in pairs]
    import math

    return [(lat, lon) for lat in range(math.floor(min(lats)), math.ceil(max(lats)))
            for lon in range(math.floor(min(lons)), math.ceil(max(lons)))]


def grid_id(lat: int, lon: int) -> str:
    return f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}_{'E' if lon >= 0 else 'W'}{abs(lon):03d}"


def product_id(lat: int, lon: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hostile/{lat}/{lon}"))


def cell_name(lat: int, lon: int) -> str:
    """The 90 m DEM name of the cell: ``Copernicus_DSM_30_N50_00_E007_00``."""
    return f"Copernicus_DSM_30_{'N' if lat >= 0 else 'S'}{abs(lat):02d}_00_{'E' if lon >= 0 else 'W'}{abs(lon):03d}_00"


def nan_tie_point(tif: bytes) -> bytes:
    """A whole DEM's GeoTIFF with its tie point's x made NaN (the six doubles of ModelTiepointTag)."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(tif)) as parsed:
        tag = parsed.pages.first.tags["ModelTiepointTag"]
        offset = tag.valueoffset
    data = bytearray(tif)
    data[offset + 3 * 8: offset + 4 * 8] = struct.pack("<d", float("nan"))
    return bytes(data)


def record(lat: int, lon: int, **over) -> dict:
    """A well-formed CCM record of the cell whose south-west corner is (lat, lon)."""
    base = {
        "Id": product_id(lat, lon),
        "Name": f"DEM1_SAR_DGE_90_20110101T000000_20150101T000000_ADS_000000_{grid_id(lat, lon)}.DEM",
        "ContentLength": 1_000_000,
        "Checksum": [{"Algorithm": "MD5", "Value": "0" * 32}],
        "Attributes": [{"Name": "gridId", "Value": grid_id(lat, lon)},
                       {"Name": "dataset", "Value": "COP-DEM_GLO-90-DGED/2024_1"}],
        "Footprint": f"geography'SRID=4326;POLYGON(({lon} {lat},{lon + 1} {lat},{lon + 1} {lat + 1},"
                     f"{lon} {lat + 1},{lon} {lat}))'",
        "ModificationDate": "2024-01-01T00:00:00.000Z",
        "Online": True,
    }
    base.update(over)
    return base


@functools.lru_cache(maxsize=64)
def whole_dem(lat: int, lon: int) -> bytes:
    """A small GeoTIFF that passes the client's integrity check as the 90 m DEM of the cell."""
    from tests.helpers import whole_dem_bytes

    return whole_dem_bytes(f"{cell_name(lat, lon)}_DEM.tif")


def malformed_records(cells: list[tuple[int, int]]) -> list:
    """Every kind of broken record of issue 11, row 5 (about the first cell), then good ones for the rest."""
    lat, lon = cells[0]
    good = record(lat, lon)
    bad = [
        42, "a string", None, ["a", "list"],
        {k: v for k, v in good.items() if k != "Id"},
        dict(good, Id="abc\x00def"),
        dict(good, Attributes="gridId=" + grid_id(lat, lon)),
        dict(good, Attributes=[1, 2]),
        dict(good, Checksum={"MD5": "0"}),
        dict(good, Checksum=[[1]]),
        dict(good, Checksum=[{"Algorithm": "MD5", "Value": 12345}]),
    ]
    return bad + [record(*cell) for cell in cells[1:]]


class Hostile:
    """The hostile server and the stranger, running in threads; ``mode`` may be changed at any time."""

    def __init__(self):
        self._main = self._start("127.0.0.1", _Handler)
        self._stranger = self._start("127.0.0.2", _Handler)
        self.state = self._main.state
        self.stranger_state = self._stranger.state
        self.stranger_state.mode = "stranger"
        base = f"http://127.0.0.1:{self._main.server_port}"
        self.token_url = f"{base}/token"
        self.catalogue_url = f"{base}/odata/v1"
        self.download_url = f"{base}/zipper/odata/v1"
        self.stranger_url = f"http://127.0.0.2:{self._stranger.server_port}"
        self._main.stranger_url = self.stranger_url

    @staticmethod
    def _start(host: str, handler) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer((host, 0), handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.state = _State()
        server.stranger_url = ""
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    @property
    def mode(self) -> str:
        return self.state.mode

    @mode.setter
    def mode(self, value: str) -> None:
        assert value in MODES, value
        self.state.mode = value

    @property
    def env(self) -> dict[str, str]:
        return {"CDSE_TOKEN_URL": self.token_url, "CDSE_CATALOGUE_URL": self.catalogue_url,
                "CDSE_DOWNLOAD_URL": self.download_url}

    @property
    def seen(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.seen)

    @property
    def stranger_seen(self) -> list[Seen]:
        with self.stranger_state.lock:
            return list(self.stranger_state.seen)

    @property
    def in_flight(self) -> int:
        return self.state.in_flight

    @property
    def sent_bytes(self) -> int:
        return self.state.sent_bytes

    def clear(self) -> None:
        for state in (self.state, self.stranger_state):
            with state.lock:
                state.seen.clear()
                state.sent_bytes = 0

    def release(self) -> None:
        """End every held request now."""
        self.state.released.set()
        self.stranger_state.released.set()

    def stop(self) -> None:
        self.release()
        for server in (self._main, self._stranger):
            server.shutdown()
            server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def state(self) -> _State:
        return self.server.state

    def _record(self) -> Seen:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, dict(self.headers.items()), body, time.monotonic())
        with self.state.lock:
            self.state.seen.append(seen)
        return seen

    def _json(self, status: int, body, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self._serve()

    def do_GET(self):
        self._serve()

    def _serve(self):
        seen = self._record()
        with self.state.lock:
            self.state.in_flight += 1
        try:
            if self.state.mode == "stranger":
                self._json(200, {"value": [], "access_token": "stranger-token", "expires_in": 600})
            elif seen.service == "token":
                self._token(seen)
            elif seen.service == "catalogue":
                self._catalogue(seen)
            else:
                self._download(seen)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self.state.lock:
                self.state.in_flight -= 1

    # --- the services --------------------------------------------------------------------------

    def _token(self, seen: Seen) -> None:
        mode = self.state.mode
        if mode == TOKEN_REDIRECT:
            self.send_response(307)
            self.send_header("Location", f"{self.server.stranger_url}/token")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == TOKEN_QUOTES_FORM:
            form = seen.body.decode()
            self._json(401, {"error": "invalid_grant", "error_description": f"Rejected login form: {form}"})
        else:
            grant = parse_qs(seen.body.decode()).get("grant_type", [""])[0]
            self._json(200, {"access_token": ACCESS, "expires_in": 600, "refresh_token": REFRESH,
                             "refresh_expires_in": 3600, "token_type": "Bearer", "grant": grant})

    def _catalogue(self, seen: Seen) -> None:
        mode = self.state.mode
        cells = cells_of_filter(seen.path) or [(50, 7)]
        with self.state.lock:
            self.state.cells.update({product_id(*cell): cell for cell in cells})
        here = f"http://{self.headers.get('Host')}{self.path}"
        if mode == NEXTLINK_ENDLESS:
            page = int(parse_qs(seen.path.split("?", 1)[-1]).get("$skiptoken", ["0"])[0])
            link = f"http://{self.headers.get('Host')}{seen.path.split('?')[0]}?$skiptoken={page + 1}"
            self._json(200, {"value": [record(*c) for c in cells], "@odata.nextLink": link})
        elif mode == CATALOGUE_DEEP:
            self._raw(200, b"[" * DEEP + b"]" * DEEP)
        elif mode == ZIP_HUGE:
            self._json(200, {"value": [record(*c, ContentLength=HUGE_FILE) for c in cells]})
        elif mode == ZIP_ENDLESS:
            self._json(200, {"value": [record(*c, ContentLength=0, Checksum=[]) for c in cells]})
        elif mode == MALFORMED:
            self._json(200, {"value": malformed_records(cells)})
        elif mode == UNPLACEABLE:
            lat, lon = cells[0]
            lost = record(lat, lon, Attributes=[], Footprint="geography'SRID=4326;POINT(7 50)'")
            self._json(200, {"value": [lost] * 500})
        elif mode == NEXTLINK_NUMBER:
            self._json(200, {"value": [record(*c) for c in cells], "@odata.nextLink": 12345})
        elif mode == NEXTLINK_SELF:
            self._json(200, {"value": [record(*c) for c in cells], "@odata.nextLink": here})
        elif mode == NEXTLINK_FOREIGN:
            link = f"{self.server.stranger_url}/odata/v1/Products?$skip=1000"
            self._json(200, {"value": [record(*c) for c in cells], "@odata.nextLink": link})
        elif mode == HUGE_PAGE:
            self._huge_page(cells)
        elif mode == CATALOGUE_SLOW:
            self.state.released.wait(HOLD)
            self._json(503, {"detail": "Service Unavailable"}, {"Retry-After": "0"})
        else:
            self._json(200, {"value": [record(*c) for c in cells]})

    def _huge_page(self, cells) -> None:
        """240 MB of records, streamed (never held in memory), until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        lat, lon = cells[0]
        one = json.dumps(record(lat, lon, Attributes=[], Footprint="")).encode() + b","
        block = one * max(1, (1 << 20) // len(one))
        self.wfile.write(b'{"value": [')
        sent = 0
        while sent < HUGE_PAGE_BYTES:
            self.wfile.write(block)
            sent += len(block)
            with self.state.lock:
                self.state.sent_bytes = sent
        self.wfile.write(json.dumps(record(lat, lon)).encode() + b"]}")

    def _raw(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _hold_silently(self) -> None:
        """Read the request, then answer nothing, until released, the client hangs up, or SILENT_HOLD."""
        self.close_connection = True
        deadline = time.monotonic() + SILENT_HOLD
        while not self.state.released.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable and not self.connection.recv(1, socket.MSG_PEEK):
                return  # the client closed its end

    def _nodes(self, seen: Seen) -> None:
        """A product's Nodes tree (``/Nodes`` listings, the DEM file's ``$value``), with the mode's fault."""
        mode = self.state.mode
        match = re.match(r"^(/zipper/odata/v1/Products\(([^)]+)\))(.*)$", seen.path)
        if not match or match.group(3) == "/$value":
            self._json(404, {"code": "DAT-ZIP-404", "message": "Product not found"})  # the zip: nothing
            return
        product, pid, rest = match.groups()
        lat, lon = self.state.cells.get(pid, (50, 7))
        cell = cell_name(lat, lon)
        names = re.findall(r"Nodes\(([^)]+)\)", rest)
        base = f"http://{self.headers.get('Host')}{product}" + "".join(f"/Nodes({n})" for n in names)
        tree = {(): ["ROOT"], ("ROOT",): [cell], ("ROOT", cell): ["DEM"], ("ROOT", cell, "DEM"): [f"{cell}_DEM.tif"]}
        dem = f"{cell}_DEM.tif"
        tif = whole_dem(lat, lon)
        if mode == NODES_NAN:
            tif = nan_tie_point(tif)
        if rest.endswith("/$value") and names and names[-1] == dem:
            if mode == NODES_HUGE_FILE:
                self.send_response(200)
                self.send_header("Content-Length", str(HUGE_FILE))
                self.end_headers()
                block = bytes(1 << 20)
                for _ in range(64):  # 64 MiB at most: enough to show whether the client stops
                    self.wfile.write(block)
                    with self.state.lock:
                        self.state.sent_bytes += len(block)
                return
            self._raw(200, tif, "application/octet-stream")
            return
        children = tree.get(tuple(names))
        if children is None:
            self._json(404, {"code": "DAT-ZIP-404", "message": "Node not found"})
            return
        if mode == NODES_DEEP and not names:
            self._raw(200, b"[" * DEEP + b"]" * DEEP)
            return
        if mode == NODES_BIG_LISTING and not names:
            self._raw(200, b'{"result": [], "padding": "' + b"x" * BIG_LISTING_BYTES + b'"}')
            return
        result = []
        for child in children:
            uri = f"{base}/Nodes({child})/Nodes"
            if mode == NODES_BACKSLASH and not names:
                host = self.headers.get("Host")
                uri = uri.replace(f"http://{host}", f"{self.server.stranger_url}\\@{host}", 1)
            size = (HUGE_FILE if mode == NODES_HUGE_FILE else len(tif)) if child == dem else 0
            result.append({"Id": child, "Name": child, "ContentLength": size,
                           "ChildrenNumber": 0 if child == dem else 1, "Nodes": {"uri": uri}})
        self._json(200, {"result": result})

    def _download(self, seen: Seen) -> None:
        mode = self.state.mode
        if mode == SILENT_HOST:
            self._hold_silently()
        elif mode in NODES_MODES:
            self._nodes(seen)
        elif mode == ZIP_ENDLESS and seen.path.endswith("/$value"):
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            block = bytes(1 << 20)
            for _ in range(256):  # 256 MiB at most: far past any product the client should take
                self.wfile.write(block)
                with self.state.lock:
                    self.state.sent_bytes += len(block)
        elif mode == DOWNLOAD_QUOTES_AUTH:
            # the quote comes late in a long message: cutting the message short must not cut the token in two
            message = "x" * 250 + f" unexpected header Authorization: {seen.headers.get('Authorization')}"
            self._json(400, {"code": "DAT-ZIP-400", "message": message})
        elif mode == DOWNLOAD_REDIRECT:
            self.send_response(302)
            self.send_header("Location", f"{self.server.stranger_url}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode in (TRICKLE, SILENT):
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            deadline = time.monotonic() + 30 * HOLD
            while not self.state.released.wait(TRICKLE_INTERVAL) and time.monotonic() < deadline:
                if mode == TRICKLE:
                    self.wfile.write(b"P")
                    self.wfile.flush()
        else:
            self._json(404, {"code": "DAT-ZIP-404", "message": "Product not found"})
