"""The Keycloak token endpoint of CDSE: password and refresh grants, sessions, lifetimes.

Pure logic (no HTTP): ``IdentityService.token(form)`` returns the status and JSON body that
Keycloak would send. Tokens are JWT-shaped (HS256 with a per-run key) because some clients
decode them; validity is checked against the session table, so lifetimes are enforced to the
fraction of a second and a test can make a token expire in 2 s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from simulator.config import User

CLIENT_ID = "cdse-public"
TOTP_STEP = 30


def totp(secret: str, at: float | None = None, digits: int = 6) -> str:
    """RFC 6238 code (HMAC-SHA1, 30 s steps) of a base32 secret, as authenticator apps show it."""
    key = base64.b32decode(secret.upper().replace(" ", "") + "=" * (-len(secret.replace(" ", "")) % 8))
    counter = int((time.time() if at is None else at) // TOTP_STEP)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % (10**digits)
    return f"{code:0{digits}d}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Session:
    id: str
    user: User
    started: float
    refresh_deadline: float
    """The refresh window closes this long after the login, however often the token is refreshed."""


@dataclass(frozen=True)
class TokenCheck:
    """What the download host learns from an ``Authorization`` header."""

    user: User | None
    problem: str | None  # None (valid), "missing", "expired", "invalid"


class IdentityService:
    def __init__(self, users: list[User], access_lifetime: float, refresh_lifetime: float,
                 max_sessions: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.users = {u.name.lower(): u for u in users}
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.max_sessions = max_sessions
        self.clock = clock
        self.issuer = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE"
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._access: dict[str, tuple[str, float]] = {}  # token -> (session id, expiry)
        self._refresh: dict[str, tuple[str, float]] = {}  # token -> (session id, expiry)
        self._used_codes: set[tuple[str, str]] = set()  # (user, two-factor code) already used

    # --- the endpoint ----------------------------------------------------------------------
    def token(self, form: Mapping[str, str]) -> tuple[int, dict, str | None]:
        """(status, JSON body, user name) for a POST to the token URL with this form."""
        grant = form.get("grant_type")
        if not grant:
            return 400, _error("invalid_request", "Missing form parameter: grant_type"), None
        if form.get("client_id") != CLIENT_ID:
            return 401, _error("invalid_client", "Invalid client or Invalid client credentials"), None
        if grant == "password":
            return self._password(form)
        if grant == "refresh_token":
            return self._refresh_grant(form)
        return 400, _error("unsupported_grant_type", "Unsupported grant_type"), None

    def _password(self, form: Mapping[str, str]) -> tuple[int, dict, str | None]:
        name = form.get("username", "")
        user = self.users.get(name.lower())
        if user is None or not hmac.compare_digest(user.password.encode(), form.get("password", "").encode()):
            return 401, _error("invalid_grant", "Invalid user credentials"), None
        if user.totp_secret is not None:
            code = form.get("totp", "")
            now = time.time()
            valid = {totp(user.totp_secret, now + d * TOTP_STEP) for d in (-1, 0, 1)}
            with self._lock:  # Keycloak's default OTP policy: a code is good for one login only
                reused = (user.name, code) in self._used_codes
                self._used_codes.add((user.name, code))
            if code not in valid or reused:
                return 401, _error("invalid_grant", "Invalid user credentials"), user.name
        now = self.clock()
        with self._lock:
            self._expire(now)
            active = sum(1 for s in self._sessions.values() if s.user.name == user.name)
            if active >= self.max_sessions:
                return 400, _error("invalid_grant", "There are too many sessions"), user.name
            session = Session(str(uuid.uuid4()), user, now, now + self.refresh_lifetime)
            self._sessions[session.id] = session
            return 200, self._issue(session, now), user.name

    def _refresh_grant(self, form: Mapping[str, str]) -> tuple[int, dict, str | None]:
        token = form.get("refresh_token", "")
        now = self.clock()
        with self._lock:
            claims, entry = self._lookup(token, self._refresh)
            if claims is None or (entry is None and claims.get("iss") != self.issuer):
                return 400, _error("invalid_grant", "Invalid refresh token"), None
            self._expire(now)
            entry = self._refresh.get(token)
            session = self._sessions.get(entry[0]) if entry else None
            if entry is None or session is None or entry[1] <= now:
                user = session.user.name if session else claims.get("preferred_username")
                return 400, _error("invalid_grant", "Token is not active"), user
            return 200, self._issue(session, now), session.user.name

    def logout(self, form: Mapping[str, str]) -> tuple[int, dict | None, str | None]:
        """(status, JSON body or None, user name) for a POST to the logout URL: Keycloak ends the
        session of the refresh token (204), which then no longer counts against the cap."""
        if form.get("client_id") != CLIENT_ID:
            return 401, _error("invalid_client", "Invalid client or Invalid client credentials"), None
        token = form.get("refresh_token", "")
        if not token:
            return 400, _error("invalid_request", "No refresh token"), None
        now = self.clock()
        with self._lock:
            self._expire(now)
            entry = self._refresh.get(token)
            session = self._sessions.get(entry[0]) if entry else None
            if session is None:
                return 400, _error("invalid_grant", "Invalid refresh token"), None
            del self._sessions[session.id]
            self._refresh = {j: e for j, e in self._refresh.items() if e[0] != session.id}
            self._access = {j: e for j, e in self._access.items() if e[0] != session.id}
            return 204, None, session.user.name

    # --- tokens -----------------------------------------------------------------------------
    def _issue(self, session: Session, now: float) -> dict:
        refresh_exp = session.refresh_deadline
        access_exp = min(now + self.access_lifetime, refresh_exp)  # Keycloak caps it at the session's end
        access = self._sign(session, "Bearer", access_exp)
        refresh = self._sign(session, "Refresh", refresh_exp)
        self._access[access] = (session.id, access_exp)
        self._refresh[refresh] = (session.id, refresh_exp)
        return {
            "access_token": access,
            "expires_in": _seconds(access_exp - now),
            "refresh_expires_in": _seconds(refresh_exp - now),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session.id,
            "scope": "AUDIENCE_PUBLIC openid email profile ondemand_processing user-context",
        }

    def _sign(self, session: Session, kind: str, expiry: float) -> str:
        """A JWT as Keycloak signs it (RS256), so clients that verify tokens (eodag) accept it."""
        wall = time.time()
        claims = {
            "exp": int(wall + (expiry - self.clock())), "iat": int(wall), "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": "CLOUDFERRO_PUBLIC" if kind == "Bearer" else self.issuer,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, session.user.name)), "typ": kind,
            "azp": CLIENT_ID, "sid": session.id, "session_state": session.id,
            "preferred_username": session.user.name, "email": session.user.name,
        }
        return signing_key().sign(claims)

    def jwks(self) -> dict:
        return {"keys": [signing_key().jwk()]}

    def openid_configuration(self, token_url: str) -> dict:
        base = token_url.rsplit("/protocol/", 1)[0]
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/protocol/openid-connect/auth",
            "token_endpoint": token_url,
            "jwks_uri": f"{base}/protocol/openid-connect/certs",
            "grant_types_supported": ["password", "refresh_token"],
            "response_types_supported": ["code", "token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "none"],
        }

    def _lookup(self, token: str, table: dict[str, tuple[str, float]]) -> tuple[dict | None, tuple | None]:
        """(claims, table entry) of a token this service issued; (None, None) for anything else."""
        parts = token.split(".")
        if len(parts) != 3:
            return None, None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return None, None
        if not isinstance(claims, dict):
            return None, None
        return claims, table.get(token)

    def check_bearer(self, header: str | None) -> TokenCheck:
        """Who holds this ``Authorization`` header, or why nobody does."""
        if not header or not header.lower().startswith("bearer ") or not header[7:].strip():
            return TokenCheck(None, "missing")
        return self.check_token(header[7:].strip())

    def check_token(self, token: str) -> TokenCheck:
        with self._lock:
            claims, entry = self._lookup(token, self._access)
        if claims is None or entry is None:
            return TokenCheck(None, "invalid")
        user = self.users.get(str(claims.get("preferred_username", "")).lower())
        if entry[1] <= self.clock():
            return TokenCheck(user, "expired")
        return TokenCheck(user, None)

    def _expire(self, now: float) -> None:
        """Forget sessions whose refresh window closed (they no longer count against the cap)."""
        dead = {sid for sid, s in self._sessions.items() if s.refresh_deadline <= now}
        if dead:
            for sid in dead:
                del self._sessions[sid]
            self._refresh = {j: e for j, e in self._refresh.items() if e[0] not in dead}
        self._access = {j: e for j, e in self._access.items() if e[1] > now - 3600}

    def active_sessions(self, user_name: str) -> int:
        with self._lock:
            self._expire(self.clock())
            return sum(1 for s in self._sessions.values() if s.user.name == user_name)


class SigningKey:
    """One RSA key per process (making one costs ~0.1 s): signs tokens, publishes its JWK."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        self.kid = hashlib.sha256(str(numbers.n).encode()).hexdigest()[:32]
        self._jwk = {"kid": self.kid, "kty": "RSA", "alg": "RS256", "use": "sig",
                     "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                     "e": _b64(numbers.e.to_bytes(3, "big"))}

    def sign(self, claims: dict) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = self._key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{_b64(signature)}"

    def jwk(self) -> dict:
        return dict(self._jwk)


_KEY: SigningKey | None = None
_KEY_LOCK = threading.Lock()


def signing_key() -> SigningKey:
    global _KEY
    with _KEY_LOCK:
        if _KEY is None:
            _KEY = SigningKey()
        return _KEY


def _seconds(value: float) -> int | float:
    """Keycloak sends whole seconds; sub-second test lifetimes stay exact."""
    return round(value) if abs(value - round(value)) < 1e-6 else round(value, 3)


def _error(error: str, description: str) -> dict:
    return {"error": error, "error_description": description}
