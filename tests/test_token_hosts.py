"""The access token goes to CDSE's two download hosts (and the configured one), never elsewhere.

Foreign hosts are second loopback servers that record every request they receive: a redirect
from the download host and a catalogue next page both point at one, and it must never see the
token (nor, for the next page, any request at all).
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from cdse_dem.catalogue import Product
from cdse_dem.http import Backoff, DownloadToken, Endpoints
from cdse_dem.transfer import DownloadFailed, download_product
from tests.helpers import cli_env, dem_files, run_cli

TRACE = "0123456789abcdef0123456789abcdef"
PID = "2d5696bc-0c5e-5be4-911a-a033ee0bb32a"


class Recorder:
    """A loopback HTTP server that records (method, path, headers) and answers with ``respond``."""

    def __init__(self, respond):
        self.requests: list[tuple[str, str, dict]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                recorder.requests.append(("GET", self.path, dict(self.headers)))
                status, headers, body = respond(self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def tokens(self) -> list[str]:
        return [h["Authorization"] for _, _, h in self.requests if "Authorization" in h]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def foreign():
    server = Recorder(lambda handler: (200, {"Content-Type": "application/zip"}, b"PK not a zip"))
    yield server
    server.close()


def test_only_cdse_download_hosts_and_the_configured_one_may_receive_the_token():
    auth = DownloadToken(Endpoints(download_url="http://127.0.0.1:8123/odata/v1").token_hosts).bearing("secret")
    allowed = ("https://download.dataspace.copernicus.eu/odata/v1/Products(x)/$value",
               "https://zipper.dataspace.copernicus.eu/odata/v1/Products(x)/$value",
               "https://DOWNLOAD.dataspace.copernicus.eu:443/x", "http://127.0.0.1:8123/elsewhere")
    refused = ("https://catalogue.dataspace.copernicus.eu/odata/v1/Products(x)/$value",
               "https://identity.dataspace.copernicus.eu/", "http://download.dataspace.copernicus.eu/x",
               "https://download.dataspace.copernicus.eu.evil.example/x", "http://127.0.0.1:8124/x")
    for url in allowed + refused:
        request = requests.Request("GET", url, headers={"Authorization": "Basic someone-else"}).prepare()
        expected = "Bearer secret" if url in allowed else None
        assert auth(request).headers.get("Authorization") == expected, url  # put there, or taken away
    assert not auth.allows("http://127.0.0.1:notaport/x")  # a malformed port names no host of ours
    assert "secret" not in repr(auth)
    assert Endpoints().download_url == "https://download.dataspace.copernicus.eu/odata/v1"


def run_through(sim, out, server: Recorder, variable: str):
    """The CLI for tile 32UMA with ``variable`` (a CDSE base URL) pointing at ``server``, closed after."""
    try:
        return run_cli("--t", "32UMA", "--o", out, env=cli_env(sim, **{variable: f"{server.url}/odata/v1"}))
    finally:
        server.close()


def test_a_redirect_off_the_download_hosts_is_not_followed(sim, tool_home, tmp_path, foreign):
    redirector = Recorder(lambda h: (302, {"Location": f"{foreign.url}{h.path}"}, b""))
    out = tmp_path / "dem"
    result = run_through(sim, out, redirector, "CDSE_DOWNLOAD_URL")
    assert result.returncode == 1
    assert "not followed, so that the access token stays on CDSE's download hosts" in result.stderr
    assert redirector.tokens() and all(t.startswith("Bearer ") for t in redirector.tokens())  # the token was in play
    assert foreign.requests == []
    assert dem_files(out) == {}


def test_a_catalogue_next_page_elsewhere_is_not_followed(sim, tool_home, tmp_path, foreign):
    def front(handler):  # the simulator's answer, with its next page moved to the foreign host
        reply = requests.get(sim.catalogue_url.rsplit("/odata/v1", 1)[0] + handler.path, timeout=30)
        body = reply.json()
        body["@odata.nextLink"] = f"{foreign.url}{handler.path}&%24skip=1000"
        return reply.status_code, {"Content-Type": "application/json"}, json.dumps(body).encode()

    catalogue = Recorder(front)
    result = run_through(sim, tmp_path / "dem", catalogue, "CDSE_CATALOGUE_URL")
    assert result.returncode == 1
    assert "CDSE catalogue answered a nextLink to another host" in result.stderr
    assert catalogue.requests and catalogue.tokens() == []  # search carries no token at all
    assert foreign.requests == []
    assert [r for r in sim.request_log() if r.server == "download"] == []  # a failed search decides nothing


class _Session:
    def may_start(self):
        return True

    def access_token(self):
        return "secret-token"

    def token_rejected(self, token):
        raise AssertionError("no refresh expected")


def _product(pid=PID):
    return Product(id=pid, name="x.DEM", geocell=None, content_length=None, md5=None, blake3=None, delivery=None,
                   modification_date="", footprint_wkt="", s3_path="", online=True)


def test_a_redirect_within_the_download_host_is_followed_token_and_all(tmp_path):
    def respond(handler):
        if handler.path.startswith("/odata/"):
            return 301, {"Location": handler.path.replace("/odata/", "/moved/")}, b""
        return 200, {"Content-Type": "application/zip"}, b"zip bytes"

    server = Recorder(respond)
    try:
        result = download_product(_product(), tmp_path, _Session(), requests.Session(),
                                  Endpoints(download_url=f"{server.url}/odata/v1"))
    finally:
        server.close()
    assert result.zip_path.read_bytes() == b"zip bytes"
    assert [p for _, p, _ in server.requests] == [f"/odata/v1/Products({PID})/$value",
                                                  f"/moved/v1/Products({PID})/$value"]
    assert server.tokens() == ["Bearer secret-token"] * 2


class _TwoDownloadHosts(Endpoints):
    """Endpoints whose token may go to a second host too, as CDSE's download and zipper hosts."""

    second = ""

    @property
    def token_hosts(self):
        return (self.download_url, self.second)


def test_a_redirect_between_download_hosts_carries_the_token_and_one_beyond_them_is_not_made(tmp_path, foreign):
    second = Recorder(lambda h: (302, {"Location": f"{foreign.url}{h.path}"}, b"") if "/away/" in h.path
                      else (200, {"Content-Type": "application/zip"}, b"zip bytes"))
    first = Recorder(lambda h: (307, {"Location": f"{second.url}{h.path.replace('/odata/', '/moved/')}"}, b""))
    endpoints = _TwoDownloadHosts(download_url=f"{first.url}/odata/v1")
    object.__setattr__(endpoints, "second", second.url)
    try:
        result = download_product(_product(), tmp_path, _Session(), requests.Session(), endpoints)
        with pytest.raises(DownloadFailed, match="not followed, so that the access token stays"):
            download_product(_product(), tmp_path, _Session(), requests.Session(),
                             _TwoDownloadHosts(download_url=f"{second.url}/away/v1"))
    finally:
        first.close()
        second.close()
    assert result.zip_path.read_bytes() == b"zip bytes"
    assert first.tokens() == second.tokens()[:1] == ["Bearer secret-token"]
    assert foreign.requests == []


@pytest.mark.parametrize("status, code, what", [(400, "DAT-ZIP-104", "malformed OData request path"),
                                                (422, "DAT-ZIP-111", "malformed product UUID")])
def test_a_request_cdse_calls_malformed_is_reported_as_our_bug_with_the_trace_id(tmp_path, status, code, what):
    body = json.dumps({"trace-id": TRACE, "code": code, "message": "Malformed request"}).encode()
    server = Recorder(lambda h: (status, {"Content-Type": "application/json"}, body))
    try:
        with pytest.raises(DownloadFailed) as err:
            download_product(_product(), tmp_path, _Session(), requests.Session(),
                             Endpoints(download_url=f"{server.url}/odata/v1"),
                             backoff=Backoff(attempts=3, base=0.01, cap=0.01))
    finally:
        server.close()
    message = str(err.value)
    assert what in message and code in message and "a bug of this tool" in message and TRACE in message
    assert len(server.requests) == 1  # not retried: another try would be refused the same way
    assert list(tmp_path.iterdir()) == []
