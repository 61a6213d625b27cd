"""``python -m simulator`` as a user or a script runs it: help, the first JSON line, signals."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import requests

from simulator import Faults, SimulatorConfig

ROOT = Path(__file__).resolve().parent.parent


def run_help():
    return subprocess.run([sys.executable, "-m", "simulator", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)


def test_help_documents_every_knob():
    result = run_help()
    assert result.returncode == 0
    text = result.stdout
    for f in fields(SimulatorConfig):
        if f.name == "clock":  # a fake clock shared with a test's client: in-process only
            continue
        special = {"users": "--user", "faults": "--drop-rate", "nodes": "--no-nodes"}
        flag = special.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in text, flag
    for f in fields(Faults):
        flag = "--fault-seed" if f.name == "seed" else "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert "demo@example.com" in text


@pytest.fixture
def server(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--user", "a@example.com:pa:noccm", "--access-lifetime", "7",
         "--cache-dir", str(tmp_path / "cache"), "--storm-first", "1", "--retry-after", "4"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_first_line_is_the_urls_and_the_flags_apply(server):
    urls = json.loads(server.stdout.readline())
    assert set(urls) == {"token_url", "catalogue_url", "download_url"}
    assert urls["token_url"].endswith("/auth/realms/CDSE/protocol/openid-connect/token")
    form = {"client_id": "cdse-public", "grant_type": "password"}
    demo = requests.post(urls["token_url"], data={**form, "username": "demo@example.com", "password": "demo"},
                         timeout=10)
    assert demo.status_code == 401  # --user replaces the default account
    reply = requests.post(urls["token_url"], data={**form, "username": "a@example.com", "password": "pa"}, timeout=10)
    assert reply.json()["expires_in"] == 7
    token = reply.json()["access_token"]
    def first_of(collection):
        query = (f"Collection/Name eq '{collection}' and "
                 "OData.CSC.Intersects(area=geography'SRID=4326;POINT(7.5 50.5)')")
        found = requests.get(f"{urls['catalogue_url']}/Products", params={"$filter": query, "$top": "1"},
                             timeout=30).json()["value"][0]
        return f"{urls['download_url']}/Products({found['Id']})/$value"

    headers = {"Authorization": f"Bearer {token}"}
    forbidden = requests.get(first_of("CCM"), headers=headers, timeout=30)
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "DAT-ZIP-608"  # :noccm
    stormed = requests.get(first_of("COP-DEM"), headers=headers, timeout=30)
    assert stormed.status_code == 429 and stormed.headers["Retry-After"] == "4"  # --storm-first 1
    assert requests.get(first_of("COP-DEM"), headers=headers, timeout=30).status_code == 200


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signals(server, signum):
    json.loads(server.stdout.readline())
    server.send_signal(signum)
    assert server.wait(timeout=10) == 0
    assert "Traceback" not in server.stderr.read()


def test_bad_user_flag_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "simulator", "--user", "nopassword"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "NAME:PASSWORD" in result.stderr
