"""Asking the user on the terminal: user name, password twice, a yes/no confirmation.

Prompts go to stderr and passwords through ``getpass`` (the terminal, echo off), so that
stdout can be redirected without hiding a question or leaking an answer. The checks are
pure functions so that the rules (an e-mail address, two equal non-empty passwords) are
stated once.
"""

from __future__ import annotations

import getpass
import sys

from cdse_dem.errors import CredentialError

USERNAME_PROMPT = "Enter your username: "
PASSWORD_PROMPT = "Enter your password: "
PASSWORD_AGAIN_PROMPT = "Re-enter your password: "
TOTP_PROMPT = "The CDSE session needs a new login: enter a fresh two-factor code: "
MAX_ATTEMPTS = 5


def username_problem(name: str) -> str | None:
    """Why ``name`` cannot be a CDSE user name (the account's e-mail address), or None."""
    if not name:
        return "The user name cannot be empty."
    if "@" not in name:
        return "The user name is the e-mail address of your CDSE account (it contains '@')."
    if any(ch.isspace() for ch in name):
        return "The user name cannot contain spaces."
    return None


def password_problem(first: str, second: str) -> str | None:
    """Why the two typed passwords cannot be used, or None."""
    if not first:
        return "The password cannot be empty."
    if first != second:
        return "The passwords do not match, please try again."
    return None


def read_line(prompt: str) -> str:
    """One line typed by the user after ``prompt`` (on stderr); CredentialError at end of input."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        sys.stderr.write("\n")
        raise CredentialError("no answer was typed (end of input)")
    return line.rstrip("\r\n")


def read_secret(prompt: str) -> str:
    """A secret typed without echo; CredentialError at end of input."""
    try:
        return getpass.getpass(prompt)
    except EOFError:
        sys.stderr.write("\n")
        raise CredentialError("no password was typed (end of input)") from None


def tell(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def ask_username() -> str:
    for _ in range(MAX_ATTEMPTS):
        name = read_line(USERNAME_PROMPT).strip()
        problem = username_problem(name)
        if problem is None:
            return name
        tell(problem)
    raise CredentialError(f"no valid user name after {MAX_ATTEMPTS} attempts")


def ask_password() -> str:
    for _ in range(MAX_ATTEMPTS):
        first = read_secret(PASSWORD_PROMPT)
        second = read_secret(PASSWORD_AGAIN_PROMPT) if first else ""
        problem = password_problem(first, second)
        if problem is None:
            return first
        tell(problem)
    raise CredentialError(f"no confirmed password after {MAX_ATTEMPTS} attempts")


def confirm(question: str) -> bool:
    """True only for an explicit yes: the default of a destructive question is no."""
    return read_line(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def read_totp() -> str:
    """A fresh two-factor code typed by the user (a run longer than the refresh window)."""
    return read_secret(TOTP_PROMPT)
