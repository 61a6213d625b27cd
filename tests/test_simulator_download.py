"""The simulator's download host, with raw HTTP: tokens, error bodies, quota, headers, bytes."""

import hashlib
import http.client
import re
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from blake3 import blake3

from simulator import User

POINT = "OData.CSC.Intersects(area=geography'SRID=4326;POINT(7.5 50.5)')"


def token_for(sim, user="demo@example.com", password="demo"):
    reply = requests.post(sim.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                               "username": user, "password": password}, timeout=10)
    return reply.json()["access_token"]


def find(sim, collection="COP-DEM", extra=""):
    query = f"Collection/Name eq '{collection}' and {POINT}{extra}"
    reply = requests.get(f"{sim.catalogue_url}/Products", params={"$filter": query, "$top": "100"}, timeout=30)
    return reply.json()["value"]


def value_url(sim, product):
    return f"{sim.download_url}/Products({product['Id']})/$value"


def get(sim, product, token=None, **headers):
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(value_url(sim, product), headers=headers, timeout=30)


def assert_zip_error(reply, status, code):
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"trace-id", "code", "message"}
    assert re.match(r"^[0-9a-f]{32}$", body["trace-id"])
    assert body["code"] == code
    assert body["message"]


def test_download_bytes_match_both_checksums_and_headers(sim):
    product = find(sim)[0]
    reply = get(sim, product, token_for(sim))
    assert reply.status_code == 200
    assert reply.headers["Content-Length"] == str(product["ContentLength"]) == str(len(reply.content))
    assert reply.headers["Content-Disposition"] == f"attachment; filename={product['Name']}.zip"
    checksums = {c["Algorithm"]: c["Value"] for c in product["Checksum"]}
    assert hashlib.md5(reply.content).hexdigest() == checksums["MD5"]
    assert blake3(reply.content).hexdigest() == checksums["BLAKE3"]


def test_no_token_is_dat_zip_604(sim):
    assert_zip_error(get(sim, find(sim)[0]), 401, "DAT-ZIP-604")


def test_a_token_the_service_never_issued_is_401(sim):
    reply = get(sim, find(sim)[0], "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln")
    assert reply.status_code == 401
    assert reply.json()["code"] != "DAT-ZIP-604"


def test_account_without_ccm_gets_dat_zip_608_for_ccm_only(make_sim):
    sim = make_sim(users=[User("plain@example.com", "p", ccm=False)])
    token = token_for(sim, "plain@example.com", "p")
    assert_zip_error(get(sim, find(sim, "CCM")[0], token), 403, "DAT-ZIP-608")
    assert get(sim, find(sim, "COP-DEM")[0], token).status_code == 200
    assert "CCM" in get(sim, find(sim, "CCM")[0], token).json()["message"]


def test_range_is_not_supported(sim):
    reply = get(sim, find(sim)[0], token_for(sim), Range="bytes=100-")
    assert reply.status_code == 501
    assert reply.json()["code"]


def test_unknown_product_is_404(sim):
    product = {"Id": str(uuid.uuid4())}
    reply = get(sim, product, token_for(sim))
    assert reply.status_code == 404
    assert reply.json()["code"]


def test_token_in_the_query_string_as_eodag_sends_it(sim):
    product = find(sim)[0]
    reply = requests.get(value_url(sim, product), params={"token": token_for(sim)}, timeout=30)
    assert reply.status_code == 200
    assert len(reply.content) == product["ContentLength"]


def test_head_gives_the_headers_without_body(sim):
    product = find(sim)[0]
    reply = requests.head(value_url(sim, product), headers={"Authorization": f"Bearer {token_for(sim)}"},
                          timeout=30)
    assert reply.status_code == 200
    assert reply.headers["Content-Length"] == str(product["ContentLength"])
    assert reply.content == b""


def test_quota_past_four_concurrent_downloads_is_429_with_retry_after(make_sim):
    sim = make_sim(bandwidth=40_000, users=[User("a@example.com", "a"), User("b@example.com", "b")])
    products = find(sim, "CCM")[:6]
    tokens = {u: token_for(sim, u, u[0]) for u in ("a@example.com", "b@example.com")}
    start = threading.Barrier(6)
    replies = {}

    def fetch(i, user):
        start.wait()
        if i == 5:
            time.sleep(0.2)  # the other user arrives while user a holds four slots
        replies[i] = get(sim, products[i], tokens[user])

    threads = [threading.Thread(target=fetch, args=(i, "a@example.com")) for i in range(5)]
    threads.append(threading.Thread(target=fetch, args=(5, "b@example.com")))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(replies[i].status_code for i in range(5))
    assert statuses == [200, 200, 200, 200, 429]
    refused = next(replies[i] for i in range(5) if replies[i].status_code == 429)
    assert_zip_error(refused, 429, "DAT-ZIP-100")
    assert float(refused.headers["Retry-After"]) > 0
    assert replies[5].status_code == 200  # the quota is per user
    # the log shows at most four of user a's downloads at once, and the slots free again afterwards
    done = [r for r in sim.request_log() if r.server == "download" and r.user == "a@example.com" and r.status == 200]
    assert max(sum(1 for o in done if o.started <= r.started < o.finished) for r in done) == 4
    assert get(sim, products[0], tokens["a@example.com"]).status_code == 200


def test_connection_is_kept_alive_across_requests(sim):
    product = find(sim)[0]
    token = token_for(sim)
    parts = urlsplit(sim.download_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    path = f"{parts.path}/Products({product['Id']})/$value"
    conn.request("GET", path)
    first = conn.getresponse()
    first.read()
    sock = conn.sock
    assert first.status == 401 and sock is not None
    for _ in range(3):
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        reply = conn.getresponse()
        assert reply.status == 200 and len(reply.read()) == product["ContentLength"]
        assert conn.sock is sock
    conn.close()


def test_bandwidth_cap_per_connection_and_latency(make_sim):
    sim = make_sim(bandwidth=50_000, latency=0.3)
    product = find(sim)[0]
    token = token_for(sim)
    began = time.monotonic()
    reply = get(sim, product, token)
    took = time.monotonic() - began
    assert reply.status_code == 200
    assert took >= 0.3 + 0.9 * product["ContentLength"] / 50_000
    record = [r for r in sim.request_log() if r.server == "download"][-1]
    assert record.bytes_sent == product["ContentLength"]


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_other_methods_are_refused(sim, method):
    reply = requests.request(method, value_url(sim, find(sim)[0]), timeout=30)
    assert reply.status_code == 405
