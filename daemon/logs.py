"""Loguru configured in one place: text for people, JSON lines for log drains; secrets always masked.

Standard-library loggers (APScheduler, botocore, urllib3) are routed into loguru so there is one stream.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import Any

from loguru import logger

from daemon.core.redact import REDACTOR


def _text_sink(message: Any) -> None:
    sys.stderr.write(REDACTOR(str(message)))
    sys.stderr.flush()


def _json_sink(message: Any) -> None:
    record = message.record
    # Mask before encoding: json.dumps escapes quotes and non-ASCII, which would hide a secret from the redactor.
    doc: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": REDACTOR(record["message"]),
        "logger": record["name"],
    }
    for key, value in record["extra"].items():
        if isinstance(value, str):
            doc[key] = REDACTOR(value)
        elif isinstance(value, int | float | bool):
            doc[key] = value
    if record["exception"] is not None:
        doc["exception"] = REDACTOR("".join(traceback.format_exception(*record["exception"])))
    sys.stderr.write(json.dumps(doc, default=str) + "\n")
    sys.stderr.flush()


class _InterceptHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    """(Re)configure the process-wide logger."""
    logger.remove()
    if fmt == "json":
        logger.add(_json_sink, level=level, format="{message}", backtrace=False, diagnose=False)
    else:
        logger.add(_text_sink, level=level, backtrace=False, diagnose=False, colorize=False,
                   format="{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {message}")
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
