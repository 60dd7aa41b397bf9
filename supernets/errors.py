"""Errors a user can cause, for every layer (``lut`` raises them too). The CLI prints them as one
line and exits 2.

`UserError` is the one root: every error a user can cause derives from it (a bad file's
`ConfigError`/`TableError`, an unknown device or backend, a table that lacks ops, a write the
disk refused), so the CLI catches one type, and a Ray worker reports any of them as the line a
local run prints. The specific classes also keep the builtin base they always had (``ValueError``,
``LookupError``, ``OSError``), for callers that catch those."""


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


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
