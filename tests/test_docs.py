"""The documentation a user reads: the README stays a short front door, every link in it and in
docs/ leads somewhere, and docs/options.md names exactly the options the command line knows."""

import re
from pathlib import Path

import pytest

from cdse_copernicus_dem_downloader import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
OPTION = re.compile(r"`(--?[A-Za-z][\w-]*)")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # shell examples are not links
    return [link for link in LINK.findall(text) if not re.match(r"[a-z]+:", link)]


def test_the_readme_is_a_short_front_door_with_the_two_setup_commands_on_top():
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) < 220
    top = "\n".join(readme[:15])
    assert "make demo" in top and "make test" in top


def test_the_reference_pages_exist_and_each_says_who_needs_it():
    names = {page.name for page in (ROOT / "docs").glob("*.md")}
    assert {"options.md", "sen2cor.md", "processors.md", "credentials.md", "output.md", "many-runs.md",
            "python-api.md", "reliability.md"} <= names
    for page in (ROOT / "docs").glob("*.md"):
        first_paragraph = page.read_text().split("\n\n")[1]
        assert first_paragraph.startswith("For "), f"{page.name}: the first sentence should say who needs it"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_a_file_that_exists(page):
    broken = []
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not broken, broken


def parser_options() -> set[str]:
    return {name for action in build_parser()._actions for name in action.option_strings}


def options_named_in_tables(page: Path) -> set[str]:
    """The options in the first column of the page's tables: the rows that document an option."""
    first_cells = [line.split("|")[1] for line in page.read_text().splitlines() if line.startswith("| `-")]
    return {name for cell in first_cells for name in OPTION.findall(cell)}


def test_every_option_the_parser_knows_is_documented_in_options_md_and_nothing_else_is():
    documented = options_named_in_tables(ROOT / "docs" / "options.md")
    known = parser_options()
    assert sorted(known - documented) == [], "options missing from docs/options.md"
    assert sorted(documented - known) == [], "docs/options.md names options the parser does not know"


def test_help_shows_the_option_groups_and_three_examples():
    help_text = build_parser().format_help()
    for group in ("input", "data", "output", "processors", "run control", "credentials"):
        assert re.search(rf"^{group}\b.*:$", help_text, re.M), group
    examples = help_text.split("examples:\n", 1)[1]
    assert len(re.findall(r"^  cdse_copernicus_dem_downloader\.py --", examples, re.M)) == 3
