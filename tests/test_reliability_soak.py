"""A soak: 66 geocells through a network that keeps failing, with a token that keeps expiring.

35 adjacent tiles of zone 37U (south-western Russia, 49°N–56°N, 36°E–42°E, all land: 66 GLO-90
geocells with a product), small products at 30 kB/s per connection, so the run lasts many
lifetimes of a 3 s access token. About 15 % of the download requests fail at random (seeded):
dropped connections, 5xx bursts, corrupted bodies; on top of that, 429 storms. Every geocell
must end whole and verified, the JSON must name exactly the files on disk, the log must show
every retry, the account must never have more than 4 downloads at once, and one login must do.
"""

import json
import re

from simulator import Faults
from tests.helpers import check_consistent, cli_env, max_concurrent, run_cli

TILES = [f"37U{column}{row}" for row in "PQRSTUV" for column in "CDEFG"]
GEOCELLS = 66
FAULTS = Faults(seed=13, drop_rate=0.05, corrupt_rate=0.04, error_rate=0.03, error_burst=2, storm_rate=0.04,
                retry_after=0.5)
RETRY_LINE = re.compile(r"\| WARNING Download of .+; retrying in [\d.]+ s \(try \d+ of \d+\)$", re.MULTILINE)


def test_soak_every_geocell_ends_whole_and_verified(make_sim, tool_home, tmp_path, shared_data):
    # shared_data: the 66 geocells of 37U exist only in the real cell lists (skips without them)
    sim = make_sim(access_lifetime=3, bandwidth=30_000, faults=FAULTS)
    reference = make_sim()  # same products, no faults, no cap: where the expected bytes come from
    out, summary_path, log_file = tmp_path / "dem", tmp_path / "summary.json", tmp_path / "soak.log"
    args = [arg for tile in TILES for arg in ("--t", tile)]
    # whole zips: corrupted bodies are among the faults, and only a zip has a checksum to catch them
    result = run_cli(*args, "--o", out, "--summary-json", summary_path, "--log-file", log_file, "--transfer", "zip",
                     env=cli_env(sim), timeout=300)
    records = sim.request_log()
    assert result.returncode == 0, result.output[-5000:]
    assert "Traceback" not in result.output

    # the faults really struck: about 15 % of the download requests failed, and storms came
    downloads = [r for r in records if r.server == "download"]
    failed = [r for r in downloads if r.status != 200 or "drop" in (r.fault or "") or "corrupt" in (r.fault or "")]
    faults = {r.fault for r in downloads}
    assert {"drop", "corrupt", "storm429"} <= faults and faults & {"error500", "error503"}
    broken = [r for r in failed if r.fault != "storm429"]
    print(f"{len(downloads)} download requests: {len(broken)} failed, {len(failed) - len(broken)} storm 429s")
    assert 0.10 <= len(broken) / len(downloads) <= 0.25, (len(broken), len(downloads))

    # ... and so did the token: it expired several times during the run, refreshed each time
    refreshes = [r for r in records if r.grant_type == "refresh_token"]
    assert downloads[-1].finished - downloads[0].started > 3 * 3
    assert len(refreshes) >= 3
    assert len([r for r in records if r.grant_type == "password"]) == 1  # one login
    assert max_concurrent(downloads) <= 4

    # every retry is in the log (stderr and --log-file alike): one line per failed request
    expired = [r for r in downloads if r.status == 401]
    assert len(RETRY_LINE.findall(result.stderr)) == len(failed) - len(expired)
    assert RETRY_LINE.findall(log_file.read_text()) == RETRY_LINE.findall(result.stderr)

    # every geocell whole, byte for byte, and the JSON is the disk
    summary = json.loads(summary_path.read_text())
    assert summary["totals"]["geocells"] == GEOCELLS
    assert summary["totals"]["downloaded"] == GEOCELLS and summary["totals"]["failed"] == 0
    record = check_consistent(out, reference)
    assert len(record) == GEOCELLS
    assert record == {c["name"] + "_DEM.tif": c["product_id"] for t in summary["tiles"] for c in t["geocells"]}
