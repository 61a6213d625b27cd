"""The credential prompt on a real pseudo-terminal, as a user meets it (pexpect)."""

import io
import os
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).resolve().parent.parent

OBTAIN = """
import logging, sys
from pathlib import Path
from cdse_dem.credentials import obtain_credentials
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
creds = obtain_credentials(Path(sys.argv[1]), "identity.example.test")
print("SOURCE", creds.source, creds.username, len(creds.password))
"""

RESET = """
import logging, sys
from pathlib import Path
from cdse_dem.credentials import reset_credentials
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
print("STATUS", reset_credentials(Path(sys.argv[1]), assume_yes=False))
"""


def spawn(script, cred_dir, home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSE_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), TERM="dumb")
    transcript = io.StringIO()
    child = pexpect.spawn(sys.executable, ["-c", script, str(cred_dir)], cwd=str(ROOT), env=env,
                          encoding="utf-8", timeout=30)
    child.logfile_read = transcript
    return child, transcript


def finish(child):
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


@pytest.fixture
def dirs(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return tmp_path / "credentials", home


def test_prompt_reasks_stores_and_is_not_asked_again(dirs):
    cred_dir, home = dirs
    child, transcript = spawn(OBTAIN, cred_dir, home)
    child.expect_exact("Retrieval of public and private keys")
    child.expect_exact("Enter your username: ")
    child.sendline("not-an-address")
    child.expect_exact("contains '@'")
    child.expect_exact("Enter your username: ")
    child.sendline("me@example.com")
    child.expect_exact("Enter your password: ")
    child.sendline("Typo-Secret-1")
    child.expect_exact("Re-enter your password: ")
    child.sendline("Typo-Secret-2")
    child.expect_exact("do not match")
    child.expect_exact("Enter your password: ")
    child.sendline("Good-Secret-42")
    child.expect_exact("Re-enter your password: ")
    child.sendline("Good-Secret-42")
    child.expect_exact("Password has been stored in credentials.yaml for username me@example.com")
    child.expect_exact("SOURCE prompt me@example.com 14")
    assert finish(child) == 0
    seen = transcript.getvalue()
    assert "Secret" not in seen  # never echoed, never logged
    assert (cred_dir / "credentials.yaml").is_file()
    assert "Good-Secret-42" not in (cred_dir / "credentials.yaml").read_text()

    child, transcript = spawn(OBTAIN, cred_dir, home)
    child.expect_exact("User is known and id and password are retrieved")
    child.expect_exact("SOURCE credentials.yaml me@example.com 14")
    assert finish(child) == 0
    assert "Enter your" not in transcript.getvalue()


def test_reset_confirms_then_asks_for_new_credentials(dirs):
    cred_dir, home = dirs
    child, _ = spawn(OBTAIN, cred_dir, home)
    child.expect_exact("Enter your username: ")
    child.sendline("old@example.com")
    for _ in range(2):
        child.expect_exact("password: ")
        child.sendline("Old-Secret")
    child.expect_exact("SOURCE prompt old@example.com")
    assert finish(child) == 0

    child, _ = spawn(RESET, cred_dir, home)
    child.expect_exact("[y/N] ")
    child.sendline("n")
    child.expect_exact("STATUS 2")
    assert finish(child) == 0
    assert "old@example.com" in (cred_dir / "credentials.yaml").read_text()

    child, transcript = spawn(RESET, cred_dir, home)
    child.expect_exact("[y/N] ")
    child.sendline("y")
    child.expect_exact("Enter your username: ")
    child.sendline("new@example.com")
    for _ in range(2):
        child.expect_exact("password: ")
        child.sendline("New-Secret")
    child.expect_exact("Password has been stored in credentials.yaml for username new@example.com")
    child.expect_exact("STATUS 0")
    assert finish(child) == 0
    stored = (cred_dir / "credentials.yaml").read_text()
    assert "new@example.com" in stored and "old@example.com" not in stored
    assert "Secret" not in transcript.getvalue()
