"""Sen2Cor: the cells it asks for, and the DEM lines of its GIPP.

Which geocells Sen2Cor asks for: every cell of the lon/lat rectangle around the tile's corners.

Sen2Cor (2.10 to 2.12, and 3) does not ask for the cells a tile's polygon overlaps. It
projects the four corners of the tile's UTM square to lon/lat, floors their extremes in its
own way, and asks for every cell of that rectangle; one cell it asks for and cannot find
sends the whole tile to flat terrain, silently (``../shared/docs/sen2cor.md``). Because UTM
squares are turned against the lon/lat grid, the rectangle holds cells the tile never
touches (5 % of all tiles; 56HKD asks for S37_E150 and S39_E149).

So this module states the rule as Sen2Cor applies it, quirks included: it is "what Sen2Cor
asks for", not what would be sensible. The planned set of a tile is this rectangle together
with the cells its true area overlaps (Sen2Cor's antimeridian quirk misses some of those, and
the downloader still fetches them), each cell carrying the reason it is there.

Pure code: the corners come from the grid arithmetic (equal to the KML's ``UTM_WKT`` for every
tile, as Sen2Cor takes them from the product's geocoding); no KML, no network.

Sen2Cor's ``L2A_GIPP.xml``: the two lines that point it at a DEM folder, and setting them.

Sen2Cor reads the DEM folder from ``Common_Section/DEM_Directory`` and picks the file names
from ``DEM_Reference`` (``GLO-30`` in the value: 30 m names; anything else: 90 m). A user's
GIPP holds many other settings, each explained by a comment, often hand-tuned: so only the
text of those two elements changes, and every other byte stays where it was. lxml checks
that the file is a Sen2Cor GIPP; the elements' exact byte spans come from expat (the parser
behind Python's own XML modules, which reports byte offsets), so the rewrite is a splice of
the original bytes, not a re-serialisation (which would requote the declaration, normalise
line ends and reflow attributes).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from xml.parsers import expat
from xml.sax.saxutils import escape

from lxml import etree

from cdse_dem.errors import DemError, UsageError
from cdse_dem.fsutil import atomic_write_bytes, read_input
from cdse_dem.grid import Geocell, corners_lonlat, geocell
from cdse_dem.settings import Coverage
from cdse_dem.tiles import shown

log = logging.getLogger(__name__)


# Sen2Cor's test for a tile across ±180°: its corner longitudes spread over half the world.
ANTIMERIDIAN_SPAN = 180




class Reason(StrEnum):
    """Why a cell is in a tile's plan (the summary's ``"reason"``)."""

    FOOTPRINT = "footprint"  # the tile's true area (or its KML polygon) overlaps the cell
    SEN2COR = "sen2cor"  # only Sen2Cor's rectangle holds it


def sen2cor_floor(value: float) -> int:
    """Sen2Cor's flooring of a bound: ``int(v) if v > 0 else int(v) - 1``.

    Like ``math.floor`` except at a negative whole number or exactly 0, which go one lower
    (-37.0 → -38, 0.0 → -1): Sen2Cor then asks for one more row or column of cells.
    """
    return int(value) if value > 0 else int(value) - 1


def rectangle_cells(lons: Sequence[float], lats: Sequence[float]) -> list[Geocell]:
    """The cells Sen2Cor asks for, given the tile's four corners in lon/lat; sorted.

    Across ±180° (``lonMax - lonMin >= 180``) Sen2Cor takes the columns
    ``range(-180, int(lonMin)) + range(int(lonMax), 180)`` with lonMin the most negative corner
    longitude and lonMax the most positive one: the column of the western-most corner west of
    180° is missed when it differs from that of lonMax (56 tiles, e.g. 60QYK). Reproduced as is.
    """
    lon_min, lon_max = min(lons), max(lons)
    lat_min, lat_max = sen2cor_floor(min(lats)), sen2cor_floor(max(lats))
    if lon_max - lon_min >= ANTIMERIDIAN_SPAN:
        columns = [*range(-180, int(lon_min)), *range(int(lon_max), 180)]
    else:
        columns = list(range(sen2cor_floor(lon_min), sen2cor_floor(lon_max) + 1))
    # Sen2Cor would also name cells that cannot exist: a corner exactly on -180° floors to
    # column -181, one exactly on +180° to column 180, and a latitude bound could leave
    # [-90, 89]. No DEM product (nor file name) exists there, so those are clipped to the
    # valid geocell ranges: latitude -90..89, longitude -180..179 (south-west corners).
    rows = range(max(lat_min, -90), min(lat_max, 89) + 1)
    columns = sorted({c for c in columns if -180 <= c <= 179})
    return [geocell(lat, lon) for lat in rows for lon in columns]


def sen2cor_cells(tile_ids: Sequence[str]) -> list[list[Geocell]]:
    """For each tile, the sorted cells Sen2Cor asks for; InputError for an id that is no tile."""

    corners = corners_lonlat(tile_ids)
    return [rectangle_cells(c[:, 0].tolist(), c[:, 1].tolist()) for c in corners]


def planned_cells(true_cells: Iterable[Geocell], rectangle: Iterable[Geocell]) -> dict[Geocell, Reason]:
    """A tile's cells, sorted, each with its reason: the true cells are ``footprint``, the rest
    of Sen2Cor's rectangle ``sen2cor``."""
    reasons = dict.fromkeys(rectangle, Reason.SEN2COR)
    reasons.update(dict.fromkeys(true_cells, Reason.FOOTPRINT))
    return dict(sorted(reasons.items(), key=_south_to_north))


def _south_to_north(item: tuple[Geocell, Reason]) -> tuple[int, int]:
    """Geocell order as a plain tuple: sorting compares them in C, not with the dataclass's ``<``."""
    return item[0].lat, item[0].lon


def cells_with_reasons(tile_ids: Sequence[str], true_cells: Iterable[Iterable[Geocell]],
                       coverage: Coverage | str = Coverage.SEN2COR) -> list[dict[Geocell, Reason]]:
    """For each tile, its planned cells (sorted) with their reasons, from the cells its true area
    (or KML polygon) overlaps: with ``Coverage.SEN2COR`` Sen2Cor's rectangle is added."""
    true_cells = list(true_cells)
    rectangles = sen2cor_cells(tile_ids) if coverage == Coverage.SEN2COR else [[] for _ in true_cells]
    return [planned_cells(true, rectangle) for true, rectangle in zip(true_cells, rectangles, strict=True)]


ROOT_TAG = "Level-2A_Ground_Image_Processing_Parameter"
SECTION = "Common_Section"
DIRECTORY, REFERENCE = "DEM_Directory", "DEM_Reference"
BACKUP_SUFFIX = ".bak"
MAX_GIPP_BYTES = 4 * 1024 * 1024  # Sen2Cor's L2A_GIPP.xml is about 20 kB, comments included
# Sen2Cor up to 2.12 reads DGED GeoTIFFs only: its DTED mode wants e007_n50.dt1 names, which
# the CDSE DTED products are not (sen2cor.md).
DTED_UNUSABLE = ("Sen2Cor (up to 2.12) cannot read the CDSE DTED files: it reads the DGED GeoTIFFs only "
                 "(--m DGED)")


def dem_reference(resolution: int) -> str:
    """The DEM_Reference that makes Sen2Cor look for this tool's file names at ``resolution``."""
    return f"CDSE-GLO-{resolution}"


def dem_directory(out_dir: Path) -> str:
    """The output folder as Sen2Cor must get it: absolute (a relative one is taken under its home)."""
    return os.path.abspath(out_dir)


def not_xml_text(text: str) -> str | None:
    """Why ``text`` cannot be an element's text that Sen2Cor reads back as it is, in words; else None.

    XML 1.0 has no way to hold most control characters (not even as ``&#1;``), nor a path byte
    that is not UTF-8 (Python hands it over as a lone surrogate); a tab or a line end would be
    read back, but as part of a folder name no one meant.
    """
    for char in text:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            return "a byte that is not UTF-8"
        if code < 0x20 or 0x7F <= code <= 0x9F or code in (0xFFFE, 0xFFFF):
            return f"a control character ({char.encode('unicode_escape').decode('ascii')})"
    return None


def gipp_lines(out_dir: Path, resolution: int) -> list[str]:
    """The two elements, as they go into ``Common_Section``."""
    return [f"<{DIRECTORY}>{escape(dem_directory(out_dir))}</{DIRECTORY}>",
            f"<{REFERENCE}>{dem_reference(resolution)}</{REFERENCE}>"]


@dataclass(frozen=True)
class Span:
    """Where an element's content lies in the file: bytes ``start:end`` (both inside the tags).

    For an empty-element tag (``<DEM_Directory/>``) ``start:end`` is the whole tag and
    ``self_closing`` is set, since the splice must then write both tags.
    """

    start: int
    end: int
    self_closing: bool = False


@dataclass(frozen=True)
class Gipp:
    """A Sen2Cor GIPP as read: its bytes, its encoding, and where the two DEM elements are."""

    path: Path
    data: bytes
    encoding: str
    directory: Span
    reference: Span | None  # absent in some hand-made GIPPs: inserted after DEM_Directory
    indent: bytes  # what precedes DEM_Directory on its line, to indent an inserted DEM_Reference

    def with_dem(self, directory: str, reference: str) -> bytes:
        """The file's bytes with the two elements set; every other byte unchanged."""
        edits = [(self.directory, DIRECTORY, directory)]
        if self.reference is not None:
            edits.append((self.reference, REFERENCE, reference))
        data = self.data
        for span, tag, value in sorted(edits, key=lambda e: e[0].start, reverse=True):
            data = data[:span.start] + self._content(span, tag, value) + data[span.end:]
        if self.reference is None:
            end = self.directory.end + len(data) - len(self.data)  # the splice may have moved it
            if not self.directory.self_closing:
                end = data.index(b">", end) + 1  # past the end tag
            newline = b"\r\n" if b"\r\n" in self.data else b"\n"
            inserted = newline + self.indent + self._content(Span(0, 0, True), REFERENCE, reference)
            data = data[:end] + inserted + data[end:]
        return data

    def _content(self, span: Span, tag: str, value: str) -> bytes:
        text = escape(value).encode(self.encoding, "xmlcharrefreplace")
        if span.self_closing:
            return f"<{tag}>".encode(self.encoding) + text + f"</{tag}>".encode(self.encoding)
        return text


def read_gipp(path: Path) -> Gipp:
    """Read and check a Sen2Cor GIPP; UsageError in one line when it is not one (file untouched)."""
    path = Path(path)
    data = read_input(path, "Sen2Cor GIPP", UsageError, limit=MAX_GIPP_BYTES)
    tree, _ = _parse(data, path)
    encoding = tree.docinfo.encoding or "UTF-8"
    if encoding.upper().replace("-", "").startswith(("UTF16", "UTF32", "UCS")):
        raise UsageError(f"{path}: the GIPP is encoded in {encoding}; save it as UTF-8 and run again")
    try:
        spans = _spans(data, (ROOT_TAG, SECTION))
    except (ValueError, LookupError, expat.ExpatError):  # "multi-byte encodings are not supported"
        raise UsageError(f"{path}: the GIPP is encoded in {encoding}, which cannot be rewritten byte for byte; "
                         "save it as UTF-8 and run again") from None
    indent = data[data.rfind(b"\n", 0, spans[DIRECTORY][0]) + 1:spans[DIRECTORY][0]]
    return Gipp(path, data, encoding, _content_span(data, *spans[DIRECTORY]),
                _content_span(data, *spans[REFERENCE]) if REFERENCE in spans else None,
                indent if not indent.strip() else b"")


def _parse(data: bytes, path: Path):
    """The GIPP's tree and its two DEM elements' texts (DEM_Reference: None when absent), checked
    to be Sen2Cor's: UsageError in one line otherwise."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        tree = etree.fromstring(data, parser).getroottree()
    except etree.XMLSyntaxError as exc:
        raise UsageError(f"{path}:{exc.lineno or 0}: not a Sen2Cor GIPP: not well-formed XML "
                         f"({exc.msg})") from None
    root = tree.getroot()
    if root.tag != ROOT_TAG:
        raise UsageError(f"{path}: not a Sen2Cor GIPP: the root element is {root.tag!r}, not {ROOT_TAG!r}")
    found = {tag: root.findall(f"{SECTION}/{tag}") for tag in (DIRECTORY, REFERENCE)}
    if not found[DIRECTORY]:
        raise UsageError(f"{path}: not a Sen2Cor GIPP: no {SECTION}/{DIRECTORY} element")
    for tag, elements in found.items():
        if len(elements) > 1:
            raise UsageError(f"{path}:{elements[1].sourceline}: {SECTION} holds {len(elements)} {tag} elements; "
                             "Sen2Cor reads one: keep one and run again")
        if elements and len(elements[0]):
            raise UsageError(f"{path}:{elements[0].sourceline}: {tag} holds elements, not a value")
    texts = {tag: (elements[0].text or "") if elements else None for tag, elements in found.items()}
    return tree, (texts[DIRECTORY], texts[REFERENCE])


def _spans(data: bytes, parents: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    """Byte offsets of the two elements directly under ``parents``: (start tag's ``<``, end tag's
    ``<``, 1 if the start tag is an empty-element tag)."""

    parser = expat.ParserCreate()
    stack: list[str] = []
    opened: dict[str, int] = {}
    spans: dict[str, tuple[int, int, int]] = {}

    def start(name, attributes):
        stack.append(name)
        if tuple(stack[:-1]) == parents and name in (DIRECTORY, REFERENCE) and name not in spans:
            opened[name] = parser.CurrentByteIndex

    def end(name):
        if tuple(stack[:-1]) == parents and name in opened and name not in spans:
            begin = opened[name]
            closing = parser.CurrentByteIndex
            spans[name] = (begin, closing, 1 if closing == begin else 0)
        stack.pop()

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.Parse(data, True)
    return spans


def _content_span(data: bytes, begin: int, closing: int, empty: int) -> Span:
    """The content between the tags, from the start tag's ``<`` and the end tag's ``<``."""
    tag_end = _start_tag_end(data, begin)
    if empty or data[tag_end - 2:tag_end] == b"/>":
        return Span(begin, tag_end, True)
    return Span(tag_end, closing)


def _start_tag_end(data: bytes, begin: int) -> int:
    """The offset just past the ``>`` that closes the start tag at ``begin`` (quotes may hold ``>``)."""
    quote = None
    for i in range(begin + 1, len(data)):
        c = data[i:i + 1]
        if quote:
            if c == quote:
                quote = None
        elif c in (b'"', b"'"):
            quote = c
        elif c == b">":
            return i + 1
    raise ValueError("unterminated start tag")  # expat has parsed the file: cannot happen


def check_gipp_option(gipp: str | None, model: str, out_dir: Path | None = None) -> Gipp | None:
    """Before any work: ``--gipp`` must name a Sen2Cor GIPP we can rewrite, for a DEM Sen2Cor reads,
    in a folder (``out_dir``) whose path the GIPP can hold.

    Choosing DTED without ``--gipp`` is allowed (other processors read it) but warned about.
    """
    if model == "DTED":
        if gipp:
            raise UsageError(f"--gipp with --m DTED: {DTED_UNUSABLE}")
        log.warning("DTED chosen: %s", DTED_UNUSABLE)
    if not gipp:
        return None
    if out_dir is not None:
        problem = not_xml_text(dem_directory(out_dir))
        if problem is not None:
            raise UsageError(f"{shown(dem_directory(out_dir))}: the output folder's path holds {problem}, which "
                             "Sen2Cor's GIPP cannot hold: choose another folder for --gipp (the GIPP is left as it is)")
    document = read_gipp(Path(gipp).expanduser())
    target = document.path.resolve()
    if not os.access(target.parent, os.W_OK) or not os.access(target, os.W_OK):
        raise UsageError(f"{document.path}: cannot rewrite the Sen2Cor GIPP (no write permission)")
    return document


def set_dem(path: Path, out_dir: Path, resolution: int) -> bool:
    """Point the GIPP at ``out_dir``; True when the file changed.

    The GIPP is read again (it may have been edited during a long run), written atomically
    with its permissions kept, and only when the new bytes read back as the two values meant.
    The original is kept once as ``<file>.bak`` (a second run does not overwrite the user's true
    original with our first edit), or, when that name holds something else (a folder, a link),
    under the first free ``<file>.bak-<n>``, and the log says which. A symbolic link is
    followed, so the file it points at is rewritten and the link stays.
    """
    document = read_gipp(Path(path).expanduser())
    directory, reference = dem_directory(out_dir), dem_reference(resolution)
    problem = not_xml_text(directory)
    if problem is not None:
        raise UsageError(f"{document.path} left unchanged: the output folder's path holds {problem}, which "
                         "Sen2Cor's GIPP cannot hold")
    new = document.with_dem(directory, reference)
    if new == document.data:
        log.info("%s already points Sen2Cor at this folder: left unchanged", document.path)
        return False
    try:
        _, read_back = _parse(new, document.path)
    except UsageError:
        read_back = None
    if read_back != (directory, reference):
        raise DemError(f"{document.path} left unchanged: the rewritten GIPP would not read back as "
                       f"{DIRECTORY} {shown(directory)} and {REFERENCE} {reference}")
    target = document.path.resolve()
    mode = target.stat().st_mode & 0o7777
    backup, kept = _backup_of(target)
    if not kept:
        atomic_write_bytes(backup, document.data, mode)
    atomic_write_bytes(target, new, mode)
    log.info("%s: %s and %s set for this folder (the original is kept as %s)", document.path, DIRECTORY,
             REFERENCE, backup.name)
    return True


MAX_BACKUPS = 100  # names tried for the GIPP's original: <file>.bak, then <file>.bak-1 ...


def _backup_of(target: Path) -> tuple[Path, bool]:
    """Where the GIPP's original is kept: (a regular file there already: True, a free name: False).

    A name that holds anything else (a folder, a link, a FIFO) is passed over, never written
    through or replaced.
    """
    for n in range(MAX_BACKUPS):
        backup = target.with_name(target.name + BACKUP_SUFFIX + (f"-{n}" if n else ""))
        try:
            info = os.lstat(backup)
        except FileNotFoundError:
            return backup, False
        if stat.S_ISREG(info.st_mode):
            return backup, True
    raise DemError(f"{target} left unchanged: no free name to keep its original ({target.name}{BACKUP_SUFFIX}-<n>)")


def end_of_work(gipp: str | None, out_dir: Path, resolution: int, model: str, *, complete: bool) -> bool:
    """At the end of a run or check: the two lines for Sen2Cor, and ``--gipp`` written.

    Only once the folder is complete (every geocell in place): a GIPP pointing at a folder
    that lacks a cell sends Sen2Cor to flat terrain. False when ``--gipp`` could not be written.
    """

    if model != "DGED":
        return True  # refused up front with --gipp; warned about at the start otherwise
    if not complete:
        if gipp:
            log.warning("%s left unchanged: the DEM folder is not complete yet (run again)", gipp)
        return True
    log.info("For Sen2Cor, set these two lines in the Common_Section of its L2A_GIPP.xml:")
    for line in gipp_lines(out_dir, resolution):
        log.info("    %s", line)
    if not gipp:
        return True
    try:
        set_dem(Path(gipp), out_dir, resolution)
    except DemError as exc:
        log.error("%s", exc)
        return False
    except OSError as exc:
        log.error("%s: cannot rewrite the Sen2Cor GIPP (%s)", gipp, exc.strerror or exc)
        return False
    return True
