"""User-facing errors: the CLI prints these as one line and exits non-zero, never with a traceback."""


class VideolangError(Exception):
    """Base class for errors caused by input (files, configs, arguments) rather than by a bug."""


class ConfigError(VideolangError):
    """A config file or `--set` override is invalid."""


class ManifestError(VideolangError):
    """A manifest failed validation; `problems` holds every `FILE:LINE: FIELD: message` line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        head = self.problems[0] if self.problems else "invalid manifest"
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        super().__init__(head + more)
