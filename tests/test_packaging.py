"""Packaging for a shared environment: ranges in pyproject.toml, exact pins for `make`, the tool alone.

pyproject.toml declares what the code needs as ranges (a user installs the tool beside other
packages); requirements.txt, requirements-dev.txt and environment.yml pin the versions `make`
and conda install, which must lie within those ranges. The wheel holds the tool, not the simulator.
"""

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYTHONS = ("3.11", "3.12")  # every version requirements.txt pins for


def requirement_lines(path) -> list[Requirement]:
    """The requirements of a requirements file (comments, blank lines and ``-r`` includes skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def for_python(requirements, python: str) -> dict[str, Requirement]:
    """{canonical name: requirement} of those whose marker holds on ``python`` (and outside any extra)."""
    found = {}
    for req in requirements:
        if req.marker is None or req.marker.evaluate({"python_version": python, "extra": ""}):
            name = canonicalize_name(req.name)
            assert name not in found, f"{req.name} listed twice for Python {python}"
            found[name] = req
    return found


def pinned(requirements, python: str) -> dict[str, str]:
    """{canonical name: version} of ``==`` pins; anything else in a pin file is an error."""
    pins = {}
    for name, req in for_python(requirements, python).items():
        (spec,) = req.specifier
        assert spec.operator == "==", f"{req} is not an exact pin"
        pins[name] = spec.version
    return pins


def project(root) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def extras(root) -> list[str]:
    """The optional extras' requirements (``processors``: rasterio), which `make` installs as well."""
    return [r for group in project(root).get("optional-dependencies", {}).values() for r in group]


def dev_group(root) -> list[str]:
    return tomllib.loads((root / "pyproject.toml").read_text())["dependency-groups"]["dev"]


def test_the_pinned_versions_lie_within_the_declared_ranges(root):
    ranges = [Requirement(r) for r in project(root)["dependencies"] + extras(root)]
    dev_ranges = [Requirement(r) for r in dev_group(root)]
    runtime_pins = requirement_lines(root / "requirements.txt")
    dev_pins = requirement_lines(root / "requirements-dev.txt")
    for python in PYTHONS:
        for declared, pins in ((ranges, runtime_pins), (dev_ranges, dev_pins)):
            wanted, versions = for_python(declared, python), pinned(pins, python)
            assert set(versions) == set(wanted), python
            for name, version in versions.items():
                assert wanted[name].specifier.contains(version), f"{name}=={version} is outside {wanted[name]}"


def test_the_declared_dependencies_are_ranges_not_pins(root):
    for text in project(root)["dependencies"] + extras(root) + dev_group(root):
        req = Requirement(text)
        operators = {spec.operator for spec in req.specifier}
        assert ">=" in operators, f"{text}: no lower bound"
        assert not operators & {"==", "===", "~="}, f"{text}: a pin, not a range"
        assert req.marker is None, f"{text}: a range needs no marker per Python version"


def test_the_conda_environment_pins_what_requirements_txt_pins(root):
    env = yaml.safe_load((root / "environment.yml").read_text())
    conda = {}
    for dependency in env["dependencies"]:
        name, _, version = dependency.partition("=")
        conda[canonicalize_name(name)] = version
    assert conda.pop("python") == "3.12"
    assert conda == pinned(requirement_lines(root / "requirements.txt"), "3.12")


def test_every_distribution_the_tool_imports_is_declared_and_nothing_else(root):
    imported = set()
    for source in [*sorted((root / "cdse_dem").glob("*.py")), root / "cdse_copernicus_dem_downloader.py"]:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"cdse_dem"}
    distributions = packages_distributions()
    unknown = sorted(m for m in third_party if m not in distributions)
    assert unknown == [], f"imported but not installed here: {unknown}"
    needed = {canonicalize_name(d) for m in third_party for d in distributions[m]}
    declared = {canonicalize_name(Requirement(r).name) for r in project(root)["dependencies"] + extras(root)}
    assert needed == declared


def test_the_wheel_holds_the_tool_and_not_the_simulator(root, tmp_path):
    """Built as ``pip install .`` builds it (an isolated build environment with setuptools)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "cdse_copernicus_dem_downloader.py"):
        shutil.copy2(root / name, source / name)
    for folder in ("cdse_dem", "simulator"):  # the simulator is there, as in a checkout, and stays out
        shutil.copytree(root / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("cdse_copernicus_dem_downloader-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode("utf-8"))
        (entry_points_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points_name).decode("utf-8")
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"cdse_dem", "cdse_copernicus_dem_downloader.py"}
    assert {"cdse_dem/__init__.py", "cdse_dem/data/configuration.xsd", "cdse_dem/data/s2_tile_ids.bin"} <= set(names)
    assert "cdse-copernicus-dem-downloader = cdse_copernicus_dem_downloader:main" in entry_points
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    assert requires and not [r for r in requires if "==" in str(r.specifier)]
    declared = {canonicalize_name(Requirement(r).name) for r in project(root)["dependencies"]}
    assert {canonicalize_name(r.name) for r in requires if r.marker is None} == declared
    # the one extra is the processors' (the test tools are a group, not an extra)
    assert metadata.get_all("Provides-Extra") == ["processors"]
    optional = {canonicalize_name(r.name) for r in requires if r.marker is not None}
    assert optional == {canonicalize_name(Requirement(r).name) for r in extras(root)}


def test_ci_runs_make_test(root):
    assert "make test" in (root / ".ci" / "run").read_text()


def test_the_schema_beside_the_configuration_is_the_one_the_tool_uses(root):
    shipped = (root / "cdse_dem" / "data" / "configuration.xsd").read_bytes()
    assert (root / "configuration" / "configuration.xsd").read_bytes() == shipped
