"""The OData ``$filter`` language of the CDSE catalogue: tokenizer, recursive-descent parser, AST.

The parser accepts exactly what it can evaluate correctly and raises ``FilterError`` (a 400 with
``detail``) for everything else, so that a client bug shows up as an error rather than as a
silently wrong answer. Each node evaluates itself against one product; ``candidate_cells``
reads the geocells a query can possibly match (from ``Intersects``, ``gridId`` or ``Name``)
so that a search never has to look at all ~740,000 products.

Grammar (case of keywords and function names is ignored, as CDSE does)::

    expr    := and ('or' and)*
    and     := unary ('and' unary)*
    unary   := 'not' unary | primary
    primary := '(' expr ')' | call | operand cmp operand | operand 'in' '(' literal, ... ')'
    call    := contains|startswith|endswith '(' property ',' string ')'
             | OData.CSC.Intersects '(' [location '=' Footprint ','] area '=' geography'...' ')'
             | Attributes '/' OData.CSC.<Type>Attribute '/' any '(' var ':' expr ')'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulator.cells import Cell, parse_grid_id


class FilterError(ValueError):
    """A filter the catalogue does not understand: the message goes into the 400 ``detail``."""


# --- tokens -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    kind: str  # NAME, STRING, GEO, DATETIME, NUMBER, PUNCT, END
    text: str
    value: Any
    pos: int


_DATETIME = r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
_TOKEN = re.compile(
    rf"""(?P<space>\s+)
      | (?P<geo>(?i:geography|geometry)'(?P<geobody>[^']*)')
      | (?P<string>'(?:[^']|'')*')
      | (?P<datetime>{_DATETIME}(?![\w.]))
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.]))
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<punct>[()/,:=])
    """,
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FilterError(f"Invalid character {text[pos]!r} at position {pos} of the filter")
        kind = m.lastgroup
        if kind == "geobody":
            kind = "geo"
        chunk = m.group(0)
        if kind == "geo":
            tokens.append(Token("GEO", chunk, m.group("geobody"), pos))
        elif kind == "string":
            tokens.append(Token("STRING", chunk, chunk[1:-1].replace("''", "'"), pos))
        elif kind == "datetime":
            tokens.append(Token("DATETIME", chunk, parse_datetime(chunk), pos))
        elif kind == "number":
            tokens.append(Token("NUMBER", chunk, float(chunk) if any(c in chunk for c in ".eE") else int(chunk),
                                pos))
        elif kind == "name":
            tokens.append(Token("NAME", chunk, chunk, pos))
        elif kind == "punct":
            tokens.append(Token("PUNCT", chunk, chunk, pos))
        pos = m.end()
    tokens.append(Token("END", "", None, len(text)))
    return tokens


def parse_datetime(text: str) -> datetime:
    value = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", value):
        value = value[:-2] + ":" + value[-2:]
    frac = re.search(r"\.(\d+)", value)
    if frac and len(frac.group(1)) > 6:
        value = value.replace(frac.group(0), "." + frac.group(1)[:6])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise FilterError(f"Invalid datetime literal {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- what a product exposes to a filter -----------------------------------------------------------
PRODUCT_PROPERTIES: dict[tuple[str, ...], tuple[str, Callable[[Any], Any]]] = {
    ("Name",): ("string", lambda p: p.name),
    ("Id",): ("string", lambda p: p.id),
    ("Collection", "Name"): ("string", lambda p: p.collection),
    ("ContentType",): ("string", lambda p: "application/octet-stream"),
    ("S3Path",): ("string", lambda p: p.s3_path),
    ("Online",): ("bool", lambda p: True),
    ("ContentDate", "Start"): ("datetime", lambda p: p.content_date[0]),
    ("ContentDate", "End"): ("datetime", lambda p: p.content_date[1]),
    ("OriginDate",): ("datetime", lambda p: p.origin_date),
    ("PublicationDate",): ("datetime", lambda p: p.publication_date),
    ("ModificationDate",): ("datetime", lambda p: p.modification_date),
}
ATTRIBUTE_TYPES = {"StringAttribute": "string", "IntegerAttribute": "number", "DoubleAttribute": "number",
                   "DateTimeOffsetAttribute": "datetime", "BooleanAttribute": "bool"}
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


# --- the AST --------------------------------------------------------------------------------------
class Node:
    def matches(self, product, env: dict) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def cells(self, index) -> set[Cell] | None:
        """The only cells that can match, or None when this clause does not narrow them."""
        return None


@dataclass
class Or(Node):
    items: list[Node]

    def matches(self, product, env):
        return any(i.matches(product, env) for i in self.items)

    def cells(self, index):
        parts = [i.cells(index) for i in self.items]
        if any(p is None for p in parts):
            return None
        return set().union(*parts)


@dataclass
class And(Node):
    items: list[Node]

    def matches(self, product, env):
        return all(i.matches(product, env) for i in self.items)

    def cells(self, index):
        result = None
        for item in self.items:
            part = item.cells(index)
            if part is not None:
                result = part if result is None else result & part
        return result


@dataclass
class Not(Node):
    item: Node

    def matches(self, product, env):
        return not self.item.matches(product, env)


@dataclass
class Value:
    """An operand: a literal, a product property, or a property of a lambda variable."""

    kind: str  # string, datetime, number, bool, null
    get: Callable[[Any, dict], Any]
    literal: Any = None
    is_literal: bool = False
    path: tuple[str, ...] = ()


@dataclass
class Compare(Node):
    op: str
    left: Value
    right: Value

    def matches(self, product, env):
        a, b = self.left.get(product, env), self.right.get(product, env)
        if a is None or b is None:
            return (a is b) if self.op == "eq" else (a is not b) if self.op == "ne" else False
        return {
            "eq": a == b, "ne": a != b,
            "gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b,
        }[self.op]

    def cells(self, index):
        if self.op == "eq" and self.right.is_literal and isinstance(self.right.literal, str):
            if self.left.path == ("Name",):
                return set(index.cells_for_name(self.right.literal))
            if self.left.path == ("Id",):
                product = index.by_id(self.right.literal)
                return {product.key.cell} if product else set()
        return None


@dataclass
class In(Node):
    value: Value
    options: list[Any]

    def matches(self, product, env):
        return self.value.get(product, env) in self.options


@dataclass
class StringFunction(Node):
    name: str  # contains, startswith, endswith
    value: Value
    needle: str

    def matches(self, product, env):
        text = self.value.get(product, env)
        if not isinstance(text, str):
            return False
        if self.name == "contains":
            return self.needle in text
        if self.name == "startswith":
            return text.startswith(self.needle)
        return text.endswith(self.needle)


@dataclass
class Intersects(Node):
    geometry: Any
    wkt: str
    _prepared: Any = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def cell_intersects(self, cell: Cell) -> bool:
        hit = self._cache.get(cell)
        if hit is None:
            import shapely
            from shapely.geometry import box

            if self._prepared is None:
                shapely.prepare(self.geometry)
                self._prepared = self.geometry
            lat, lon = cell
            hit = self._cache[cell] = bool(self.geometry.intersects(box(lon, lat, lon + 1, lat + 1)))
        return hit

    def matches(self, product, env):
        return self.cell_intersects(product.key.cell)

    def cells(self, index):
        minx, miny, maxx, maxy = self.geometry.bounds
        # A cell spans [lon, lon+1]: a geometry touching a degree line touches both neighbours.
        lons = range(max(-180, math.ceil(minx) - 1), min(179, math.floor(maxx)) + 1)
        lats = range(max(-90, math.ceil(miny) - 1), min(89, math.floor(maxy)) + 1)
        found = set()
        cells = index.cells
        for lat in lats:
            for lon in lons:
                cell = (lat, lon)
                if (cells.has(cell, 30) or cells.has(cell, 90)) and self.cell_intersects(cell):
                    found.add(cell)
        return found


@dataclass
class AnyAttribute(Node):
    type_name: str  # StringAttribute, ...
    var: str
    predicate: Node
    _name: str | bool | None = field(default=False, repr=False)

    def matches(self, product, env):
        if self.type_name != "StringAttribute":
            return False  # the DEM products carry string attributes only
        wanted = self._named()
        if wanted is not None:  # the usual form: look at that one attribute only
            value = product.attribute(wanted)
            return value is not None and self.predicate.matches(product, {**env, self.var: (wanted, value)})
        for name, value in product.attributes():
            if self.predicate.matches(product, {**env, self.var: (name, value)}):
                return True
        return False

    def _named(self) -> str | None:
        """The attribute name the predicate requires (``att/Name eq 'x' and ...``), if it does."""
        if self._name is False:
            self._name = None
            items = self.predicate.items if isinstance(self.predicate, And) else [self.predicate]
            for item in items:
                if (isinstance(item, Compare) and item.op == "eq" and item.left.path == ("$var", "Name")
                        and item.right.is_literal and isinstance(item.right.literal, str)):
                    self._name = item.right.literal
                    break
        return self._name

    def cells(self, index):
        items = self.predicate.items if isinstance(self.predicate, And) else [self.predicate]
        names = values = None
        for item in items:
            if isinstance(item, Compare) and item.op == "eq" and item.right.is_literal:
                if item.left.path == ("$var", "Name"):
                    names = item.right.literal
                elif item.left.path == ("$var", "Value"):
                    values = item.right.literal
        if names == "gridId" and isinstance(values, str):
            cell = parse_grid_id(values)
            return {cell} if cell else set()
        return None


_CELL_FREE_ATTRIBUTES = {"productType", "dataset", "datasetFull", "authority", "spatialResolution", "sensorType",
                         "platformShortName", "resolutionClass", "orderReference"}


def cell_independent(node: Node) -> bool:
    """True when ``node`` depends on the collection, delivery and kind of a product only, never on
    its cell: such clauses are decided once per kind before a scan instead of once per product."""
    if isinstance(node, (And, Or)):
        return all(cell_independent(i) for i in node.items)
    if isinstance(node, Not):
        return cell_independent(node.item)
    if isinstance(node, Compare):
        return {node.left.path, node.right.path} <= {("Collection", "Name"), ()} and (
            node.left.is_literal or node.right.is_literal)
    if isinstance(node, AnyAttribute):
        return node._named() in _CELL_FREE_ATTRIBUTES
    return False


# --- the parser -----------------------------------------------------------------------------------
class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.vars: list[str] = []

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, message: str, token: Token | None = None) -> FilterError:
        token = token or self.tok
        where = "end of the filter" if token.kind == "END" else f"{token.text!r} at position {token.pos}"
        return FilterError(f"Invalid filter: {message} (near {where})")

    def keyword(self, *words: str) -> str | None:
        if self.tok.kind == "NAME" and self.tok.text.lower() in words:
            word = self.tok.text.lower()
            self.i += 1
            return word
        return None

    def punct(self, char: str) -> bool:
        if self.tok.kind == "PUNCT" and self.tok.text == char:
            self.i += 1
            return True
        return False

    def expect(self, char: str) -> None:
        if not self.punct(char):
            raise self.fail(f"expected {char!r}")

    def parse(self) -> Node:
        if self.tok.kind == "END":
            raise self.fail("the filter is empty")
        node = self.expr()
        if self.tok.kind != "END":
            raise self.fail("unexpected text")
        return node

    def expr(self) -> Node:
        items = [self.conjunction()]
        while self.keyword("or"):
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(items)

    def conjunction(self) -> Node:
        items = [self.unary()]
        while self.keyword("and"):
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(items)

    def unary(self) -> Node:
        if self.keyword("not"):
            return Not(self.unary())
        return self.primary()

    def primary(self) -> Node:
        if self.punct("("):
            node = self.expr()
            self.expect(")")
            return node
        tok = self.tok
        if tok.kind == "NAME":
            nxt = self.tokens[self.i + 1]
            low = tok.text.lower()
            if low in ("contains", "startswith", "endswith") and nxt.text == "(":
                return self.string_function(low)
            if low == "odata.csc.intersects":
                return self.intersects()
            if low.split(".")[-1] in ("intersects", "within", "distance") or (nxt.text == "(" and "/" not in low):
                raise self.fail(f"unknown function {tok.text!r}")
        left = self.operand()
        if isinstance(left, Node):
            return left
        op = self.keyword(*_OPS, "in")
        if op is None:
            if left.kind == "bool":
                return Compare("eq", left, Value("bool", lambda p, e: True, True, True))
            raise self.fail("expected a comparison operator (eq, ne, gt, ge, lt, le, in)")
        if op == "in":
            return self.in_list(left)
        right = self.operand()
        if isinstance(right, Node):
            raise self.fail("a condition cannot be compared")
        return self.comparison(op, left, right)

    def comparison(self, op: str, left: Value, right: Value) -> Compare:
        if left.is_literal and not right.is_literal:
            flip = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
            return self.comparison(flip, right, left)
        if right.kind == "null" or left.kind == "null":
            if op not in ("eq", "ne"):
                raise self.fail("null can only be compared with eq or ne")
            return Compare(op, left, right)
        if left.kind == "datetime" and right.kind == "string" and right.is_literal:
            moment = parse_datetime(right.literal)
            right = Value("datetime", lambda p, e: moment, moment, True)
        if left.kind != right.kind and "any" not in (left.kind, right.kind):
            raise self.fail(f"cannot compare {'/'.join(left.path) or left.kind} ({left.kind}) "
                            f"with a {right.kind} value")
        if left.kind == "bool" and op not in ("eq", "ne"):
            raise self.fail("booleans can only be compared with eq or ne")
        return Compare(op, left, right)

    def in_list(self, left: Value) -> In:
        self.expect("(")
        options = []
        while True:
            value = self.operand()
            if isinstance(value, Node) or not value.is_literal:
                raise self.fail("'in' takes a list of literals")
            options.append(value.literal)
            if self.punct(")"):
                return In(left, options)
            self.expect(",")

    def operand(self) -> Value | Node:
        tok = self.tok
        if tok.kind == "STRING":
            self.i += 1
            return Value("string", lambda p, e: tok.value, tok.value, True)
        if tok.kind == "DATETIME":
            self.i += 1
            return Value("datetime", lambda p, e: tok.value, tok.value, True)
        if tok.kind == "NUMBER":
            self.i += 1
            return Value("number", lambda p, e: tok.value, tok.value, True)
        if tok.kind == "NAME":
            low = tok.text.lower()
            if low in ("true", "false"):
                self.i += 1
                return Value("bool", lambda p, e: low == "true", low == "true", True)
            if low == "null":
                self.i += 1
                return Value("null", lambda p, e: None, None, True)
            return self.path()
        raise self.fail("expected a property or a value")

    def path(self) -> Value | Node:
        parts = [self.tok.text]
        self.i += 1
        while self.punct("/"):
            if self.tok.kind != "NAME":
                raise self.fail("expected a property name after '/'")
            parts.append(self.tok.text)
            self.i += 1
        if parts[0] in self.vars:
            return self.lambda_property(parts)
        if parts[0] == "Attributes":
            return self.any_attribute(parts)
        key = tuple(parts)
        if key not in PRODUCT_PROPERTIES:
            raise self.fail(f"unknown or unsupported property {'/'.join(parts)!r}")
        kind, getter = PRODUCT_PROPERTIES[key]
        return Value(kind, lambda p, e: getter(p), path=key)

    def lambda_property(self, parts: list[str]) -> Value:
        var, rest = parts[0], parts[1:]
        if rest == ["Name"]:
            return Value("string", lambda p, e: e[var][0], path=("$var", "Name"))
        if (len(rest) == 2 and rest[1] == "Value" and rest[0].startswith("OData.CSC.")) or rest == ["Value"]:
            return Value("any", lambda p, e: e[var][1], path=("$var", "Value"))
        raise self.fail(f"unknown attribute property {'/'.join(parts)!r}")

    def any_attribute(self, parts: list[str]) -> Node:
        if len(parts) != 3 or parts[2].lower() != "any" or not parts[1].startswith("OData.CSC."):
            raise self.fail(f"expected Attributes/OData.CSC.<Type>Attribute/any(...), got {'/'.join(parts)!r}")
        type_name = parts[1][len("OData.CSC."):]
        if type_name not in ATTRIBUTE_TYPES:
            raise self.fail(f"unknown attribute type {parts[1]!r}")
        self.expect("(")
        if self.tok.kind != "NAME":
            raise self.fail("expected a lambda variable")
        var = self.tok.text
        self.i += 1
        self.expect(":")
        self.vars.append(var)
        try:
            predicate = self.expr()
        finally:
            self.vars.pop()
        self.expect(")")
        return AnyAttribute(type_name, var, predicate)

    def string_function(self, name: str) -> StringFunction:
        self.i += 1
        self.expect("(")
        value = self.operand()
        if isinstance(value, Node) or value.is_literal or value.kind not in ("string", "any"):
            raise self.fail(f"{name} needs a string property as its first argument")
        self.expect(",")
        if self.tok.kind != "STRING":
            raise self.fail(f"{name} needs a string literal as its second argument")
        needle = self.tok.value
        self.i += 1
        self.expect(")")
        return StringFunction(name, value, needle)

    def intersects(self) -> Intersects:
        self.i += 1
        self.expect("(")
        geo = None
        while True:
            if self.tok.kind != "NAME":
                raise self.fail("expected area=geography'...'")
            arg = self.tok.text.lower()
            self.i += 1
            self.expect("=")
            if arg == "area":
                if self.tok.kind != "GEO":
                    raise self.fail("area must be a geography'SRID=4326;...' literal")
                geo = self.tok
                self.i += 1
            elif arg == "location":
                if not (self.tok.kind == "NAME" and self.tok.text == "Footprint"):
                    raise self.fail("location must be Footprint")
                self.i += 1
            else:
                raise self.fail(f"unknown Intersects argument {arg!r}")
            if self.punct(")"):
                break
            self.expect(",")
        if geo is None:
            raise self.fail("Intersects needs an area")
        geometry, wkt = parse_geography(geo.value)
        return Intersects(geometry, wkt)


def parse_geography(body: str):
    """The shapely geometry of ``SRID=4326;POLYGON((...))``, validated as CDSE does."""
    m = re.match(r"^\s*SRID\s*=\s*(\d+)\s*;(.*)$", body, re.S | re.I)
    if m is None:
        raise FilterError("Invalid geography literal: expected SRID=4326;<WKT>")
    if m.group(1) != "4326":
        raise FilterError(f"Invalid geography literal: SRID {m.group(1)} is not supported, use 4326")
    wkt = m.group(2).strip()
    import shapely
    from shapely import wkt as shapely_wkt

    try:
        geometry = shapely_wkt.loads(wkt)
    except (shapely.errors.ShapelyError, ValueError) as exc:
        raise FilterError(f"Invalid geometry {wkt[:80]!r}: {exc}") from exc
    if geometry.geom_type not in ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                                  "MultiPolygon"):
        raise FilterError(f"Invalid geometry: {geometry.geom_type} is not supported")
    if geometry.is_empty:
        raise FilterError("Invalid geometry: empty")
    if not geometry.is_valid:
        raise FilterError(f"Invalid geometry: {shapely.is_valid_reason(geometry)}")
    minx, miny, maxx, maxy = geometry.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise FilterError("Invalid geometry: coordinates must be longitude in [-180, 180] and "
                          "latitude in [-90, 90], in that order")
    return geometry, wkt


def parse_filter(text: str) -> Node:
    return Parser(text).parse()
