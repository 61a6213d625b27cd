"""CDSE credentials: where they come from, the encrypted store, the terminal prompt.

Asking the user on the terminal: user name, password twice, a yes/no confirmation.

Prompts go to stderr and passwords through ``getpass`` (the terminal, echo off), so that
stdout can be redirected without hiding a question or leaking an answer. The checks are
pure functions so that the rules (an e-mail address, two equal non-empty passwords) are
stated once.

The stored CDSE password: RSA-encrypted entries in ``credentials.yaml``, one per OS user.

What this protects against: another account on the machine (folder 0700, files 0600) and a
copied ``credentials.yaml`` alone (the password is RSA-OAEP ciphertext; the private key stays
behind, optionally encrypted with ``CDSE_KEY_PASSPHRASE``). What it does not: anyone who can
read the private key (and knows its passphrase, if any) can decrypt the password.

The reference tool's holes are closed here: a 3072-bit key with OAEP/SHA-256 instead of
1012 bits with PKCS#1 v1.5, private files, ``safe_load`` (no Python tags), atomic writes, one
entry per OS user instead of a duplicate at every save, and a key fingerprint per entry so
that a key which no longer matches is named as such rather than failing obscurely.

Every failure to read the store is a ``CredentialError`` that suggests ``--reset``, raised
before any file is written.

Where the CDSE user name and password come from, first found wins:

1. ``CDSE_USERNAME`` / ``CDSE_PASSWORD`` in the environment (scripts, CI);
2. the current OS user's entry in ``credentials/credentials.yaml`` (the store below);
3. a ``~/.netrc`` entry for the identity host (the host of the token URL);
4. a prompt, only on a terminal, whose answer is then stored (the guide's "asked once").

``CDSE_TOTP`` adds a two-factor code to whichever source is used. The log names the source
and the user name, never the password.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import getpass
import hashlib
import logging
import netrc
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cdse_dem import fsutil
from cdse_dem.errors import EXIT_OK, EXIT_USAGE, CredentialError
from cdse_dem.fsutil import DiskFull, atomic_write_bytes
from cdse_dem.logs import remember, shown

log = logging.getLogger(__name__)


USERNAME_PROMPT = "Enter your username: "
PASSWORD_PROMPT = "Enter your password: "
PASSWORD_AGAIN_PROMPT = "Re-enter your password: "
TOTP_PROMPT = "The CDSE session needs a new login: enter a fresh two-factor code: "
MAX_ATTEMPTS = 5


def username_problem(name: str) -> str | None:
    """Why ``name`` cannot be a CDSE user name (the account's e-mail address), or None."""
    if not name:
        return "The user name cannot be empty."
    if "@" not in name:
        return "The user name is the e-mail address of your CDSE account (it contains '@')."
    if any(ch.isspace() for ch in name):
        return "The user name cannot contain spaces."
    return None


def password_problem(first: str, second: str) -> str | None:
    """Why the two typed passwords cannot be used, or None."""
    if not first:
        return "The password cannot be empty."
    if first != second:
        return "The passwords do not match, please try again."
    return None


def read_line(prompt: str) -> str:
    """One line typed by the user after ``prompt`` (on stderr); CredentialError at end of input."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        sys.stderr.write("\n")
        raise CredentialError("no answer was typed (end of input)")
    return line.rstrip("\r\n")


def read_secret(prompt: str) -> str:
    """A secret typed without echo; CredentialError at end of input."""
    try:
        return getpass.getpass(prompt)
    except EOFError:
        sys.stderr.write("\n")
        raise CredentialError("no password was typed (end of input)") from None


def tell(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def ask_username() -> str:
    for _ in range(MAX_ATTEMPTS):
        name = read_line(USERNAME_PROMPT).strip()
        problem = username_problem(name)
        if problem is None:
            return name
        tell(problem)
    raise CredentialError(f"no valid user name after {MAX_ATTEMPTS} attempts")


def ask_password() -> str:
    for _ in range(MAX_ATTEMPTS):
        first = read_secret(PASSWORD_PROMPT)
        second = read_secret(PASSWORD_AGAIN_PROMPT) if first else ""
        problem = password_problem(first, second)
        if problem is None:
            return first
        tell(problem)
    raise CredentialError(f"no confirmed password after {MAX_ATTEMPTS} attempts")


def confirm(question: str) -> bool:
    """True only for an explicit yes: the default of a destructive question is no."""
    return read_line(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def read_totp() -> str:
    """A fresh two-factor code typed by the user (a run longer than the refresh window)."""
    return read_secret(TOTP_PROMPT)


CREDENTIALS_FILE = "credentials.yaml"
PRIVATE_KEY_FILE = "private_key.pem"
KEY_BITS = 3072
FORMAT_VERSION = 1
_HEADER = (
    "# CDSE credentials of the Copernicus DEM downloader, one entry per OS user.\n"
    "# Passwords are RSA-OAEP (SHA-256) encrypted with the key in private_key.pem beside this file.\n"
    "# Do not edit; run the tool with --reset to replace your entry.\n"
)
_RESET_HINT = "run the tool with --reset to store your credentials again"


@dataclass(frozen=True)
class StoredEntry:
    """One OS user's line in credentials.yaml: never the password in clear."""

    username: str
    ciphertext: str  # base64 of the RSA-OAEP ciphertext
    fingerprint: str  # "sha256:<hex>" of the public key (DER) that encrypted it


# --- pure core: the YAML document ------------------------------------------------------


def parse_document(text: str, source: str = CREDENTIALS_FILE) -> dict[str, StoredEntry]:
    """The entries of a credentials.yaml text, keyed by OS user.

    ``safe_load`` refuses Python tags; anything not shaped as we write it is refused too,
    since guessing at a damaged file could hand the wrong password to the wrong user.
    """

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _corrupt(source, _yaml_reason(exc)) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise _corrupt(source, "not a mapping")
    version = doc.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise _corrupt(source, f"unknown format version {version!r}")
    raw_entries = doc.get("entries") or {}
    if not isinstance(raw_entries, dict):
        raise _corrupt(source, "'entries' is not a mapping")
    entries: dict[str, StoredEntry] = {}
    for os_user, raw in raw_entries.items():
        fields = ("username", "password", "key_fingerprint")
        if not (isinstance(os_user, str) and isinstance(raw, dict)
                and all(isinstance(raw.get(name), str) and raw.get(name) for name in fields)):
            raise _corrupt(source, f"entry {os_user!r} is malformed")
        entries[os_user] = StoredEntry(raw["username"], raw["password"], raw["key_fingerprint"])
    return entries


def _yaml_reason(exc: Exception) -> str:
    """One line out of PyYAML's multi-line message: what is wrong, and on which line."""
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}"
    return problem or (str(exc).splitlines() or [type(exc).__name__])[0]


def render_document(entries: dict[str, StoredEntry]) -> str:
    """The credentials.yaml text for ``entries`` (a mapping, so an OS user appears once)."""

    doc: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "entries": {
            os_user: {"username": e.username, "password": e.ciphertext, "key_fingerprint": e.fingerprint}
            for os_user, e in sorted(entries.items())
        },
    }
    return _HEADER + yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)


def _corrupt(source: str, reason: str) -> CredentialError:
    return CredentialError(f"{source}: unreadable stored credentials ({reason}); {_RESET_HINT}")


# --- pure core: the cryptography -------------------------------------------------------


def _oaep():

    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def fingerprint(public_key) -> str:
    """``sha256:<hex>`` of the public key's DER form: tells which key encrypted an entry."""

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def encrypt_password(public_key, password: str) -> str:
    """Base64 of the RSA-OAEP (SHA-256) ciphertext of ``password``."""
    data = password.encode("utf-8")
    limit = public_key.key_size // 8 - 2 * 32 - 2  # OAEP with SHA-256
    if len(data) > limit:
        raise CredentialError(f"the password is too long to be stored ({len(data)} bytes, at most {limit})")
    return base64.b64encode(public_key.encrypt(data, _oaep())).decode("ascii")


def decrypt_password(private_key, ciphertext: str) -> str:
    """The password in ``ciphertext``; ValueError when it was not made with this key."""
    try:
        raw = base64.b64decode(ciphertext.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64") from exc
    return private_key.decrypt(raw, _oaep()).decode("utf-8")


def generate_key(bits: int = KEY_BITS):

    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(private_key, passphrase: str | None) -> bytes:
    """PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""

    encryption = (serialization.BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase
                  else serialization.NoEncryption())
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key(pem: bytes, passphrase: str | None, source: str, min_bits: int = KEY_BITS):
    """The RSA private key in ``pem``; CredentialError (one line, suggesting --reset) otherwise."""

    secret = passphrase.encode("utf-8") if passphrase else None
    try:
        key = serialization.load_pem_private_key(pem, password=secret)
    except TypeError:
        if secret is None:
            raise CredentialError(
                f"{source} is encrypted: set CDSE_KEY_PASSPHRASE to its passphrase, or {_RESET_HINT}"
            ) from None
        # A passphrase was set after the key was made without one: the key still works.
        log.warning("CDSE_KEY_PASSPHRASE is set but %s is not encrypted; --reset makes an encrypted one",
                    source)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (TypeError, ValueError):
            raise CredentialError(f"{source} is damaged; {_RESET_HINT}") from None
    except ValueError:
        hint = "wrong CDSE_KEY_PASSPHRASE or a damaged file" if secret else "a damaged file"
        raise CredentialError(f"{source} cannot be loaded ({hint}); {_RESET_HINT}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < min_bits:
        raise CredentialError(f"{source} is not an RSA key of {min_bits} bits or more; {_RESET_HINT}")
    return key


# --- I/O --------------------------------------------------------------------------------


PRIVATE_MODE = 0o600  # owner read/write only: the password's ciphertext and the key that opens it


def check_private_mode(path: Path) -> None:
    """Warn when ``path`` is readable or writable by others, and make it 0600 when it is ours.

    Left so by a copy, an unpack or a hand edit, the key (or a credentials.yaml beside it)
    lets any local account decrypt the password: the user must hear of it, and the fix is safe
    to make for them. A file of another account is only reported.
    """
    try:
        st = os.stat(path)
    except OSError:
        return  # missing or unreadable: the read that follows says so
    mode = st.st_mode & 0o777
    if not mode & 0o077:
        return
    if hasattr(os, "geteuid") and st.st_uid == os.geteuid():
        try:
            os.chmod(path, PRIVATE_MODE)
        except OSError as exc:
            log.warning("%s is readable by others (mode %04o) and could not be made private: %s",
                        path, mode, _reason(exc))
            return
        log.warning("%s was readable by others (mode %04o): now %04o", path, mode, PRIVATE_MODE)
    else:
        log.warning("%s is readable by others (mode %04o) and belongs to another account: "
                    "ask its owner to make it %04o", path, mode, PRIVATE_MODE)


def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a file that is 0600 from its first byte on."""
    atomic_write_bytes(path, data, mode=PRIVATE_MODE)


class KeyStore:
    """credentials.yaml and private_key.pem in one folder, shared by the OS users who use it."""

    def __init__(self, cred_dir: Path, passphrase: str | None = None, key_bits: int = KEY_BITS):
        self.cred_dir = Path(cred_dir)
        self.passphrase = passphrase or None
        self.key_bits = key_bits

    @property
    def yaml_path(self) -> Path:
        return self.cred_dir / CREDENTIALS_FILE

    @property
    def key_path(self) -> Path:
        return self.cred_dir / PRIVATE_KEY_FILE

    def entries(self) -> dict[str, StoredEntry]:
        """Every stored entry (none when there is no file); CredentialError if unreadable."""
        check_private_mode(self.yaml_path)
        try:
            text = self.yaml_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise _corrupt(str(self.yaml_path), _reason(exc)) from None
        return parse_document(text, str(self.yaml_path))

    def load(self, os_user: str) -> tuple[str, str] | None:
        """``(CDSE user name, password)`` stored for ``os_user``, or None when there is none."""
        entry = self.entries().get(os_user)
        if entry is None:
            return None
        if not self.key_path.is_file():
            raise CredentialError(
                f"{self.key_path} is missing, so the password stored for {os_user} cannot be decrypted; "
                f"{_RESET_HINT}")
        key = self._read_key()
        if fingerprint(key.public_key()) != entry.fingerprint:
            raise CredentialError(
                f"the password stored for {os_user} in {self.yaml_path} was encrypted with another key "
                f"than {self.key_path}; {_RESET_HINT}")
        try:
            password = decrypt_password(key, entry.ciphertext)
        except (ValueError, UnicodeDecodeError):
            raise CredentialError(
                f"the password stored for {os_user} in {self.yaml_path} cannot be decrypted; {_RESET_HINT}"
            ) from None
        return entry.username, password

    def check(self) -> None:
        """Fail now, before anyone types a password, if storing would fail on a bad file or key."""
        self.entries()
        if self.key_path.exists():
            self._read_key()

    def save(self, os_user: str, username: str, password: str) -> None:
        """Store (or replace) ``os_user``'s entry, keeping every other entry as it was."""
        entries = self.entries()  # refuse a damaged file or key before touching anything
        key = self._read_key() if self.key_path.exists() else None
        new_key = key is None
        if new_key:
            stale = sorted(u for u in entries if u != os_user)
            if stale:
                log.warning("%s is missing: a new key pair is made; the entries of %s cannot be read "
                            "with it and need --reset", self.key_path, ", ".join(stale))
            key = generate_key(self.key_bits)
        public = key.public_key()
        entries[os_user] = StoredEntry(username, encrypt_password(public, password), fingerprint(public))
        self._ensure_folder()
        try:
            if new_key:
                write_private_file(self.key_path, private_key_pem(key, self.passphrase))
            write_private_file(self.yaml_path, render_document(entries).encode("utf-8"))
        except (OSError, DiskFull) as exc:
            raise CredentialError(f"cannot store credentials in {self.cred_dir}: {_reason(exc)}") from None

    def remove(self, os_user: str) -> bool:
        """Drop ``os_user``'s entry; the key pair too once no entry is left. True if there was one."""
        entries = self.entries()
        existed = entries.pop(os_user, None) is not None
        try:
            if entries:
                if existed:
                    write_private_file(self.yaml_path, render_document(entries).encode("utf-8"))
            else:
                for path in (self.yaml_path, self.key_path):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        except (OSError, DiskFull) as exc:
            raise CredentialError(f"cannot update {self.yaml_path}: {_reason(exc)}") from None
        return existed

    def set_aside(self) -> Path:
        """Move an unreadable credentials.yaml out of the way (kept for inspection) and drop the key.

        Only ``--reset`` does this: it is the user's explicit request to start again.
        """
        try:
            aside = fsutil.set_aside(self.yaml_path, "unreadable")
            with contextlib.suppress(FileNotFoundError):
                self.key_path.unlink()
        except OSError as exc:
            raise CredentialError(f"cannot move {self.yaml_path} aside: {_reason(exc)}") from None
        return aside

    def _read_key(self):
        check_private_mode(self.key_path)
        try:
            pem = self.key_path.read_bytes()
        except OSError as exc:
            raise CredentialError(f"{self.key_path} cannot be read ({_reason(exc)}); {_RESET_HINT}") from None
        return load_private_key(pem, self.passphrase, str(self.key_path), self.key_bits)

    def _ensure_folder(self) -> None:
        try:
            self.cred_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.cred_dir, 0o700)
        except OSError as exc:
            raise CredentialError(f"cannot prepare the credentials folder {self.cred_dir}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


ENV_USERNAME = "CDSE_USERNAME"
ENV_PASSWORD = "CDSE_PASSWORD"
ENV_TOTP = "CDSE_TOTP"
ENV_PASSPHRASE = "CDSE_KEY_PASSPHRASE"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    totp: str | None = field(default=None, repr=False)
    source: str = "prompt"  # "environment" | "credentials.yaml" | "netrc" | "prompt" | "argument" (a library call)

    def __post_init__(self) -> None:

        remember(self.password, self.totp)  # whatever a server quotes back, these are never shown
        shown(self.username)


def current_os_user() -> str:
    """The OS account an entry belongs to; the numeric id where the name cannot be found."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return str(os.getuid()) if hasattr(os, "getuid") else "default"


def open_store(cred_dir: Path) -> KeyStore:
    return KeyStore(Path(cred_dir), passphrase=os.environ.get(ENV_PASSPHRASE) or None)


def obtain_credentials(cred_dir: Path, token_host: str, *, interactive: bool | None = None,
                       os_user: str | None = None) -> Credentials:
    """The credentials for this run, from the first source that has them (see module doc).

    A damaged store is an error (with a hint to ``--reset``), not a reason to fall through to
    the next source: silently asking again would hide the problem and overwrite nothing.
    """
    interactive = _is_interactive(interactive)
    os_user = os_user or current_os_user()
    host = _host_of(token_host)
    totp = os.environ.get(ENV_TOTP) or None

    found = from_environment(totp)
    if found is not None:
        log.info("Using the CDSE credentials of %s from the environment (%s, %s)",
                 found.username, ENV_USERNAME, ENV_PASSWORD)
        return found

    store = open_store(cred_dir)
    log.info("Retrieval of public and private keys")
    stored = store.load(os_user)
    if stored is not None:
        log.info("User is known and id and password are retrieved")
        return Credentials(stored[0], stored[1], totp, "credentials.yaml")

    found = from_netrc(host, totp)
    if found is not None:
        log.info("Using the CDSE credentials of %s from ~/.netrc (machine %s)", found.username, host)
        return found

    if not interactive:
        raise CredentialError(
            f"no CDSE credentials: set {ENV_USERNAME} and {ENV_PASSWORD}, add a ~/.netrc entry for {host}, "
            f"or run once on a terminal to be asked and have them stored in {store.yaml_path}")
    return prompt_and_store(store, os_user, totp)


def from_environment(totp: str | None = None) -> Credentials | None:
    username = os.environ.get(ENV_USERNAME) or ""
    password = os.environ.get(ENV_PASSWORD) or ""
    if username and password:
        return Credentials(username, password, totp, "environment")
    if username or password:
        missing = ENV_PASSWORD if username else ENV_USERNAME
        present = ENV_USERNAME if username else ENV_PASSWORD
        raise CredentialError(f"{present} is set but {missing} is not: set both, or neither")
    return None


def from_netrc(host: str, totp: str | None = None) -> Credentials | None:
    """The ``~/.netrc`` login of ``machine host``, the identity host only.

    A ``default`` entry is some other service's login: it is never sent to CDSE (and the HTTP
    session never reads ``.netrc`` itself, see http.py). A broken or too permissive file is
    worth a warning, not a failed run: the next source (the prompt) still works.
    """

    path = Path(os.path.expanduser("~")) / ".netrc"
    if not path.is_file():
        return None
    try:
        entries = netrc.netrc().hosts  # the default file, with its permission check
    except (netrc.NetrcParseError, OSError, UnicodeDecodeError) as exc:
        log.warning("Ignoring %s: %s", path, getattr(exc, "msg", None) or exc)
        return None
    entry = entries.get(host) if host != "default" else None
    if not entry:
        return None
    login, _account, password = entry
    if not login or not password:
        log.warning("Ignoring the entry for %s in %s: it lacks a login or a password", host, path)
        return None
    return Credentials(login, password, totp, "netrc")


def prompt_and_store(store: KeyStore, os_user: str, totp: str | None = None) -> Credentials:
    """Ask for user name and password on the terminal, store them, and log it as the guide shows."""
    store.check()  # a bad key or file fails before the user types anything
    username = ask_username()
    password = ask_password()
    store.save(os_user, username, password)
    log.info("Password has been stored in %s for username %s", store.yaml_path.name, username)
    return Credentials(username, password, totp, "prompt")


def reset_credentials(cred_dir: Path, *, assume_yes: bool, interactive: bool | None = None,
                      os_user: str | None = None) -> int:
    """``--reset``: forget this OS user's stored credentials, then (on a terminal) ask anew.

    Other OS users' entries stay; the key pair goes once nobody's entry needs it. Returns the
    exit status: 0 done, 2 refused (no confirmation).
    """
    interactive = _is_interactive(interactive)
    os_user = os_user or current_os_user()
    store = open_store(cred_dir)
    if not assume_yes:
        if not interactive:
            log.error("--reset needs a confirmation: run it on a terminal, or add --yes")
            return EXIT_USAGE
        if not confirm(f"Delete the CDSE credentials stored for {os_user} in {store.yaml_path}?"):
            log.info("Reset cancelled: nothing was deleted")
            return EXIT_USAGE
    try:
        store.entries()
    except CredentialError:
        # Starting again is what --reset is for; the unreadable file is kept aside, not deleted.
        aside = store.set_aside()
        log.warning("%s was unreadable: moved to %s and the key pair deleted", store.yaml_path, aside.name)
        removed = True
    else:
        removed = store.remove(os_user)
    if removed:
        log.info("Credentials of %s removed from %s", os_user, store.yaml_path)
    else:
        log.info("No credentials stored for %s in %s", os_user, store.yaml_path)
    if interactive:
        log.info("Retrieval of public and private keys")
        prompt_and_store(store, os_user)
    return EXIT_OK


def _is_interactive(interactive: bool | None) -> bool:
    if interactive is not None:
        return interactive
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _host_of(token_host: str) -> str:
    """The identity host, whether given as a host name or as the token URL itself."""
    if "://" in token_host:
        return urlsplit(token_host).hostname or token_host
    return token_host
