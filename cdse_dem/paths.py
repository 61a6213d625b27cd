"""Where the tool's own folders are.

The tool home is the folder of the entry script, as users of the reference tool expect
(``configuration/``, ``auxiliary/``, ``credentials/``, ``output_dir/`` beside it). Installed
with pip (no checkout around the package), it is the current folder. ``CDSE_DEM_HOME``
moves all four at once, which is how tests keep user data out of the source tree.
"""

import os
from pathlib import Path

KML_NAME = "S2A_OPER_GIP_TILPAR_MPC__20151209T095117_V20150622T000000_21000101T000000_B00.kml"
JSON_NAME = "dict_filename_dem_id.json"


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


def credentials_dir() -> Path:
    return tool_home() / "credentials"


def default_output_dir() -> Path:
    return tool_home() / "output_dir"


def expand_user(text: str | Path, what: str, error: type[Exception] | None = None) -> Path:
    """``~`` and ``~user`` expanded, or ``error`` (UsageError by default) when there is no such home.

    ``os.path.expanduser`` turns ``~/x`` into ``/x`` when HOME is set but empty, and leaves
    ``~nobody/x`` as a relative folder named ``~nobody``: both would write somewhere the user
    never meant.
    """
    text = os.fspath(text)
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
    if error is None:
        from cdse_dem.errors import UsageError

        error = UsageError
    raise error(f"{text}: cannot use it as the {what} ({problem})")
