"""Errors the user sees as one line, each carrying the exit status it leads to.

Every failure we expect (bad input, rejected credentials, an unreachable service) is one
of these; anything else is a bug and may show a traceback. The command line logs the
message and exits with ``exit_status``; a Python caller catches :class:`DemError` (or a
subclass) and finds the same status on it. An error raised part-way through a run carries
what the run had done so far in ``result`` (a :class:`cdse_dem.report.Result`), else None.
"""




EXIT_OK = 0
EXIT_FAILED = 1  # some tiles or geocells failed
EXIT_USAGE = 2  # usage, configuration or credential error: nothing attempted
EXIT_BUDGET = 3  # stopped by the time budget: a re-run resumes
EXIT_INTERRUPTED = 130


class DemError(Exception):
    """A failure explained in one line; ``exit_status`` says how the run ends."""

    exit_status = EXIT_FAILED
    result = None  # the run's Result so far, when the error ended a run part-way (see job.py)


class UsageError(DemError):
    """The request itself is wrong (options, files, tile list): nothing was attempted."""

    exit_status = EXIT_USAGE


class ConfigError(UsageError):
    """configuration.xml is missing, malformed or invalid against configuration.xsd."""


class InputError(UsageError):
    """A tile list, tile id or SAFE name cannot be used."""


class CredentialError(UsageError):
    """Credentials are missing, unreadable, or cannot be stored."""


class AuthRejected(CredentialError):
    """CDSE said no to the user name or password."""


class ServiceError(DemError):
    """CDSE could not be reached, or answered something unusable, after retries."""


class AccessDenied(DemError):
    """CDSE refuses the account this data (403 DAT-ZIP-608 and the like)."""


class BudgetExhausted(DemError):
    """The time budget (``--max-minutes`` / the token refresh window) ran out."""

    exit_status = EXIT_BUDGET


class DiskFull(DemError):
    """The disk (or quota) of an output folder is full: retrying will not help."""


class Interrupted(DemError):
    """The run was asked to stop (the ``stop`` event, Ctrl-C, SIGTERM) while this was under way.

    A library call never raises it to its caller: the run ends, and its result says
    ``interrupted`` (exit status 130). Inside, it unwinds a search, a login or a download.
    """

    exit_status = EXIT_INTERRUPTED
