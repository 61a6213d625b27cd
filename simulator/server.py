"""The two HTTP hosts: catalogue + identity on one port, the download host on the other.

Standard library ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, so a client's
connection pool is reused as it would be against CDSE. Every request is timed and recorded;
every reply carries ``Content-Length`` so that connections stay reusable after errors.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from simulator.catalogue import Catalogue
from simulator.config import SimulatorConfig
from simulator.faults import FaultInjector
from simulator.identity import IdentityService
from simulator.nodes import NodeRequest, NodeRequestError, NodeTrees, listing, open_member, parse_node_path
from simulator.requestlog import RequestLog, RequestRecord
from simulator.zips import ZipStore

log = logging.getLogger(__name__)

TOKEN_PATH = "/auth/realms/CDSE/protocol/openid-connect/token"
LOGOUT_PATH = "/auth/realms/CDSE/protocol/openid-connect/logout"
ODATA = "/odata/v1"
_ATTRIBUTES = re.compile(r"^/odata/v1/Attributes\(([^()]+)\)$")
_PRODUCT = re.compile(r"^/odata/v1/Products\('?([^()'/]+)'?\)(/.*)?$")
CHUNK = 256 * 1024
_GARBAGE = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
            b"</center><hr><center>nginx</center></body></html>\n")


class Services:
    """Everything the handlers share: configuration, identity, catalogue, zips, faults, log."""

    def __init__(self, config: SimulatorConfig, catalogue: Catalogue, store: ZipStore) -> None:
        self.config = config
        self.identity = IdentityService(config.users, config.access_lifetime, config.refresh_lifetime,
                                        config.max_sessions, clock=config.clock or time.monotonic)
        self.catalogue = catalogue
        self.store = store
        self.faults = FaultInjector(config.faults, config.seed)
        self.node_trees = NodeTrees()
        self.log = RequestLog()
        self.stopping = threading.Event()
        self.catalogue_url = ""
        self.download_url = ""
        self._slots_lock = threading.Lock()
        self._slots: dict[str, int] = {}
        self.peak_downloads: dict[str, int] = {}  # most $value and Nodes requests of one user in flight at once
        self._connections_lock = threading.Lock()
        self.connections: set[socket.socket] = set()

    def take_slot(self, user: str) -> bool:
        with self._slots_lock:
            used = self._slots.get(user, 0)
            self.peak_downloads[user] = max(self.peak_downloads.get(user, 0), used + 1)  # refused ones too
            if used >= self.config.max_concurrent_downloads:
                return False
            self._slots[user] = used + 1
            return True

    def release_slot(self, user: str) -> None:
        with self._slots_lock:
            self._slots[user] = max(0, self._slots.get(user, 0) - 1)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            (self.connections.add if add else self.connections.discard)(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Dropped(Exception):
    """The connection was closed on purpose, or by the client, mid-reply."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cdse-simulator"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version
    timeout = 120  # an idle keep-alive connection is closed after this long
    services: Services
    kind: str

    # --- plumbing -------------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.services.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.services.track(self.connection, False)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.kind, format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.record = RequestRecord(self.kind, method, unquote(parts.path), parts.query, started=time.monotonic())
        self.services.log.add(self.record)  # visible while in flight (finished == 0.0)
        self.query_pairs = parse_qsl(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length > 0 else b""
        try:
            if self.services.config.latency > 0:
                self.services.stopping.wait(self.services.config.latency)
            if self.kind == "download":
                self._download_host(method)
            else:
                self._catalogue_host(method)
        except (_Dropped, ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            if not self.record.finished:
                self._complete()

    def _complete(self) -> None:
        """Mark the record finished: called BEFORE the last bytes go out, so that a client that has
        its whole reply always finds the request complete in the log (and its download slot free:
        a client that starts its next download the moment one ends is not counted twice)."""
        self.record.finished = time.monotonic()
        user, self.slot_user = getattr(self, "slot_user", None), None
        if user is not None:
            self.services.release_slot(user)

    def end_headers(self) -> None:
        # A client that asked for "Connection: close" is told so, as real servers do, so that
        # its pool does not send the next request on a socket that is about to close.
        if self.close_connection and not any(line.lower().startswith(b"connection:")
                                             for line in getattr(self, "_headers_buffer", [])):
            self.send_header("Connection", "close")
        super().end_headers()

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if body or status not in (301, 204):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.record.status = status
        if body and self.record.method != "HEAD":
            self.end_headers()
            self.record.bytes_sent += len(body)
            self._complete()
            self.wfile.write(body)
        else:
            self._complete()
            self.end_headers()

    def _json(self, status: int, body: dict | list, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _zip_error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"trace-id": uuid.uuid4().hex, "code": code, "message": message}, headers)

    # --- catalogue + identity host --------------------------------------------------------------
    def _catalogue_host(self, method: str) -> None:
        path = self.record.path
        services = self.services
        realm = TOKEN_PATH.rsplit("/protocol/", 1)[0]
        if path == f"{realm}/.well-known/openid-configuration":
            self._json(200, services.identity.openid_configuration(self._token_url()))
            return
        if path == f"{realm}/protocol/openid-connect/certs":
            self._json(200, services.identity.jwks())
            return
        attributes = _ATTRIBUTES.match(path)
        if attributes and method in ("GET", "HEAD"):
            reply = services.catalogue.attributes(attributes.group(1))
            self._json(reply.status, reply.body)
            return
        if path == LOGOUT_PATH:
            if method != "POST":
                self._json(405, {"error": "HTTP 405 Method Not Allowed"})
                return
            form = dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
            status, body, user = services.identity.logout(form)
            self.record.user = user
            if body is None:
                self._send(status)
            else:
                self._json(status, body)
            return
        if path == TOKEN_PATH:
            if method != "POST":
                self._json(405, {"error": "HTTP 405 Method Not Allowed"})
                return
            form = dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
            self.record.grant_type = form.get("grant_type")
            status = services.faults.identity_error()
            if status is not None:
                self.record.fault = f"identity{status}"
                self._send(status, b"<html><body>Service Unavailable</body></html>", "text/html",
                           {"Retry-After": _retry_after(services)} if status == 503 else None)
                return
            status, body, user = services.identity.token(form)
            self.record.user = user
            self._json(status, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})
            return
        if method not in ("GET", "HEAD"):
            self._json(405, {"detail": "Method Not Allowed"})
            return
        match = _PRODUCT.match(path)
        if match and match.group(2) == "/$value":
            target = f"{services.download_url}/Products({match.group(1)})/$value"
            if self.record.query:
                target += "?" + self.record.query
            self._send(301, b"", headers={"Location": target})
            return
        if path.rstrip("/") == f"{ODATA}/Products":
            fault = services.faults.catalogue()
            if fault is not None and self._catalogue_fault(fault):
                return
            if services.config.catalogue_latency > 0:
                services.stopping.wait(services.config.catalogue_latency)
            reply = services.catalogue.search(self.query_pairs, services.catalogue_url)
            self._json(reply.status, reply.body)
            return
        if match and match.group(2) is None:
            reply = services.catalogue.product(match.group(1), self.query_pairs, services.catalogue_url)
            self._json(reply.status, reply.body)
            return
        if match:
            self._json(404, {"detail": f"{match.group(2)} is not served here: Nodes are on the download host"})
            return
        self._json(404, {"detail": "Not Found"})

    def _token_url(self) -> str:
        return self.services.catalogue_url.rsplit("/odata/v1", 1)[0] + TOKEN_PATH

    def _catalogue_fault(self, fault: str) -> bool:
        f = self.services.config.faults
        if fault == "hang":
            self.record.fault = "hang"
            self.services.stopping.wait(f.catalogue_hang_seconds)
            self.close_connection = True
            self._complete()
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if fault == "garbage":
            self.record.fault = "garbage"
            self._send(200, _GARBAGE, "text/html")
            return True
        status = f.catalogue_error_status
        self.record.fault = f"catalogue{status}"
        self._json(status, {"detail": "Internal Server Error" if status == 500 else "Service Unavailable"},
                   {"Retry-After": _retry_after(self.services)} if status == 503 else None)
        return True

    # --- download host ----------------------------------------------------------------------------
    def _download_host(self, method: str) -> None:
        services = self.services
        match = _PRODUCT.match(self.record.path)
        rest = match.group(2) if match else None
        nodes = rest is not None and rest.startswith("/Nodes")
        if not match or (rest != "/$value" and not nodes):
            self._zip_error(404, "DAT-ZIP-404", "Not found")
            return
        node_request = None
        if nodes:  # the Nodes API: off (404), or late, before anything else is looked at
            if not services.config.nodes:
                self._zip_error(404, "DAT-ZIP-404", "Not found")
                return
            if services.config.nodes_latency > 0:
                services.stopping.wait(services.config.nodes_latency)
            try:
                node_request = parse_node_path(rest)
            except NodeRequestError as exc:
                self._zip_error(exc.status, exc.code, exc.message)
                return
        if method not in ("GET", "HEAD"):
            self._zip_error(405, "DAT-ZIP-405", "Method not allowed")
            return
        query_token = next((v for k, v in self.query_pairs if k == "token"), None)
        if self.headers.get("Authorization") is None and query_token:
            check = services.identity.check_token(query_token)  # eodag's "token_provision: qs"
        else:
            check = services.identity.check_bearer(self.headers.get("Authorization"))
        if check.problem == "missing":
            self._zip_error(401, "DAT-ZIP-604", "Token not found")
            return
        if check.problem == "expired":
            self.record.user = check.user.name if check.user else None
            self._zip_error(401, "DAT-ZIP-109", "Expired signature!")
            return
        if check.problem is not None or check.user is None:
            self._zip_error(401, "DAT-ZIP-605", "Invalid token")
            return
        user = check.user
        self.record.user = user.name
        if self.headers.get("Range"):
            self._zip_error(501, "DAT-ZIP-501", "Range requests are not supported")
            return
        if not _is_uuid(match.group(1)):
            self._zip_error(422, "DAT-ZIP-111", f"Malformed product UUID: {match.group(1)}")
            return
        product = services.catalogue.index.by_id(match.group(1))
        if product is None:
            self._zip_error(404, "DAT-ZIP-111", f"Product {match.group(1)} not found")
            return
        if product.collection == "CCM" and not user.ccm:
            self._zip_error(403, "DAT-ZIP-608",
                            "Access forbidden: you need to accept the CCM licence and enable "
                            "Copernicus Contributing Missions access in your CDSE profile")
            return
        if node_request is not None:
            self._nodes(method, product, user.name, node_request)
            return
        if method == "HEAD":
            self._file_headers("application/zip", services.store.ensure(product).length, f"{product.name}.zip")
            return
        if not self._take_slot(user.name):
            return
        self.slot_user = user.name  # given back by _complete(), or below if the reply never completes
        try:
            if self._download_error():
                return
            meta = services.store.ensure(product)
            self._stream(f"{product.name}.zip", meta.length, lambda: open(meta.path, "rb"), "application/zip",
                         sendfile=True)
        finally:
            if self.slot_user is not None:
                self.slot_user = None
                services.release_slot(user.name)

    def _nodes(self, method: str, product, user: str, request: NodeRequest) -> None:
        """A listing or one file of a product, under the same faults and quota as ``$value``."""
        services = self.services
        if not self._take_slot(user):
            return
        self.slot_user = user  # given back by _complete(), as for $value, or below if the reply never completes
        try:
            if self._download_error():
                return
            meta = services.store.ensure(product)
            try:
                node = services.node_trees.find(product, meta.path, request.names)
                if request.value and not node.is_file:
                    raise NodeRequestError(404, "DAT-ZIP-404", f"Node {node.name} is a folder, not a file")
            except NodeRequestError as exc:
                self._zip_error(exc.status, exc.code, exc.message)
                return
            if not request.value:
                self._json(200, listing(node, f"{services.download_url}/Products({product.id})", request.names))
                return
            if method == "HEAD":
                self._file_headers("application/octet-stream", node.size, node.name)
                return
            self._stream(node.name, node.size, lambda: open_member(meta.path, node.member),
                         "application/octet-stream", sendfile=False)
        finally:
            if self.slot_user is not None:
                self.slot_user = None
                services.release_slot(user)

    def _file_headers(self, content_type: str, length: int, filename: str) -> None:
        """The answer to HEAD on a file: its headers, no body."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Disposition", f"attachment; filename={filename}")
        self.record.status = 200
        self._complete()
        self.end_headers()

    def _take_slot(self, user: str) -> bool:
        """One of the user's download slots, or a 429 (a storm comes before the quota): release it after."""
        if self.services.faults.storm():
            self.record.fault = "storm429"
            self._too_many()
            return False
        if not self.services.take_slot(user):
            self._too_many()
            return False
        return True

    def _download_error(self) -> bool:
        """Whether a configured 5xx answered this request instead."""
        status = self.services.faults.download_error()
        if status is None:
            return False
        self.record.fault = f"error{status}"
        self._json(status, {"detail": "Internal Server Error" if status == 500 else "Service Unavailable"},
                   {"Retry-After": _retry_after(self.services)} if status == 503 else None)
        return True

    def _too_many(self) -> None:
        limit = self.services.config.max_concurrent_downloads
        self._zip_error(429, "DAT-ZIP-100", f"Max session number {limit} exceeded.",
                        {"Retry-After": _retry_after(self.services)})

    def _stream(self, filename: str, length: int, opener, content_type: str, sendfile: bool) -> None:
        """``length`` bytes from the binary file ``opener()`` gives, throttled and faulted as configured;
        ``sendfile``: a real file, sent by the kernel when nothing needs to touch the bytes."""
        services = self.services
        faults = services.faults.body(length)
        if faults.names():
            self.record.fault = "+".join(faults.names())
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Disposition", f"attachment; filename={filename}")
        self.record.status = 200  # before the headers go: a client holding them finds the status logged
        self.end_headers()
        if faults.slow and services.stopping.wait(faults.slow):
            raise _Dropped
        bandwidth = services.config.bandwidth
        end = length if faults.drop_at is None else faults.drop_at
        with opener() as f:
            if sendfile and bandwidth is None and faults.corrupt_at is None and faults.drop_at is None and end > 1:
                self.record.bytes_sent = self.connection.sendfile(f, 0, end - 1) or 0
                if self.record.bytes_sent != end - 1:
                    raise _Dropped
                f.seek(end - 1)
                self.record.bytes_sent = end
                self._complete()
                self.wfile.write(f.read(1))
                return
            chunk = CHUNK if bandwidth is None else max(1024, min(CHUNK, int(bandwidth / 20)))
            start = time.monotonic()
            sent = 0
            while sent < end:
                data = f.read(min(chunk, end - sent))
                if not data:
                    break
                if faults.corrupt_at is not None and sent <= faults.corrupt_at < sent + len(data):
                    buf = bytearray(data)
                    buf[faults.corrupt_at - sent] ^= 0xFF
                    data = bytes(buf)
                sent += len(data)
                self.record.bytes_sent = sent
                if sent >= end:
                    self._complete()
                self.wfile.write(data)
                if bandwidth:
                    ahead = sent / bandwidth - (time.monotonic() - start)
                    if ahead > 0 and services.stopping.wait(ahead):
                        raise _Dropped
        if faults.drop_at is not None:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            raise _Dropped


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _retry_after(services: Services) -> str:
    value = services.config.faults.retry_after
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 64


def make_server(services: Services, kind: str, host: str, port: int) -> HTTPServer:
    handler = type(f"{kind.title()}Handler", (Handler,), {"services": services, "kind": kind})
    return HTTPServer((host, port), handler)
