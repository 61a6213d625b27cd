"""Where the CDSE user name and password come from, first found wins:

1. ``CDSE_USERNAME`` / ``CDSE_PASSWORD`` in the environment (scripts, CI);
2. the current OS user's entry in ``credentials/credentials.yaml`` (see keystore.py);
3. a ``~/.netrc`` entry for the identity host (the host of the token URL);
4. a prompt, only on a terminal, whose answer is then stored (the guide's "asked once").

``CDSE_TOTP`` adds a two-factor code to whichever source is used. The log names the source
and the user name, never the password.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cdse_dem import prompt
from cdse_dem.errors import EXIT_OK, EXIT_USAGE, CredentialError
from cdse_dem.keystore import KeyStore

log = logging.getLogger(__name__)

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
        from cdse_dem.redact import remember, shown

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
    import netrc

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
    username = prompt.ask_username()
    password = prompt.ask_password()
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
        if not prompt.confirm(f"Delete the CDSE credentials stored for {os_user} in {store.yaml_path}?"):
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
