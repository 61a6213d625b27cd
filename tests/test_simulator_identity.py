"""The simulator's identity service, with raw HTTP: grants, replies, lifetimes, sessions, TOTP.

Lifetimes pass on a ``FakeClock`` given to the simulator, never by waiting.
"""

import base64
import json

import pytest
import requests

from simulator import User, totp
from tests.helpers import FakeClock

REPLY_KEYS = {"access_token", "expires_in", "refresh_token", "refresh_expires_in", "token_type",
              "not-before-policy", "session_state", "scope"}


def post(sim, **form):
    return requests.post(sim.token_url, data={"client_id": "cdse-public", **form}, timeout=10)


def login(sim, user="demo@example.com", password="demo", **extra):
    return post(sim, grant_type="password", username=user, password=password, **extra)


def claims(token):
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_password_grant_reply_has_the_real_keys_and_lifetimes(sim):
    reply = login(sim)
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == REPLY_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["refresh_expires_in"] == 3600
    assert claims(body["access_token"])["preferred_username"] == "demo@example.com"
    assert claims(body["access_token"])["aud"] == "CLOUDFERRO_PUBLIC"


@pytest.mark.parametrize(("form", "status", "error"), [
    ({"grant_type": "password", "username": "demo@example.com", "password": "wrong"}, 401, "invalid_grant"),
    ({"grant_type": "password", "username": "nobody@example.com", "password": "demo"}, 401, "invalid_grant"),
    ({"username": "demo@example.com", "password": "demo"}, 400, "invalid_request"),
    ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
    ({"grant_type": "refresh_token", "refresh_token": "not-a-token"}, 400, "invalid_grant"),
])
def test_rejections_use_keycloak_error_bodies(sim, form, status, error):
    reply = post(sim, **form)
    assert reply.status_code == status
    assert reply.json()["error"] == error
    assert reply.json()["error_description"]


def test_wrong_password_says_invalid_user_credentials(sim):
    reply = login(sim, password="wrong")
    assert reply.json() == {"error": "invalid_grant", "error_description": "Invalid user credentials"}


def test_wrong_client_id_is_invalid_client(sim):
    reply = requests.post(sim.token_url, data={"client_id": "other", "grant_type": "password",
                                               "username": "demo@example.com", "password": "demo"}, timeout=10)
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"


def test_refresh_grant_gives_a_new_access_token_within_the_window(make_sim):
    sim = make_sim(access_lifetime=30, refresh_lifetime=60)
    first = login(sim).json()
    reply = post(sim, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reply.status_code == 200
    second = reply.json()
    assert set(second) == REPLY_KEYS
    assert second["access_token"] != first["access_token"]
    assert second["session_state"] == first["session_state"]
    assert 0 < second["refresh_expires_in"] <= 60
    grants = [(r.grant_type, r.status, r.user) for r in sim.request_log()]
    assert grants == [("password", 200, "demo@example.com"), ("refresh_token", 200, "demo@example.com")]


def test_refresh_is_refused_once_the_window_of_the_login_closed(make_sim):
    clock = FakeClock()
    sim = make_sim(access_lifetime=1, refresh_lifetime=2, clock=clock)
    first = login(sim).json()
    assert first["refresh_expires_in"] == 2
    clock.advance(1.1)
    middle = post(sim, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert middle.status_code == 200
    assert middle.json()["refresh_expires_in"] < 1  # the window runs from the login, not the refresh
    clock.advance(0.85)
    assert post(sim, grant_type="refresh_token", refresh_token=middle.json()["refresh_token"]).status_code == 200
    clock.advance(0.1)
    late = post(sim, grant_type="refresh_token", refresh_token=middle.json()["refresh_token"])
    assert late.status_code == 400
    assert late.json() == {"error": "invalid_grant", "error_description": "Token is not active"}


def test_access_token_expires_after_its_lifetime(make_sim):
    clock = FakeClock()
    sim = make_sim(access_lifetime=1, clock=clock)
    token = login(sim).json()["access_token"]
    search = requests.get(f"{sim.catalogue_url}/Products", params={"$top": "1", "$select": "Id"}, timeout=10)
    url = f"{sim.download_url}/Products({search.json()['value'][0]['Id']})/$value"
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    clock.advance(0.95)
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    clock.advance(0.1)
    late = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert late.status_code == 401
    assert late.json()["code"] == "DAT-ZIP-109"


def test_session_cap_per_user_and_sessions_end_with_their_window(make_sim):
    clock = FakeClock()
    sim = make_sim(max_sessions=3, refresh_lifetime=1.5, clock=clock,
                   users=[User("a@example.com", "pa"), User("b@example.com", "pb")])
    assert [login(sim, "a@example.com", "pa").status_code for _ in range(3)] == [200, 200, 200]
    refused = login(sim, "a@example.com", "pa")
    assert refused.status_code == 400
    assert refused.json()["error_description"] == "There are too many sessions"
    assert login(sim, "b@example.com", "pb").status_code == 200  # the cap is per user
    assert sim.active_sessions("a@example.com") == 3
    clock.advance(1.45)
    assert login(sim, "a@example.com", "pa").status_code == 400  # not yet
    clock.advance(0.1)
    assert login(sim, "a@example.com", "pa").status_code == 200


def test_totp_user_needs_the_current_code(make_sim):
    secret = "JBSWY3DPEHPK3PXP"
    sim = make_sim(users=[User("t@example.com", "pt", totp_secret=secret)])
    assert login(sim, "t@example.com", "pt").status_code == 401
    assert login(sim, "t@example.com", "pt", totp="000000" if totp(secret) != "000000" else "111111").status_code == 401
    assert login(sim, "t@example.com", "pt", totp=totp(secret)).status_code == 200
    assert login(sim, "t@example.com", "pt", totp=totp(secret)).status_code == 401  # a code serves once


def test_logout_ends_the_session_so_the_cap_is_never_reached(make_sim):
    sim = make_sim(max_sessions=2)
    for _ in range(5):
        reply = login(sim, "demo@example.com", "demo")
        assert reply.status_code == 200
        out = requests.post(sim.token_url.replace("/token", "/logout"),
                            data={"client_id": "cdse-public", "refresh_token": reply.json()["refresh_token"]},
                            timeout=10)
        assert out.status_code == 204 and out.content == b""
    assert sim.active_sessions("demo@example.com") == 0
    again = requests.post(sim.token_url.replace("/token", "/logout"),
                          data={"client_id": "cdse-public", "refresh_token": reply.json()["refresh_token"]},
                          timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    held = [login(sim, "demo@example.com", "demo") for _ in range(3)]  # without logout: the cap holds
    assert [r.status_code for r in held] == [200, 200, 400]
    assert held[2].json() == {"error": "invalid_grant", "error_description": "There are too many sessions"}
    log = [(r.path.rsplit("/", 1)[1], r.status, r.user) for r in sim.request_log() if "openid-connect" in r.path]
    assert log[:2] == [("token", 200, "demo@example.com"), ("logout", 204, "demo@example.com")]


def test_totp_codes_follow_rfc_6238():
    # RFC 6238 appendix B, SHA-1 secret "12345678901234567890", 8 digits at T=59 is 94287082
    from simulator.identity import totp as raw_totp

    secret = base64.b32encode(b"12345678901234567890").decode()
    assert raw_totp(secret, at=59, digits=8) == "94287082"
    assert raw_totp(secret, at=1111111109, digits=8) == "07081804"


def test_openid_configuration_and_keys_verify_the_token(sim):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    realm = sim.token_url.rsplit("/protocol/", 1)[0]
    config = requests.get(f"{realm}/.well-known/openid-configuration", timeout=10).json()
    assert config["token_endpoint"] == sim.token_url
    keys = requests.get(config["jwks_uri"], timeout=10).json()["keys"]
    token = login(sim).json()["access_token"]
    head, body, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    jwk = next(k for k in keys if k["kid"] == header["kid"])

    def number(text):
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    public = rsa.RSAPublicNumbers(number(jwk["e"]), number(jwk["n"])).public_key()
    public.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                  f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())  # raises when wrong
    assert header["alg"] == "RS256"


def test_token_endpoint_answers_get_with_405(sim):
    assert requests.get(sim.token_url, timeout=10).status_code == 405
