#!/usr/bin/env python3
"""What Sen2Cor's rectangle costs: geocells, megabytes and planning time, ``--coverage sen2cor``
(the default) against ``--coverage footprint`` (the reference tool's set).

Usage: python benchmarks/bench_coverage.py [--repeat 3]

Two tile lists, each planned with ``--dry-run`` under both coverages against the simulator in
its own process:
- the default sample list (``configuration/input_tiles.txt``), with realistic product sizes:
  the megabytes are the catalogue's ``ContentLength`` of every product the plan would fetch;
- the 1,000 random tiles of ``bench_scale.py`` (seed 2026), small products: geocells, those with
  a product, the whole-process time of the dry run, and the catalogue searches a run makes (the
  extra cells widen the searched areas).
"""

import sys
import tempfile
from pathlib import Path

import bench_scale
import benchlib
from benchlib import MB, ROOT, Row, Simulator, Tool, median

DEFAULT_LIST = ROOT / "configuration" / "input_tiles.txt"
COVERAGES = ("footprint", "sen2cor")
REAL_CATALOGUE = "https://catalogue.dataspace.copernicus.eu/odata/v1"  # search URL lengths as on CDSE


def _plan(tool: Tool, tile_list: Path, coverage: str) -> tuple[dict, float]:
    """The dry run's summary and its whole-process seconds (exit 1 is the sample list's 32TMA)."""
    import json

    summary = tool.home / f"plan-{coverage}.json"
    expected = 1 if tile_list == DEFAULT_LIST else 0
    run = tool.run("--i", str(tile_list), "--dry-run", "-q", "--coverage", coverage, "--summary-json", str(summary),
                   expected=expected)
    return json.loads(summary.read_text()), run.seconds


def _products(summary: dict) -> dict[str, str]:
    """grid id → product id of every geocell the plan would fetch, each once."""
    return {c["grid_id"]: c["product_id"] for t in summary["tiles"] for c in t["geocells"]
            if c["status"] == "planned"}


def _sizes(sim: Simulator, product_ids) -> dict[str, int]:
    import requests

    return {pid: requests.get(f"{sim.urls['catalogue_url']}/Products({pid})", timeout=300).json()["ContentLength"]
            for pid in product_ids}


def _sample_list_rows() -> list[Row]:
    with Simulator(size="realistic", capped=False) as sim:
        tool = Tool(sim)
        try:
            plans = {cov: _plan(tool, DEFAULT_LIST, cov)[0] for cov in COVERAGES}
            products = {cov: _products(plans[cov]) for cov in COVERAGES}
            sizes = _sizes(sim, set(products["sen2cor"].values()) | set(products["footprint"].values()))
        finally:
            tool.cleanup()
    cells = {cov: benchlib.planned_cells(plans[cov]) for cov in COVERAGES}
    megabytes = {cov: sum(sizes[p] for p in products[cov].values()) / MB for cov in COVERAGES}
    extra = sorted(set(cells["sen2cor"]) - set(cells["footprint"]))
    extra_land = sorted(set(products["sen2cor"]) - set(products["footprint"]))
    tiles = len(plans["sen2cor"]["tiles"])
    rows = [Row(f"coverage: default sample list ({tiles} tiles), --coverage {cov}",
                f"{len(cells[cov])} geocells, {len(products[cov])} with a product, {megabytes[cov]:.1f} MB "
                f"(realistic sizes)") for cov in COVERAGES]
    rows.append(Row("coverage: default sample list, sen2cor − footprint",
                    f"+{len(extra)} geocells ({', '.join(extra) or 'none'}), +{len(extra_land)} with a product, "
                    f"+{megabytes['sen2cor'] - megabytes['footprint']:.1f} MB"))
    return rows


def _scale_rows(repeat: int) -> list[Row]:
    tiles = bench_scale.sample(1000)
    with Simulator(size="small", capped=False) as sim, tempfile.TemporaryDirectory(prefix="cdse-cov-") as tmp:
        tool = Tool(sim)
        tile_list = Path(tmp) / "tiles.txt"
        tile_list.write_text("\n".join(tiles) + "\n")
        try:
            plans = {cov: _plan(tool, tile_list, cov)[0] for cov in COVERAGES}  # also warms the zip cache
            # interleaved, so that a busy spell of the shared machine weighs on both alike
            runs = [{cov: _plan(tool, tile_list, cov)[1] for cov in COVERAGES} for _ in range(repeat)]
        finally:
            tool.cleanup()
    seconds = {cov: median(r[cov] for r in runs) for cov in COVERAGES}
    difference = median(r["sen2cor"] - r["footprint"] for r in runs)
    searches = _searches(tiles)
    cells = {cov: benchlib.planned_cells(plans[cov]) for cov in COVERAGES}
    land = {cov: sum(1 for s in cells[cov].values() if s == "planned") for cov in COVERAGES}
    gained = sum(1 for t in plans["sen2cor"]["tiles"] if any(c["reason"] == "sen2cor" for c in t["geocells"]))
    rows = [Row(f"coverage: 1,000 random tiles, --coverage {cov}",
                f"{len(cells[cov]):,} geocells, {land[cov]:,} with a product; --dry-run {seconds[cov]:.2f} s")
            for cov in COVERAGES]
    rows.append(Row("coverage: 1,000 random tiles, sen2cor − footprint",
                    f"{gained} tiles gain cells: +{len(cells['sen2cor']) - len(cells['footprint'])} geocells, "
                    f"+{land['sen2cor'] - land['footprint']} with a product; "
                    f"{searches['sen2cor'] - searches['footprint']:+} catalogue searches "
                    f"(on {searches['footprint']:,}); dry run {difference:+.2f} s "
                    f"(median of the per-repetition differences)"))
    return rows


def _searches(tiles: list[str]) -> dict[str, int]:
    """The catalogue searches a fresh run of ``tiles`` makes under each coverage (cdse_dem.catalogue)."""
    from cdse_dem.catalogue import dataset_filter, plan_search_areas
    from cdse_dem.grid import computed_footprints, geocells_of_each
    from cdse_dem.sen2cor import cells_with_reasons

    true_cells = geocells_of_each(f.parts for f in computed_footprints(tiles))
    dataset = dataset_filter("CCM", 90, "DGED", "2024_1")
    searches = {}
    for coverage in COVERAGES:
        cells = {cell for planned in cells_with_reasons(tiles, true_cells, coverage) for cell in planned}
        searches[coverage] = len(plan_search_areas(cells, REAL_CATALOGUE, dataset))
    return searches


def run(repeat: int = 3) -> list[Row]:
    sys.path.insert(0, str(ROOT))
    return _sample_list_rows() + _scale_rows(repeat)


if __name__ == "__main__":
    sys.exit(benchlib.main_for(sys.modules[__name__]))
