"""requirements.txt, pyproject.toml and environment.yml list the same packages at the same versions."""

import re
import tomllib

import yaml


def pins(lines, python="3.12"):
    """{package: version} for ``python``: lines with a python_version marker for another version are skipped."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        spec, _, marker = line.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*[=]=?\s*([0-9][^\s,;]*)", spec.strip())
        if not match:
            continue
        condition = re.fullmatch(r'\s*python_version\s*(>=|<)\s*"([0-9.]+)"\s*', marker) if marker else None
        if marker and not condition:
            raise AssertionError(f"unexpected marker in {line!r}")
        if condition:
            wanted = tuple(map(int, condition.group(2).split(".")))
            have = tuple(map(int, python.split(".")))
            if (have >= wanted) != (condition.group(1) == ">="):
                continue
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


def test_python_311_gets_a_complete_set_too(root):
    for_312 = pins((root / "requirements.txt").read_text().splitlines())
    for_311 = pins((root / "requirements.txt").read_text().splitlines(), python="3.11")
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert set(for_311) == set(for_312)
    assert for_311 == pins(pyproject["project"]["dependencies"], python="3.11")


def test_dev_extra_matches_requirements_dev(root):
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    dev = pins(pyproject["project"]["optional-dependencies"]["dev"])
    listed = pins((root / "requirements-dev.txt").read_text().splitlines())
    assert dev == listed


def test_ci_runs_make_test(root):
    assert "make test" in (root / ".ci" / "run").read_text()


def test_the_schema_beside_the_configuration_is_the_one_the_tool_uses(root):
    shipped = (root / "cdse_dem" / "data" / "configuration.xsd").read_bytes()
    assert (root / "configuration" / "configuration.xsd").read_bytes() == shipped
