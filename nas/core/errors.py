"""Errors a user can cause, for every layer (``lut`` raises them too). The CLI prints them as one
line and exits 2.

`UserError` is the one root: every error a user can cause derives from it (a bad file's
`ConfigError`/`TableError`, an unknown device or backend, a table that lacks ops, a write the
disk refused), so the CLI catches one type, and a Ray worker reports any of them as the line a
local run prints. The specific classes also keep the builtin base they always had (``ValueError``,
``LookupError``, ``OSError``), for callers that catch those."""
from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


class OneLineError(UserError, ValueError):
    """An error in a user's file, as one line of at most ``MAX_LENGTH`` characters whatever value
    the file holds: the middle of a longer message (a value echoed whole) gives way, the field in
    front and the advice at the end stay."""

    MAX_LENGTH = 400

    def __init__(self, message: str):
        message = " ".join(str(message).split("\n"))
        if len(message) > self.MAX_LENGTH:
            message = message[:250] + " [...] " + message[-(self.MAX_LENGTH - 257):]
        super().__init__(message)


class ConfigError(OneLineError):
    """A config or search space is invalid; the message names the field."""


class ParameterError(UserError):
    """A bad value of a library parameter, named as the library names it (``study_name``). The
    CLI says it with the flag that sets that parameter (``--study``): `as_flag`."""

    def __init__(self, parameter: str, value, problem: str):
        self.parameter, self.value, self.problem = parameter, value, problem
        super().__init__(self._say(parameter))

    def as_flag(self, flags: dict[str, str]) -> str:
        """The message with the flag of the parameter (`flags`, else ``--parameter-name``)."""
        return self._say(self.flag(flags))

    def flag(self, flags: dict[str, str]) -> str:
        return flags.get(self.parameter, "--" + self.parameter.replace("_", "-"))

    def _say(self, name: str) -> str:
        # a parameter left unset (None) that this case needs is named without a value
        return f"{name} {self.value}: {self.problem}" if self.value is not None else f"give {name}: {self.problem}"


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to about `limit` characters: messages name a value, they do not echo a file."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
