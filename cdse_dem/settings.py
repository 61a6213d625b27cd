"""What the run was asked for: paths of the tool home, command-line and configuration.xml precedence.

Where the tool's own folders are.

The tool home is the folder of the entry script, as users of the reference tool expect
(``configuration/``, ``auxiliary/``, ``credentials/``, ``output_dir/`` beside it). Installed
with pip (no checkout around the package), it is the current folder. ``CDSE_DEM_HOME``
moves all four at once, which is how tests keep user data out of the source tree.

What a run will do, decided from the command line and the configuration file.

The precedence is the reference tool's, kept exactly because scripts rely on it:
``--config`` (bare: ``configuration/configuration.xml``) wins over every other data
option; ``--t`` wins over ``--i``; the tiles of ``--aoi`` and ``--point`` (or the file's
``<Area>``) are added to theirs; with none of them, ``configuration/input_tiles.txt`` is read
(the reference tool announced that but never did it). ``--reset`` is handled before all
of this by the entry script.

configuration.xml: read, checked against configuration.xsd, turned into settings.

An invalid file stops the run before any login, with ``file:line: what is wrong``.
``DEFAULT`` works element by element; relative paths are taken from the file's folder,
so a configuration can travel with its tile list.
"""

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cdse_dem.errors import ConfigError, UsageError
from cdse_dem.fsutil import open_input, read_input

KML_NAME = "S2A_OPER_GIP_TILPAR_MPC__20151209T095117_V20150622T000000_21000101T000000_B00.kml"
JSON_NAME = "dict_filename_dem_id.json"


class Coverage(StrEnum):
    """Which cells a tile gets (``--coverage``)."""

    SEN2COR = "sen2cor"  # the true cells and Sen2Cor's rectangle: a complete DEM for Sen2Cor
    FOOTPRINT = "footprint"  # the true cells only: the reference tool's set, for other processors


class Transfer(StrEnum):
    AUTO = "auto"
    NODES = "nodes"
    ZIP = "zip"



def tool_home() -> Path:
    env = os.environ.get("CDSE_DEM_HOME")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "cdse_copernicus_dem_downloader.py").is_file() else Path.cwd()


def configuration_dir() -> Path:
    return tool_home() / "configuration"


def default_configuration_file() -> Path:
    return configuration_dir() / "configuration.xml"


def default_tiles_file() -> Path:
    return configuration_dir() / "input_tiles.txt"


def auxiliary_dir() -> Path:
    return tool_home() / "auxiliary"


def default_kml_path() -> Path:
    return auxiliary_dir() / KML_NAME


MAX_KML_BYTES = 512 * 1024 * 1024  # the official tiling KML is 109 MB


def kml_path_of(kml: str | os.PathLike | None) -> Path | None:
    """The KML of a run's ``--kml`` option, which must be a regular file no larger than a KML can
    be (the index reads it later); without the option, auxiliary/'s KML when it is there; None:
    footprints are computed."""
    if not kml:
        default = default_kml_path()
        return default if default.is_file() else None
    path = expand_user(kml, "tiling KML")
    with open_input(path, "tiling KML", UsageError, limit=MAX_KML_BYTES):
        pass
    return path


def credentials_dir() -> Path:
    return tool_home() / "credentials"


def default_output_dir() -> Path:
    return tool_home() / "output_dir"


def expand_user(text: str | Path, what: str, error: type[Exception] | None = None) -> Path:
    """``~`` and ``~user`` expanded, or ``error`` (UsageError by default) when there is no such home.

    ``os.path.expanduser`` turns ``~/x`` into ``/x`` when HOME is set but empty, and leaves
    ``~nobody/x`` as a relative folder named ``~nobody``: both would write somewhere the user
    never meant. A value that is no path (None, bytes, a number) or holds a NUL (no file name can)
    is refused in one line too: it comes from a caller of the API as often as from a command line.
    """
    error = error or UsageError
    try:
        text = os.fspath(text)
    except TypeError:
        raise error(f"the {what} must be a path (str or os.PathLike), not {type(text).__name__}") from None
    if not isinstance(text, str):
        raise error(f"the {what} must be a path as str or os.PathLike, not {type(text).__name__}")
    if "\0" in text:
        raise error(f"{text!r}: cannot use it as the {what} (a path cannot hold a NUL character)")
    if not text.startswith("~"):
        return Path(text)
    user = text[1:].split("/", 1)[0]
    if not user and "HOME" in os.environ and not os.environ["HOME"].strip():
        problem = "HOME is empty, so '~' names no folder"
    else:
        expanded = os.path.expanduser(text)
        if not expanded.startswith("~"):
            return Path(expanded)
        problem = f"no user {user!r} is known, so '~{user}' names no folder" if user else "no home folder is known"
    raise error(f"{text}: cannot use it as the {what} ({problem})")


COLLECTIONS = ("CCM", "COP-DEM")
# CCM's nine deliveries, each a full set of cells; the newest is the default.
DELIVERIES = ("2019_1", "2019_2", "2020_1", "2020_2", "2021_1", "2021_2", "2022_1", "2023_1", "2024_1")
RESOLUTIONS = (30, 90)
MODELS = ("DGED", "DTED")
COVERAGES = tuple(c.value for c in Coverage)  # --coverage: which geocells a tile gets (plain strings for argparse)

DEFAULT_COLLECTION = "CCM"
DEFAULT_DELIVERY = "2024_1"
DEFAULT_RESOLUTION = 90
DEFAULT_MODEL = "DGED"
DEFAULT_COVERAGE = Coverage.SEN2COR.value  # what Sen2Cor asks for: anything less may leave it on flat terrain

# CDSE lets an account download over 4 connections at once; more workers only get 429s back.
CDSE_CONNECTION_LIMIT = 4
# Above this --workers is refused: each worker holds a thread, a pooled connection and a 1 MiB
# buffer, and 16 is already four times what CDSE serves at once (room for a raised quota).
MAX_WORKERS = 16

# The data options that --config overrides (dest names of the argparse namespace).
DATA_OPTIONS = {"collection": "--collection", "delivery": "--delivery", "resolution": "--r",
                "model": "--m", "output": "--o", "input": "--i", "tile": "--t", "aoi": "--aoi", "point": "--point"}


@dataclass(frozen=True)
class Settings:
    """The data side of a run: which DEM, for which tiles, into which folder."""

    origin: str  # "Command Line" or "Configuration File"
    collection: str
    delivery: str
    resolution: int
    model: str
    output_dir: Path
    tile_args: tuple[str, ...]  # from --t, in order
    tiles_file: Path | None  # read when tile_args is empty
    ignored: tuple[str, ...] = ()  # options given but overridden by --config
    areas: tuple = ()  # --aoi values, or the configuration's Area (an areas.Area): their tiles are added
    points: tuple[str, ...] = ()  # --point values, LAT,LON


def decide(args, config: "ConfigFile | None") -> Settings:
    """Settings from the parsed arguments, and from ``config`` when --config was given."""
    if config is not None:
        ignored = tuple(flag for dest, flag in DATA_OPTIONS.items() if getattr(args, dest, None))
        areas = (config.area,) if config.area is not None else ()
        return Settings(
            origin="Configuration File",
            collection=config.collection or DEFAULT_COLLECTION,
            delivery=config.delivery or DEFAULT_DELIVERY,
            resolution=config.resolution or DEFAULT_RESOLUTION,
            model=config.model or DEFAULT_MODEL,
            output_dir=config.output_dir or default_output_dir(),
            tile_args=(),
            tiles_file=config.tiles_file or (None if areas else default_tiles_file()),
            ignored=ignored,
            areas=areas,
        )
    tile_args = tuple(args.tile or ())
    areas, points = tuple(getattr(args, "aoi", None) or ()), tuple(getattr(args, "point", None) or ())
    if tile_args:
        tiles_file = None
    elif args.input:
        tiles_file = expand_user(args.input, "tile list file")
    else:  # the default list only when nothing else names a tile
        tiles_file = None if areas or points else default_tiles_file()
    return Settings(
        origin="Command Line",
        collection=args.collection or DEFAULT_COLLECTION,
        delivery=args.delivery or DEFAULT_DELIVERY,
        resolution=args.resolution or DEFAULT_RESOLUTION,
        model=args.model or DEFAULT_MODEL,
        output_dir=expand_user(args.output, "output folder") if args.output else default_output_dir(),
        tile_args=tile_args,
        tiles_file=tiles_file,
        ignored=("--i",) if tile_args and args.input else (),
        areas=areas,
        points=points,
    )


SCHEMA_NAME = "configuration.xsd"
_ELEMENTS = ("Collection", "Delivery_Id", "Resolution", "Elevation_Model", "Tiles_Input_File",
             "DEM_Output_Directory", "Area")


@dataclass(frozen=True)
class ConfigFile:
    """The settings a configuration file fixes; None where it says DEFAULT (or omits Delivery_Id)."""

    path: Path
    collection: str | None
    delivery: str | None
    resolution: int | None
    model: str | None
    tiles_file: Path | None
    output_dir: Path | None
    area: object = None  # an areas.Area, read and checked with the file


def _schema_path() -> Path:
    # Shipped inside the package, so an installed tool validates too; configuration/ holds
    # the same file for editors that follow xsi:noNamespaceSchemaLocation.
    return Path(__file__).resolve().parent / "data" / SCHEMA_NAME


MAX_CONFIG_BYTES = 1024 * 1024  # a configuration file is a few hundred bytes


def load_config(path: Path) -> ConfigFile:
    from lxml import etree  # here, not at the top: the command line's --help reads this module's choices

    data = read_input(path, "configuration file", ConfigError, limit=MAX_CONFIG_BYTES)

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or 1
        message = exc.msg.split(", line ")[0] if exc.msg else "malformed XML"
        raise ConfigError(f"{path}:{line}: malformed XML: {message}") from None

    if root.getroottree().docinfo.doctype:
        # Not needed by any configuration, and lxml's schema validator cannot handle the entity
        # references it allows (an internal error, not a message): refused before validation.
        line = data[: data.find(b"<!DOCTYPE")].count(b"\n") + 1 if b"<!DOCTYPE" in data else 1
        raise ConfigError(f"{path}:{line}: a DOCTYPE (DTD, entity declarations) is not allowed in a configuration file")

    schema = etree.XMLSchema(etree.parse(str(_schema_path())))
    try:
        valid = schema.validate(root)
    except etree.XMLSchemaValidateError as exc:
        raise ConfigError(f"{path}:1: cannot be checked against {SCHEMA_NAME} ({exc})") from None
    if not valid:
        error = schema.error_log.filter_from_errors()[0]
        raise ConfigError(f"{path}:{error.line}: {_plain(error.message)}")

    option = root.find("DEM_Option")
    values = {name: _text(option, name) for name in _ELEMENTS}
    base = path.resolve().parent
    return ConfigFile(
        path=path,
        collection=values["Collection"],
        delivery=values["Delivery_Id"],
        resolution=int(values["Resolution"]) if values["Resolution"] else None,
        model=values["Elevation_Model"],
        tiles_file=_relative_to(base, values["Tiles_Input_File"], path, "Tiles_Input_File"),
        output_dir=_relative_to(base, values["DEM_Output_Directory"], path, "DEM_Output_Directory"),
        area=_area(option.find("Area"), values["Area"], base, path),
    )


def _area(element, value: str | None, base: Path, path: Path):
    """The Area element read as --aoi reads its value (a file relative to the configuration's folder);
    ConfigError at its line when it is not usable."""
    if value is None:
        return None
    from cdse_dem.areas import area_of  # shapely: only for a configuration that names an area

    try:
        return area_of(value, base=base)
    except UsageError as exc:
        raise ConfigError(f"{path}:{element.sourceline}: Area: {exc}") from None


def _text(option, name: str) -> str | None:
    element = option.find(name)
    if element is None:
        return None
    value = (element.text or "").strip()
    return None if value == "DEFAULT" else value


def _relative_to(base: Path, value: str | None, path: Path, element: str) -> Path | None:
    if value is None:
        return None
    candidate = expand_user(value, f"{element} of {path}", ConfigError)
    return candidate if candidate.is_absolute() else base / candidate


def _plain(message: str) -> str:
    """lxml's schema messages, without the schema-internal jargon users cannot act on."""
    message = message.replace("Element '", "element '").strip()
    return message.rstrip(".")
