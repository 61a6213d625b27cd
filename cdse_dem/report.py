"""What the user is told at the end: a summary per tile, and the same as stable JSON.

The JSON shape is documented in the README and is a promise to pipelines: keys are only
ever added, never renamed.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cdse_dem.entries import Entry
from cdse_dem.planning import DOWNLOADED, FAILED, PLANNED, PRESENT, SEA, Plan, tile_counts

log = logging.getLogger(__name__)


@dataclass
class Totals:
    seconds: float = 0.0
    bytes_downloaded: int = 0

    def rate_mb_s(self) -> float:
        return self.bytes_downloaded / 1e6 / self.seconds if self.seconds > 0 else 0.0


def summary_lines(plan: Plan, invalid: list[Entry], totals: Totals, left: list[str]) -> list[str]:
    lines = ["Summary:"]
    width = max([len(t.tile) for t in plan.tiles] + [4])
    for tile in plan.tiles:
        c = tile_counts(plan, tile)
        parts = [f"{c[DOWNLOADED]} downloaded", f"{c[PRESENT]} already present", f"{c[SEA]} open sea (no DEM)",
                 f"{c[FAILED]} failed"]
        if c[PLANNED]:
            parts.append(f"{c[PLANNED]} not done")
        fetched = sum(plan.cells[cell].bytes for cell in tile.geocells)
        lines.append(f"  {tile.tile:<{width}}  {len(tile.geocells)} geocells: " + ", ".join(parts)
                     + (f"; {fetched / 1e6:.1f} MB" if fetched else ""))
    for entry in invalid:
        lines.append(f"  invalid entry {entry.message}")
    lines.append(
        f"  Total: {plan.count(DOWNLOADED)} downloaded, {plan.count(PRESENT)} already present, "
        f"{plan.count(SEA)} open sea, {plan.count(FAILED)} failed; "
        f"{totals.bytes_downloaded / 1e6:.1f} MB in {totals.seconds:.1f} s ({totals.rate_mb_s():.1f} MB/s)")
    for cell in plan.cells.values():
        if cell.status == FAILED:
            lines.append(f"  failed: {cell.file_name} ({cell.error or 'unknown error'})")
    if left:
        lines.append(f"  Left for the next run ({len(left)}): " + ", ".join(left))
    return lines


def summary_dict(plan: Plan, invalid: list[Entry], totals: Totals, exit_status: int) -> dict:
    tiles = []
    for tile in plan.tiles:
        cells = []
        for geocell in tile.geocells:
            state = plan.cells[geocell]
            cells.append({
                "name": state.file_name.rsplit("_DEM.", 1)[0],
                "grid_id": geocell.grid_id,
                "status": state.status,
                "product_id": state.product_id,
                "file": state.file,
                "reason": tile.reasons.get(geocell, "footprint"),
                **({"error": state.error} if state.error else {}),
            })
        tiles.append({"tile": tile.tile, "entry": tile.entry.text, "footprint_source": tile.footprint_source,
                      "geocells": cells, **({"error": tile.error} if tile.error else {})})
    return {
        "tiles": tiles,
        "invalid_entries": [{"entry": e.text, "source": e.source, "line": e.line, "error": e.error}
                            for e in invalid],
        "totals": {
            "tiles": len(plan.tiles),
            "geocells": len(plan.cells),
            "downloaded": plan.count(DOWNLOADED),
            "present": plan.count(PRESENT),
            "sea": plan.count(SEA),
            "failed": plan.count(FAILED),
            "planned": plan.count(PLANNED),
            "bytes": totals.bytes_downloaded,
            "seconds": round(totals.seconds, 3),
            "mb_per_s": round(totals.rate_mb_s(), 3),
        },
        "exit_status": exit_status,
    }


def write_summary_json(path: Path, summary: dict) -> None:
    """The summary where the user asked for it, scrubbed of secrets; a failure is logged, not raised.

    Paths are written as the filesystem gave them, even when they are not UTF-8; the path was
    checked at the start of the run, but the disk may still fill up meanwhile.
    """
    from cdse_dem.fsutil import write_report
    from cdse_dem.redact import scrub

    text = scrub(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False))
    try:
        write_report(path, (text + "\n").encode("utf-8", "surrogateescape"))
    except (OSError, ValueError) as exc:
        log.error("%s: cannot write the summary JSON (%s)", path, getattr(exc, "strerror", None) or exc)
