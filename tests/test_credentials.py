"""Where credentials come from (env → stored → ~/.netrc → prompt), and --reset."""

import logging
import os

import pytest
import yaml

from cdse_dem import credentials
from cdse_dem.credentials import Credentials, KeyStore, obtain_credentials, reset_credentials
from cdse_dem.errors import CredentialError

HOST = "identity.example.test"
TOKEN_URL = f"https://{HOST}/auth/realms/CDSE/protocol/openid-connect/token"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A fake home folder, so that ~/.netrc is ours (and the real one is never read)."""
    folder = tmp_path / "userhome"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


@pytest.fixture
def cred_dir(tmp_path):
    return tmp_path / "credentials"


def write_netrc(home, text, mode=0o600):
    path = home / ".netrc"
    path.write_text(text)
    os.chmod(path, mode)
    return path


class Terminal:
    """Scripted answers for the prompt functions, recording what was asked."""

    def __init__(self, monkeypatch, lines=(), secrets=()):
        self.lines, self.secrets, self.asked, self.said = list(lines), list(secrets), [], []
        monkeypatch.setattr(credentials, "read_line", self._line)
        monkeypatch.setattr(credentials, "read_secret", self._secret)
        monkeypatch.setattr(credentials, "tell", self.said.append)

    def _line(self, text):
        self.asked.append(text)
        return self.lines.pop(0)

    def _secret(self, text):
        self.asked.append(text)
        return self.secrets.pop(0)


def test_environment_wins_over_stored_and_netrc(home, cred_dir, monkeypatch, caplog):
    KeyStore(cred_dir).save("alice", "stored@example.com", "stored-pass")
    write_netrc(home, f"machine {HOST} login netrc@example.com password netrc-pass\n")
    monkeypatch.setenv("CDSE_USERNAME", "env@example.com")
    monkeypatch.setenv("CDSE_PASSWORD", "env-pass-123")
    monkeypatch.setenv("CDSE_TOTP", "123456")
    caplog.set_level(logging.DEBUG)

    creds = obtain_credentials(cred_dir, HOST, interactive=False, os_user="alice")

    assert (creds.username, creds.password, creds.totp, creds.source) == \
        ("env@example.com", "env-pass-123", "123456", "environment")
    assert "env@example.com" in caplog.text and "environment" in caplog.text
    assert "env-pass-123" not in caplog.text and "123456" not in caplog.text


def test_half_of_the_environment_is_an_error(cred_dir, monkeypatch):
    monkeypatch.setenv("CDSE_USERNAME", "env@example.com")
    with pytest.raises(CredentialError, match="CDSE_USERNAME is set but CDSE_PASSWORD is not"):
        obtain_credentials(cred_dir, HOST, interactive=False, os_user="alice")


def test_stored_entry_wins_over_netrc_and_logs_like_the_guide(home, cred_dir, caplog):
    KeyStore(cred_dir).save("alice", "stored@example.com", "stored-pass")
    write_netrc(home, f"machine {HOST} login netrc@example.com password netrc-pass\n")
    caplog.set_level(logging.DEBUG)

    creds = obtain_credentials(cred_dir, TOKEN_URL, interactive=False, os_user="alice")

    assert (creds.username, creds.password, creds.source) == ("stored@example.com", "stored-pass",
                                                              "credentials.yaml")
    messages = [r.getMessage() for r in caplog.records]
    assert "Retrieval of public and private keys" in messages
    assert "User is known and id and password are retrieved" in messages
    assert "stored-pass" not in caplog.text


def test_netrc_for_the_identity_host_is_used_when_nothing_is_stored(home, cred_dir, caplog):
    KeyStore(cred_dir).save("bob", "bob@example.com", "bobs")  # another OS user's entry
    write_netrc(home, "machine other.example.test login x@y.z password nope\n"
                      f"machine {HOST} login netrc@example.com password netrc-pass\n")
    caplog.set_level(logging.DEBUG)

    creds = obtain_credentials(cred_dir, TOKEN_URL, interactive=False, os_user="alice")

    assert (creds.username, creds.password, creds.source) == ("netrc@example.com", "netrc-pass", "netrc")
    assert "netrc" in caplog.text and "netrc-pass" not in caplog.text


def test_netrc_entry_for_another_host_is_not_used(home, cred_dir):
    write_netrc(home, "machine other.example.test login x@y.z password nope\n")
    with pytest.raises(CredentialError, match="no CDSE credentials"):
        obtain_credentials(cred_dir, HOST, interactive=False, os_user="alice")


@pytest.mark.parametrize(("text", "mode"), [
    ("machine identity.example.test login\n", 0o600),
    (f"machine {HOST} login a@b.c password p\n", 0o644),  # readable by others: netrc refuses it
], ids=["syntax-error", "too-permissive"])
def test_a_broken_netrc_is_a_warning_not_a_crash(home, cred_dir, caplog, text, mode):
    if mode == 0o644 and os.name != "posix":
        pytest.skip("netrc checks permissions on POSIX only")
    write_netrc(home, text, mode)
    with pytest.raises(CredentialError, match="no CDSE credentials"):
        obtain_credentials(cred_dir, HOST, interactive=False, os_user="alice")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and ".netrc" in warnings[0].getMessage()


def test_without_terminal_and_nothing_stored_one_line_says_how(home, cred_dir):
    with pytest.raises(CredentialError) as info:
        obtain_credentials(cred_dir, HOST, interactive=False, os_user="alice")
    message = str(info.value)
    assert "\n" not in message
    assert "CDSE_USERNAME" in message and "CDSE_PASSWORD" in message and "terminal" in message
    assert not cred_dir.exists()  # nothing created


def test_damaged_store_is_an_error_not_a_fall_through(home, cred_dir):
    cred_dir.mkdir()
    (cred_dir / "credentials.yaml").write_text("entries: [broken\n")
    write_netrc(home, f"machine {HOST} login netrc@example.com password netrc-pass\n")
    with pytest.raises(CredentialError, match="--reset"):
        obtain_credentials(cred_dir, HOST, interactive=True, os_user="alice")


def test_prompt_reasks_then_stores_and_next_run_reuses(home, cred_dir, monkeypatch, caplog):
    term = Terminal(monkeypatch, lines=["no-at-sign", "me@example.com"],
                    secrets=["first", "different", "typed-twice", "typed-twice"])
    caplog.set_level(logging.INFO)

    creds = obtain_credentials(cred_dir, HOST, interactive=True, os_user="alice")

    assert (creds.username, creds.password, creds.source) == ("me@example.com", "typed-twice", "prompt")
    assert term.asked == ["Enter your username: ", "Enter your username: ", "Enter your password: ",
                          "Re-enter your password: ", "Enter your password: ", "Re-enter your password: "]
    assert any("'@'" in s for s in term.said) and any("do not match" in s for s in term.said)
    assert "Password has been stored in credentials.yaml for username me@example.com" in caplog.text
    assert "typed-twice" not in caplog.text

    again = obtain_credentials(cred_dir, HOST, interactive=True, os_user="alice")
    assert (again.username, again.password, again.source) == ("me@example.com", "typed-twice",
                                                              "credentials.yaml")
    assert term.lines == [] and term.secrets == []  # nothing more was asked


def test_passphrase_from_the_environment_protects_the_key(home, cred_dir, monkeypatch):
    monkeypatch.setenv("CDSE_KEY_PASSPHRASE", "pass phrase")
    Terminal(monkeypatch, lines=["me@example.com"], secrets=["pw", "pw"])
    obtain_credentials(cred_dir, HOST, interactive=True, os_user="alice")
    assert b"ENCRYPTED" in (cred_dir / "private_key.pem").read_bytes()

    assert obtain_credentials(cred_dir, HOST, interactive=False, os_user="alice").password == "pw"
    monkeypatch.setenv("CDSE_KEY_PASSPHRASE", "other phrase")
    with pytest.raises(CredentialError, match="CDSE_KEY_PASSPHRASE"):
        obtain_credentials(cred_dir, HOST, interactive=False, os_user="alice")


def test_credentials_repr_hides_secrets():
    text = repr(Credentials("me@example.com", "hunter2", "654321", "environment"))
    assert "me@example.com" in text and "hunter2" not in text and "654321" not in text


def test_reset_keeps_the_other_users_entry(cred_dir):
    store = KeyStore(cred_dir)
    store.save("alice", "alice@example.com", "a-pass")
    store.save("bob", "bob@example.com", "b-pass")

    assert reset_credentials(cred_dir, assume_yes=True, interactive=False, os_user="alice") == 0

    doc = yaml.safe_load((cred_dir / "credentials.yaml").read_text())
    assert list(doc["entries"]) == ["bob"]
    assert KeyStore(cred_dir).load("bob") == ("bob@example.com", "b-pass")

    assert reset_credentials(cred_dir, assume_yes=True, interactive=False, os_user="bob") == 0
    assert sorted(p.name for p in cred_dir.iterdir()) == []  # key pair gone with the last entry


def test_reset_without_terminal_or_yes_is_refused(cred_dir):
    KeyStore(cred_dir).save("alice", "alice@example.com", "a-pass")
    before = (cred_dir / "credentials.yaml").read_bytes()
    assert reset_credentials(cred_dir, assume_yes=False, interactive=False, os_user="alice") == 2
    assert (cred_dir / "credentials.yaml").read_bytes() == before


def test_reset_asks_and_no_keeps_everything(cred_dir, monkeypatch):
    KeyStore(cred_dir).save("alice", "alice@example.com", "a-pass")
    term = Terminal(monkeypatch, lines=[""])
    assert reset_credentials(cred_dir, assume_yes=False, interactive=True, os_user="alice") == 2
    assert "[y/N]" in term.asked[0]
    assert KeyStore(cred_dir).load("alice") == ("alice@example.com", "a-pass")


def test_reset_yes_then_prompts_and_stores_new_credentials(cred_dir, monkeypatch, caplog):
    KeyStore(cred_dir).save("alice", "old@example.com", "old-pass")
    KeyStore(cred_dir).save("bob", "bob@example.com", "b-pass")
    Terminal(monkeypatch, lines=["y", "new@example.com"], secrets=["new-pass", "new-pass"])
    caplog.set_level(logging.INFO)

    assert reset_credentials(cred_dir, assume_yes=False, interactive=True, os_user="alice") == 0

    assert KeyStore(cred_dir).load("alice") == ("new@example.com", "new-pass")
    assert KeyStore(cred_dir).load("bob") == ("bob@example.com", "b-pass")
    assert "Password has been stored in credentials.yaml for username new@example.com" in caplog.text


def test_reset_recovers_from_an_unreadable_file(cred_dir, caplog):
    cred_dir.mkdir()
    damaged = "!!python/object/apply:os.system ['true']\n"
    (cred_dir / "credentials.yaml").write_text(damaged)
    (cred_dir / "credentials.yaml.unreadable-19700101T000000").write_text("an earlier one, kept\n")
    assert reset_credentials(cred_dir, assume_yes=True, interactive=False, os_user="alice") == 0
    assert not (cred_dir / "credentials.yaml").exists()
    asides = sorted(p.name for p in cred_dir.glob("credentials.yaml.unreadable-*"))
    assert len(asides) == 2 and asides[0] == "credentials.yaml.unreadable-19700101T000000"
    assert (cred_dir / asides[1]).read_text() == damaged
    assert (cred_dir / asides[0]).read_text() == "an earlier one, kept\n"
    assert f"was unreadable: moved to {asides[1]} and the key pair deleted" in caplog.text
    with pytest.raises(CredentialError, match="no CDSE credentials"):
        obtain_credentials(cred_dir, HOST, interactive=False, os_user="alice")
