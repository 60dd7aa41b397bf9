"""Errors a user can cause. The CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


class ParameterError(UserError):
    """A bad value of a library parameter, named as the library names it (``study_name``). The
    CLI says it with the flag that sets that parameter (``--study``): `as_flag`."""

    def __init__(self, parameter: str, value, problem: str):
        self.parameter, self.value, self.problem = parameter, value, problem
        super().__init__(f"{parameter} {value}: {problem}")

    def as_flag(self, flags: dict[str, str]) -> str:
        """The message with the flag of the parameter (`flags`, else ``--parameter-name``)."""
        flag = flags.get(self.parameter, "--" + self.parameter.replace("_", "-"))
        return f"{flag} {self.value}: {self.problem}"
