"""Sen2Cor's ``L2A_GIPP.xml``: the two lines that point it at a DEM folder, and setting them.

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
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from cdse_dem.errors import UsageError

log = logging.getLogger(__name__)

ROOT_TAG = "Level-2A_Ground_Image_Processing_Parameter"
SECTION = "Common_Section"
DIRECTORY, REFERENCE = "DEM_Directory", "DEM_Reference"
BACKUP_SUFFIX = ".bak"
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
    from lxml import etree

    from cdse_dem.fsutil import read_input

    path = Path(path)
    data = read_input(path, "Sen2Cor GIPP", UsageError)
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
    encoding = tree.docinfo.encoding or "UTF-8"
    if encoding.upper().replace("-", "").startswith(("UTF16", "UTF32", "UCS")):
        raise UsageError(f"{path}: the GIPP is encoded in {encoding}; save it as UTF-8 and run again")
    spans = _spans(data, (ROOT_TAG, SECTION))
    indent = data[data.rfind(b"\n", 0, spans[DIRECTORY][0]) + 1:spans[DIRECTORY][0]]
    return Gipp(path, data, encoding, _content_span(data, *spans[DIRECTORY]),
                _content_span(data, *spans[REFERENCE]) if REFERENCE in spans else None,
                indent if not indent.strip() else b"")


def _spans(data: bytes, parents: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    """Byte offsets of the two elements directly under ``parents``: (start tag's ``<``, end tag's
    ``<``, 1 if the start tag is an empty-element tag)."""
    from xml.parsers import expat

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


def check_gipp_option(gipp: str | None, model: str) -> Gipp | None:
    """Before any work: ``--gipp`` must name a Sen2Cor GIPP we can rewrite, for a DEM Sen2Cor reads.

    Choosing DTED without ``--gipp`` is allowed (other processors read it) but warned about.
    """
    if model == "DTED":
        if gipp:
            raise UsageError(f"--gipp with --m DTED: {DTED_UNUSABLE}")
        log.warning("DTED chosen: %s", DTED_UNUSABLE)
    if not gipp:
        return None
    document = read_gipp(Path(gipp).expanduser())
    target = document.path.resolve()
    if not os.access(target.parent, os.W_OK) or not os.access(target, os.W_OK):
        raise UsageError(f"{document.path}: cannot rewrite the Sen2Cor GIPP (no write permission)")
    return document


def set_dem(path: Path, out_dir: Path, resolution: int) -> bool:
    """Point the GIPP at ``out_dir``; True when the file changed.

    The GIPP is read again (it may have been edited during a long run), written atomically
    with its permissions kept, and the original is kept once as ``<file>.bak`` (a second run
    does not overwrite the user's true original with our first edit). A symbolic link is
    followed, so the file it points at is rewritten and the link stays.
    """
    from cdse_dem.fsutil import atomic_write_bytes

    document = read_gipp(Path(path).expanduser())
    new = document.with_dem(dem_directory(out_dir), dem_reference(resolution))
    if new == document.data:
        log.info("%s already points Sen2Cor at this folder: left unchanged", document.path)
        return False
    target = document.path.resolve()
    mode = target.stat().st_mode & 0o7777
    backup = target.with_name(target.name + BACKUP_SUFFIX)
    if not backup.exists():
        atomic_write_bytes(backup, document.data, mode)
    atomic_write_bytes(target, new, mode)
    log.info("%s: %s and %s set for this folder (the original is kept as %s)", document.path, DIRECTORY,
             REFERENCE, backup.name)
    return True


def end_of_work(gipp: str | None, out_dir: Path, resolution: int, model: str, *, complete: bool) -> bool:
    """At the end of a run or check: the two lines for Sen2Cor, and ``--gipp`` written.

    Only once the folder is complete (every geocell in place): a GIPP pointing at a folder
    that lacks a cell sends Sen2Cor to flat terrain. False when ``--gipp`` could not be written.
    """
    from cdse_dem.errors import DemError

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
