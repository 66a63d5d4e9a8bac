"""llama-server's command-line flags as data: one table, four parts, every flag categorised.

`ALL_FLAGS` is the table (see spec.FlagSpec); `resolve` turns a command line and an environment
into typed settings plus notices, raising ConfigError for bad or refused flags.
"""

from __future__ import annotations

from service.cli_flags.parser import ConfigError, ResolvedFlags, build_parser, resolve
from service.cli_flags.spec import Category, FlagSpec
from service.cli_flags.table_compat import ACCEPTED_FLAGS, REFUSED_FLAGS, WEB_UI_FLAGS
from service.cli_flags.table_limits import LIMIT_FLAGS
from service.cli_flags.table_model import MODEL_FLAGS
from service.cli_flags.table_sampling import SAMPLING_FLAGS
from service.cli_flags.table_server import SERVER_FLAGS
from service.cli_flags.table_speculative import SPECULATIVE_FLAGS

ALL_FLAGS: tuple[FlagSpec, ...] = (
    MODEL_FLAGS + SAMPLING_FLAGS + SERVER_FLAGS + LIMIT_FLAGS + SPECULATIVE_FLAGS + WEB_UI_FLAGS
    + ACCEPTED_FLAGS
    + REFUSED_FLAGS
)

__all__ = [
    "ALL_FLAGS",
    "Category",
    "ConfigError",
    "FlagSpec",
    "ResolvedFlags",
    "build_parser",
    "resolve",
]
