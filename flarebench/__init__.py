"""flarebench: accuracy per communicated bit for communication-efficient federated learning."""

__version__ = "0.1.0"

from .config import RunConfig, make_config  # noqa: E402
from .errors import ConfigError, DataError, DecodeError, FlarebenchError, ResultsError  # noqa: E402
from .results import load_run  # noqa: E402
from .launch import run  # noqa: E402
from .runner import RunResult, setup  # noqa: E402

__all__ = [
    "RunConfig", "make_config", "run", "setup", "RunResult", "load_run",
    "FlarebenchError", "ConfigError", "DataError", "DecodeError", "ResultsError",
]
