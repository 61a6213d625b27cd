"""Fault injection of the simulator, with raw HTTP: each fault does what it says and is logged."""

import hashlib
import time

import pytest
import requests

from simulator import Faults

POINT = "OData.CSC.Intersects(area=geography'SRID=4326;POINT(7.5 50.5)')"


def token_for(sim):
    return requests.post(sim.token_url, data={"client_id": "cdse-public", "grant_type": "password",
                                              "username": "demo@example.com", "password": "demo"},
                         timeout=10).json()["access_token"]


def search(sim, timeout=30):
    return requests.get(f"{sim.catalogue_url}/Products",
                        params={"$filter": f"Collection/Name eq 'COP-DEM' and {POINT}"}, timeout=timeout)


def download(sim, product, token, stream=False):
    return requests.get(f"{sim.download_url}/Products({product['Id']})/$value",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30, stream=stream)


def downloads(sim):
    return [r for r in sim.request_log() if r.server == "download"]


def md5_of(product):
    return next(c["Value"] for c in product["Checksum"] if c["Algorithm"] == "MD5")


def test_dropped_connection_part_way_through_the_body(make_sim):
    sim = make_sim(faults=Faults(drop_first=1, drop_at=0.5))
    product = search(sim).json()["value"][0]
    token = token_for(sim)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        download(sim, product, token).content  # noqa: B018 - reading the body is the point
    whole = download(sim, product, token)
    assert hashlib.md5(whole.content).hexdigest() == md5_of(product)
    first, second = downloads(sim)
    assert (first.status, first.fault, first.bytes_sent) == (200, "drop", product["ContentLength"] // 2)
    assert (second.fault, second.bytes_sent) == (None, product["ContentLength"])


def test_corrupted_body_has_the_right_length_and_the_wrong_checksum(make_sim):
    sim = make_sim(faults=Faults(corrupt_first=1))
    product = search(sim).json()["value"][0]
    token = token_for(sim)
    bad = download(sim, product, token)
    good = download(sim, product, token)
    assert len(bad.content) == len(good.content) == product["ContentLength"]
    assert hashlib.md5(bad.content).hexdigest() != md5_of(product)
    assert hashlib.md5(good.content).hexdigest() == md5_of(product)
    assert [r.fault for r in downloads(sim)] == ["corrupt", None]


def test_corrupt_rate_strikes_the_given_share(make_sim):
    sim = make_sim(faults=Faults(corrupt_rate=0.5, seed=11))
    product = search(sim).json()["value"][0]
    token = token_for(sim)
    sums = [hashlib.md5(download(sim, product, token).content).hexdigest() for _ in range(20)]
    bad = [s != md5_of(product) for s in sums]
    assert 3 <= sum(bad) <= 17
    assert bad == [r.fault == "corrupt" for r in downloads(sim)]


def test_first_errors_then_success(make_sim):
    sim = make_sim(faults=Faults(error_first=2, error_statuses=(503,), retry_after=3))
    product = search(sim).json()["value"][0]
    token = token_for(sim)
    replies = [download(sim, product, token) for _ in range(3)]
    assert [r.status_code for r in replies] == [503, 503, 200]
    assert replies[0].headers["Retry-After"] == "3"
    assert [r.fault for r in downloads(sim)] == ["error503", "error503", None]


def test_random_errors_come_in_bursts_and_repeat_with_the_seed(make_sim):
    def run():
        sim = make_sim(faults=Faults(error_rate=0.2, error_burst=3, seed=5))
        product = search(sim).json()["value"][0]
        token = token_for(sim)
        return [download(sim, product, token).status_code for _ in range(40)]

    first, second = run(), run()
    assert first == second
    runs, current = [], 0
    for status in [*first, 200]:
        if status >= 500:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert runs and all(length >= 3 for length in runs[:-1] if length)
    assert set(first) <= {200, 500, 503}


def test_slow_first_byte(make_sim):
    sim = make_sim(faults=Faults(slow_first=1, slow_seconds=0.6))
    product = search(sim).json()["value"][0]
    token = token_for(sim)
    began = time.monotonic()
    reply = download(sim, product, token, stream=True)
    headers_at = time.monotonic() - began
    body = reply.content
    total = time.monotonic() - began
    assert len(body) == product["ContentLength"]
    assert headers_at < 0.5 <= total
    assert downloads(sim)[0].fault == "slow"


def test_429_storm_below_the_quota(make_sim):
    sim = make_sim(faults=Faults(storm_first=2, retry_after=2))
    product = search(sim).json()["value"][0]
    token = token_for(sim)
    replies = [download(sim, product, token) for _ in range(3)]
    assert [r.status_code for r in replies] == [429, 429, 200]
    assert replies[0].headers["Retry-After"] == "2"
    assert replies[0].json()["code"] == "DAT-ZIP-100"
    assert [r.fault for r in downloads(sim)] == ["storm429", "storm429", None]


def test_catalogue_hangs_longer_than_the_client_timeout_then_closes(make_sim):
    sim = make_sim(faults=Faults(catalogue_hang_first=1, catalogue_hang_seconds=1.0))
    with pytest.raises(requests.exceptions.ReadTimeout):
        search(sim, timeout=0.3)
    assert search(sim).status_code == 200
    time.sleep(1.0)
    hung = next(r for r in sim.request_log() if r.path.endswith("/Products"))
    assert (hung.fault, hung.status) == ("hang", None)


def test_catalogue_answers_html_instead_of_json(make_sim):
    sim = make_sim(faults=Faults(catalogue_garbage_first=1))
    reply = search(sim)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        reply.json()
    assert search(sim).json()["value"]
    assert [r.fault for r in sim.request_log()] == ["garbage", None]


def test_catalogue_5xx(make_sim):
    sim = make_sim(faults=Faults(catalogue_error_first=1, catalogue_error_status=502))
    assert search(sim).status_code == 502
    assert search(sim).status_code == 200
    assert [r.fault for r in sim.request_log()] == ["catalogue502", None]


def test_identity_5xx_then_login(make_sim):
    sim = make_sim(faults=Faults(identity_error_first=1))
    form = {"client_id": "cdse-public", "grant_type": "password", "username": "demo@example.com",
            "password": "demo"}
    assert requests.post(sim.token_url, data=form, timeout=10).status_code == 503
    assert requests.post(sim.token_url, data=form, timeout=10).status_code == 200
    assert [(r.grant_type, r.status, r.fault) for r in sim.request_log()] == [
        ("password", 503, "identity503"), ("password", 200, None)]


def test_faults_do_not_strike_rejected_requests(make_sim):
    sim = make_sim(faults=Faults(drop_first=1))
    product = search(sim).json()["value"][0]
    assert download(sim, product, "").status_code == 401  # no token: not eligible
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        download(sim, product, token_for(sim)).content  # noqa: B018 - reading the body is the point
    assert [r.fault for r in downloads(sim)] == [None, "drop"]
