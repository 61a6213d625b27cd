"""configuration.xml: read, checked against configuration.xsd, turned into settings.

An invalid file stops the run before any login, with ``file:line: what is wrong``.
``DEFAULT`` works element by element; relative paths are taken from the file's folder,
so a configuration can travel with its tile list.
"""

from dataclasses import dataclass
from pathlib import Path

from cdse_dem.errors import ConfigError
from cdse_dem.fsutil import read_input
from cdse_dem.paths import expand_user

SCHEMA_NAME = "configuration.xsd"
_ELEMENTS = ("Collection", "Delivery_Id", "Resolution", "Elevation_Model", "Tiles_Input_File",
             "DEM_Output_Directory")


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


def _schema_path() -> Path:
    # Shipped inside the package, so an installed tool validates too; configuration/ holds
    # the same file for editors that follow xsi:noNamespaceSchemaLocation.
    return Path(__file__).resolve().parent / "data" / SCHEMA_NAME


def load_config(path: Path) -> ConfigFile:
    from lxml import etree

    data = read_input(path, "configuration file", ConfigError)

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
    )


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
