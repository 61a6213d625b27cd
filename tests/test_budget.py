"""The time budget end to end: the refresh window stops new downloads (exit 3), a re-run resumes;
``--max-minutes 0`` logs in again instead."""

import json

from tests.helpers import cli_env, downloads, logins, run_cli


def test_window_closing_exits_3_and_reruns_resume_cleanly(make_sim, tool_home, tmp_path):
    sim = make_sim(access_lifetime=2, refresh_lifetime=6, bandwidth=10_000)  # ~2 s per small product
    out, summary = tmp_path / "dem", tmp_path / "s.json"
    have = 0
    statuses = []
    for _ in range(5):
        result = run_cli("--t", "32UMA", "--o", out, "--workers", "1", "--summary-json", summary,
                         env=cli_env(sim))
        statuses.append(result.returncode)
        assert "Traceback" not in result.output
        record = json.loads((out / "dict_filename_dem_id.json").read_text())
        assert sorted(record) == sorted(p.name for p in out.glob("*_DEM.tif"))
        assert len(record) > have, "a run made no progress"
        have = len(record)
        data = json.loads(summary.read_text())
        assert data["exit_status"] == result.returncode
        if result.returncode == 0:
            break
        assert result.returncode == 3, result.output
        assert "run again to resume" in result.stderr
        left = [c for t in data["tiles"] for c in t["geocells"] if c["status"] == "planned"]
        assert left and "Left for the next run" in result.stdout
    assert statuses[0] == 3 and statuses[-1] == 0
    assert have == 6
    assert len(downloads(sim)) == 6  # nothing fetched twice across the runs
    assert len(logins(sim)) == len(statuses)  # one login per run
    # and one logout per run (past the window, CDSE has ended the session itself: 400, not an error)
    assert len([r for r in sim.request_log() if r.path.endswith("/logout")]) == len(statuses)


def test_max_minutes_0_logs_in_again_when_the_window_closes(make_sim, tool_home, tmp_path):
    sim = make_sim(access_lifetime=2, refresh_lifetime=6, bandwidth=10_000)
    out = tmp_path / "dem"
    result = run_cli("--t", "32UMA", "--o", out, "--workers", "1", "--max-minutes", "0", env=cli_env(sim))
    assert result.returncode == 0, result.output
    assert len(list(out.glob("*_DEM.tif"))) == 6
    assert len(logins(sim)) >= 2
