"""Errors a user can cause. The CLI prints them as one line and exits 2. `UserError` and
`ParameterError` live in the bottom layer (``nas.core.errors``) so that ``lut`` and ``supernets`` raise them too."""
from nas.core.errors import ParameterError, UserError

__all__ = ["ParameterError", "RecipeChangeError", "UserError"]


class RecipeChangeError(ParameterError):
    """A resume asked to change a field that decides what the run computes (not where or how fast
    it runs): continuing under another recipe would silently mix two experiments."""

    def __init__(self, parameter: str, value, recorded):
        self.recorded = recorded
        super().__init__(parameter, value, "")

    def _say(self, name: str) -> str:
        return (f"{name} {self.value} differs from the run's {self.recorded}: a resume continues the run's recipe; "
                f"leave {name} out, or start a new run")

    def as_flag(self, flags: dict[str, str]) -> str:
        flag = self.flag(flags)
        return (f"--resume continues the run's recipe: {flag} {self.value} differs from its {self.recorded}; "
                f"drop {flag}, or start a new run (--name / --out)")
