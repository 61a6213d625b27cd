"""requirements.txt, pyproject.toml and environment.yml list the same packages at the same versions."""

import re
import tomllib

import yaml


def pins(lines):
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*[=]=?\s*([0-9][^\s,;]*)", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_three_package_lists_agree(root):
    requirements = pins((root / "requirements.txt").read_text().splitlines())
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    project = pins(pyproject["project"]["dependencies"])
    env = yaml.safe_load((root / "environment.yml").read_text())
    conda = pins(d for d in env["dependencies"] if isinstance(d, str))
    python = conda.pop("python")
    assert requirements == project == conda
    assert python == "3.12"
    assert {"requests", "cryptography", "pyyaml", "lxml", "shapely", "fastkml"} <= set(requirements)


def test_dev_extra_matches_requirements_dev(root):
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    dev = pins(pyproject["project"]["optional-dependencies"]["dev"])
    listed = pins((root / "requirements-dev.txt").read_text().splitlines())
    assert dev == listed


def test_ci_runs_make_test(root):
    assert "make test" in (root / ".ci" / "run").read_text()
