"""Push mode: the whole exposition to a Prometheus Pushgateway after each pass (a failure is logged once per
change, never raised)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from loguru import logger
from prometheus_client import CollectorRegistry

from daemon.config import PushConfig
from daemon.core.redact import REDACTOR


class Pusher:
    def __init__(self, config: PushConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.registry = registry
        self._ok: bool | None = None

    def push(self) -> None:
        cfg = self.config
        if cfg.url is None:
            return
        from prometheus_client.exposition import basic_auth_handler, push_to_gateway

        def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                    data: bytes) -> Callable[[], None]:
            if cfg.username is None:
                from prometheus_client.exposition import default_handler

                return default_handler(url, method, timeout, headers, data)
            password = cfg.password.get_secret_value() if cfg.password is not None else ""
            return basic_auth_handler(url, method, timeout, headers, data, cfg.username, password)

        # $DYNO (worker.1) is stable across Heroku restarts; the host name there is a fresh UUID each time,
        # which would leave a dead group per restart in the Pushgateway
        instance = cfg.instance or os.environ.get("DYNO") or socket.gethostname()
        try:
            push_to_gateway(cfg.url, job=cfg.job, registry=self.registry, timeout=10,
                            grouping_key={"instance": instance}, handler=handler)
            if self._ok is not True:
                logger.info("pushing metrics to {} (job {}, instance {})", cfg.url, cfg.job, instance)
            self._ok = True
        except Exception as exc:
            if self._ok is not False:  # the first failure and every change, not every pass
                logger.warning("push to the Pushgateway {} failed: {}", cfg.url, REDACTOR(str(exc)))
            self._ok = False
