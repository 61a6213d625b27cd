"""Stored credentials: what lands on disk, who can read it, and how a damaged store is refused."""

import base64
import os
import stat

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from cdse_dem.credentials import KeyStore
from cdse_dem.errors import CredentialError

PASSWORD = "s3cret-Pa55word!"


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def cred_dir(tmp_path):
    folder = tmp_path / "credentials"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # as git checks it out: the store must tighten it
    return folder


def test_round_trip_with_private_file_modes(cred_dir):
    KeyStore(cred_dir).save("alice", "alice@example.com", PASSWORD)

    assert KeyStore(cred_dir).load("alice") == ("alice@example.com", PASSWORD)
    assert sorted(p.name for p in cred_dir.iterdir()) == ["credentials.yaml", "private_key.pem"]  # no temp left
    assert mode(cred_dir) == 0o700
    assert mode(cred_dir / "credentials.yaml") == 0o600
    assert mode(cred_dir / "private_key.pem") == 0o600


def test_yaml_holds_ciphertext_not_the_password(cred_dir):
    KeyStore(cred_dir).save("alice", "alice@example.com", PASSWORD)
    text = (cred_dir / "credentials.yaml").read_text()

    assert PASSWORD not in text
    assert base64.b64encode(PASSWORD.encode()).decode() not in text
    doc = yaml.safe_load(text)
    entry = doc["entries"]["alice"]
    assert entry["username"] == "alice@example.com"
    assert entry["password"] != PASSWORD
    assert len(base64.b64decode(entry["password"])) == 384  # one 3072-bit RSA block
    assert entry["key_fingerprint"].startswith("sha256:")


def test_key_is_rsa_3072_and_padding_is_oaep_sha256(cred_dir):
    KeyStore(cred_dir).save("alice", "alice@example.com", PASSWORD)
    key = serialization.load_pem_private_key((cred_dir / "private_key.pem").read_bytes(), password=None)
    ciphertext = base64.b64decode(yaml.safe_load((cred_dir / "credentials.yaml").read_text())
                                  ["entries"]["alice"]["password"])

    assert key.key_size >= 3072
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert key.decrypt(ciphertext, oaep) == PASSWORD.encode()
    for wrong in (padding.PKCS1v15(),
                  padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)):
        try:
            recovered = key.decrypt(ciphertext, wrong)
        except ValueError:
            recovered = None
        assert recovered != PASSWORD.encode()


def test_fingerprint_is_sha256_of_the_public_key_der(cred_dir):
    import hashlib

    KeyStore(cred_dir).save("alice", "alice@example.com", PASSWORD)
    key = serialization.load_pem_private_key((cred_dir / "private_key.pem").read_bytes(), password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    stored = yaml.safe_load((cred_dir / "credentials.yaml").read_text())["entries"]["alice"]
    assert stored["key_fingerprint"] == "sha256:" + hashlib.sha256(der).hexdigest()


def test_two_os_users_share_one_file_without_duplicates(cred_dir):
    store = KeyStore(cred_dir)
    store.save("alice", "alice@example.com", "first")
    store.save("bob", "bob@example.com", "bobs-password")
    store.save("alice", "alice@example.org", "second")  # replaces, never appends

    doc = yaml.safe_load((cred_dir / "credentials.yaml").read_text())
    assert sorted(doc["entries"]) == ["alice", "bob"]
    assert (cred_dir / "credentials.yaml").read_text().count("alice@example") == 1
    assert store.load("alice") == ("alice@example.org", "second")
    assert store.load("bob") == ("bob@example.com", "bobs-password")
    assert store.load("carol") is None


def test_remove_keeps_other_users_and_drops_the_key_with_the_last_entry(cred_dir):
    store = KeyStore(cred_dir)
    store.save("alice", "alice@example.com", "a-pass")
    store.save("bob", "bob@example.com", "b-pass")

    assert store.remove("alice") is True
    assert store.load("alice") is None
    assert store.load("bob") == ("bob@example.com", "b-pass")
    assert (cred_dir / "private_key.pem").exists()

    assert store.remove("bob") is True
    assert not (cred_dir / "credentials.yaml").exists()
    assert not (cred_dir / "private_key.pem").exists()
    assert store.remove("bob") is False


@pytest.mark.parametrize("content", [
    "entries: [unclosed\n",
    "just a string\n",
    "version: 1\nentries:\n  alice: 42\n",
    "version: 1\nentries:\n  alice: {username: a@b.c, password: xx}\n",
    "version: 7\nentries: {}\n",
], ids=["bad-yaml", "scalar", "entry-not-mapping", "entry-missing-field", "future-version"])
def test_damaged_yaml_is_refused_with_reset_hint_and_nothing_touched(cred_dir, content):
    (cred_dir / "credentials.yaml").write_text(content)
    before = snapshot(cred_dir)
    store = KeyStore(cred_dir)

    with pytest.raises(CredentialError) as info:
        store.load("alice")
    message = str(info.value)
    assert "--reset" in message and "credentials.yaml" in message and "\n" not in message
    with pytest.raises(CredentialError):
        store.save("alice", "alice@example.com", PASSWORD)
    assert snapshot(cred_dir) == before  # no key made, file unchanged


def test_yaml_with_a_python_tag_is_refused_and_not_executed(cred_dir, tmp_path):
    marker = tmp_path / "pwned"
    (cred_dir / "credentials.yaml").write_text(
        "version: 1\nentries:\n"
        f"  alice: !!python/object/apply:os.system [\"touch {marker}\"]\n")

    with pytest.raises(CredentialError, match=r"--reset"):
        KeyStore(cred_dir).load("alice")
    assert not marker.exists()


def test_passphrase_encrypts_the_private_key(cred_dir):
    KeyStore(cred_dir, passphrase="correct horse").save("alice", "alice@example.com", PASSWORD)
    pem = (cred_dir / "private_key.pem").read_bytes()
    before = snapshot(cred_dir)

    assert b"ENCRYPTED" in pem
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(CredentialError, match=r"wrong CDSE_KEY_PASSPHRASE.*--reset"):
        KeyStore(cred_dir, passphrase="wrong horse").load("alice")
    with pytest.raises(CredentialError, match=r"encrypted: set CDSE_KEY_PASSPHRASE"):
        KeyStore(cred_dir).load("alice")
    with pytest.raises(CredentialError):
        KeyStore(cred_dir, passphrase="wrong horse").save("bob", "bob@example.com", "x")
    assert snapshot(cred_dir) == before
    assert KeyStore(cred_dir, passphrase="correct horse").load("alice") == ("alice@example.com", PASSWORD)


def test_a_key_that_no_longer_matches_is_named(cred_dir, tmp_path):
    KeyStore(cred_dir).save("alice", "alice@example.com", PASSWORD)
    other = tmp_path / "other"
    KeyStore(other).save("alice", "alice@example.com", PASSWORD)
    (cred_dir / "private_key.pem").write_bytes((other / "private_key.pem").read_bytes())

    with pytest.raises(CredentialError, match=r"encrypted with another key .*--reset"):
        KeyStore(cred_dir).load("alice")


def test_missing_key_and_tampered_ciphertext_are_refused(cred_dir):
    store = KeyStore(cred_dir)
    store.save("alice", "alice@example.com", PASSWORD)
    path = cred_dir / "credentials.yaml"
    doc = yaml.safe_load(path.read_text())
    raw = bytearray(base64.b64decode(doc["entries"]["alice"]["password"]))
    raw[10] ^= 0xFF
    doc["entries"]["alice"]["password"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(yaml.safe_dump(doc))

    with pytest.raises(CredentialError, match=r"cannot be decrypted; .*--reset"):
        store.load("alice")
    (cred_dir / "private_key.pem").unlink()
    with pytest.raises(CredentialError, match=r"private_key.pem is missing.*--reset"):
        store.load("alice")


def test_an_undersized_key_is_refused(cred_dir):
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cred_dir.joinpath("private_key.pem").write_bytes(small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(CredentialError, match=r"3072 bits"):
        KeyStore(cred_dir).save("alice", "alice@example.com", PASSWORD)
    assert not (cred_dir / "credentials.yaml").exists()


def test_a_password_too_long_for_one_rsa_block_is_refused_before_any_write(cred_dir):
    with pytest.raises(CredentialError, match=r"too long to be stored \(400 bytes, at most 318\)"):
        KeyStore(cred_dir).save("alice", "alice@example.com", "x" * 400)
    assert list(cred_dir.iterdir()) == []
