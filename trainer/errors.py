"""Errors meant for people: what was wrong, where, and what to do. Never shown as a traceback."""


class UserError(Exception):
    """A mistake in the user's input or setup. `where` names the place (file:line, field, rank, host)."""

    kind = "bad_input"

    def __init__(self, what: str, *, where: str = "", fix: str = "", kind: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        if kind:
            self.kind = kind
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head}\n  fix: {self.fix}" if self.fix else head


class DataError(UserError):
    """A dataset row or file that cannot be used."""


class ConfigError(UserError):
    """An invalid setting (ZeRO stage, batch sizes, model reference...)."""
