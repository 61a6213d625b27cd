"""A KML picture of a run: tile footprints and their geocells coloured by what happened.

Opened in Google Earth or QGIS it answers "which cells did I get, which are sea, which
failed" at a glance, and shows where the tiles lie. Written with fastkml (1.x API: keyword
constructors, pygeoif geometries); a ``.kmz`` path gives a zipped KMZ.
"""

import io
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cdse_dem.errors import UsageError
from cdse_dem.footprint import FootprintSource
from cdse_dem.fsutil import write_report
from cdse_dem.planning import Status

if TYPE_CHECKING:
    from cdse_dem.footprint import Footprint
    from cdse_dem.geocells import Geocell

# KML colours are aabbggrr
STATUS_COLOURS = {
    Status.DOWNLOADED: "00c000",  # green
    Status.PRESENT: "c08000",  # blue: already on disk
    Status.SEA: "a0a0a0",  # grey: no DEM in CDSE (open sea)
    Status.FAILED: "0000ff",  # red
    Status.PLANNED: "00ffff",  # yellow: dry run
}
TILE_COLOUR = "0080ff"  # orange outline, no fill
_DISPLAY_TOLERANCE = 1e-5  # degrees (~1 m): enough vertices for the curved edges, no more


def write_kml_report(
    path: Path, footprints: "Iterable[Footprint]", geocell_status: "Mapping[Geocell, Status]", resolution: int
) -> None:
    """Write the tiles' footprints and the geocells styled by status to ``path`` (.kml or .kmz).

    ``geocell_status`` maps each cell to its status. A file is written to a temporary
    and renamed (a device or FIFO is written into); UsageError when it cannot be written.
    """
    import pygeoif
    import shapely
    from fastkml import KML, Document, Folder, LineStyle, Placemark, PolyStyle, Style
    from fastkml.styles import StyleUrl

    footprints = list(footprints)
    styles = [
        Style(id=f"cell-{status}", styles=[
            LineStyle(color=f"ff{colour}", width=1.5), PolyStyle(color=f"60{colour}", fill=True, outline=True),
        ])
        for status, colour in STATUS_COLOURS.items()
    ]
    styles.append(Style(id="tile", styles=[
        LineStyle(color=f"ff{TILE_COLOUR}", width=2.5), PolyStyle(color=f"00{TILE_COLOUR}", fill=False),
    ]))
    tiles = []
    for footprint in footprints:
        parts = [shapely.simplify(p, _DISPLAY_TOLERANCE, preserve_topology=True) for p in footprint.parts]
        geometry = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        source = "the official KML" if footprint.source == FootprintSource.KML else "the grid arithmetic"
        tiles.append(Placemark(
            name=footprint.tile, description=f"Sentinel-2 tile {footprint.tile}; footprint from {source}",
            style_url=StyleUrl(url="#tile"), geometry=pygeoif.shape(geometry),
        ))
    cells_by_status: dict[Status, list] = {status: [] for status in STATUS_COLOURS}
    for cell, status in sorted(geocell_status.items()):
        box = shapely.segmentize(cell.polygon(), 0.1)  # parallels drawn as parallels, not chords
        cells_by_status[status].append(Placemark(
            name=cell.name(resolution), description=f"{cell.grid_id}: {status}",
            style_url=StyleUrl(url=f"#cell-{status}"), geometry=pygeoif.shape(box),
        ))
    folders = [Folder(name="Tiles", features=tiles)] + [
        Folder(name=f"Geocells {status} ({len(marks)})", features=marks)
        for status, marks in cells_by_status.items() if marks
    ]
    document = Document(
        name=f"Copernicus DEM {resolution} m geocells for {len(footprints)} Sentinel-2 tiles",
        styles=styles, features=folders,
    )
    xml = KML(features=[document]).to_string(precision=7)
    if Path(path).suffix.lower() == ".kmz":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as kmz:
            kmz.writestr("doc.kml", xml)
        data = buffer.getvalue()
    else:
        data = xml.encode("utf-8")
    try:
        write_report(Path(path), data)  # a regular file replaced atomically; a device or FIFO written into
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot write the KML report ({getattr(exc, 'strerror', None) or exc})") from exc
