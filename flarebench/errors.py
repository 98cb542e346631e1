"""Errors a user can cause. The CLI turns each into one line on stderr and exit code 2."""


class FlarebenchError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(FlarebenchError):
    """An invalid option, value, or config file."""


class DataError(FlarebenchError):
    """A dataset that is missing, corrupt or unusable."""


class DecodeError(FlarebenchError):
    """Message bytes that are malformed, truncated or inconsistent with their header."""


class ResultsError(FlarebenchError):
    """A run directory that cannot be written, read or resumed."""
