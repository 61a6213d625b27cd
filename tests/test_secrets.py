"""No secret (password, access or refresh token) reaches any output of a whole run."""

from simulator import User
from tests.helpers import run_cli

PASSWORD = "Sx9!unusual-Passw0rd-7Q"


def test_password_and_tokens_appear_in_no_output(make_sim, tool_home, tmp_path):
    sim = make_sim(users=[User("secret.user@example.com", PASSWORD)], access_lifetime=2, bandwidth=6_000)
    # slow enough that the run outlives its 2 s token whichever way it fetches (small node files are a few kB)
    issued: list[str] = []
    identity = sim.services.identity
    original = identity._issue

    def spy(*args, **kwargs):  # record every token the identity service hands out
        reply = original(*args, **kwargs)
        issued.extend([reply["access_token"], reply["refresh_token"]])
        return reply

    identity._issue = spy
    out, log_file, summary = tmp_path / "dem", tmp_path / "run.log", tmp_path / "summary.json"
    result = run_cli("--t", "32UMA", "--o", out, "-v", "--log-file", log_file, "--summary-json", summary,
                     env=dict(sim.env, CDSE_USERNAME="secret.user@example.com", CDSE_PASSWORD=PASSWORD))
    assert result.returncode == 0, result.output
    assert len(issued) >= 4, "the run was meant to refresh its token at least once"
    assert "Token refreshed" in log_file.read_text() or "refresh" in log_file.read_text().lower()

    texts = {"stdout": result.stdout, "stderr": result.stderr}
    for folder in (tmp_path, tool_home):
        for path in folder.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_bytes().decode("latin-1")
    secrets = [PASSWORD, *issued]
    # the shortest token fragment that would still give a token away
    fragments = [PASSWORD] + [t.split(".")[-1][:24] for t in issued]
    for where, text in texts.items():
        for secret, fragment in zip(secrets, fragments, strict=True):
            assert secret not in text and fragment not in text, f"a secret leaked into {where}"
