"""What every configuration section is built from: the strict base model (unknown keys rejected, values
frozen), the field types (positive durations, secrets masked from the moment they are read, table names), the
rule for database names, and how a field's path is spelled in error lines.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, SecretStr

from daemon.core.durations import parse_duration
from daemon.core.names import parse_table
from daemon.core.redact import REDACTOR


def _positive(td: timedelta) -> timedelta:
    if td <= timedelta(0):
        raise ValueError("must be a positive duration")
    return td


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]


def _register_secret(secret: SecretStr) -> SecretStr:
    """Every secret the config holds is masked wherever it might appear later (logs, messages, events)."""
    REDACTOR.add(secret.get_secret_value())
    REDACTOR.add_url(secret.get_secret_value())
    return secret


#: A secret value (token, key, password, DSN): masked by the process-wide redactor from the moment it is read.
Secret = Annotated[SecretStr, AfterValidator(_register_secret)]


def _table_name(text: str) -> str:
    parse_table(text)  # raises ValueError saying what is wrong with the spelling
    return text


#: A table as `table` (in public), `schema.table`, or with SQL double quotes: `"my.schema"."we""ird"`.
TableSpec = Annotated[str, AfterValidator(_table_name)]
#: How table names are spelled, for field descriptions.
TABLE_NAME_SYNTAX = ('schema.table, or table for public; a part holding dots, quotes or spaces in SQL double '
                     'quotes, a quote doubled: "my.schema"."we""ird"')

#: A watched database's name (a metric label and a folder of the archive).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")


class StrictModel(BaseModel):
    """Base of every section: unknown keys are errors (likely typos), and a loaded configuration is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def dotted_path(loc: tuple[str, ...]) -> str:
    """A field's location as people write it: `databases[0].objectives.rpo`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out
