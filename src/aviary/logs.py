"""Aviary's own log records on stderr, beside uvicorn's and DBOS's, unless logging is configured already."""

from __future__ import annotations

import logging


def log_to_stderr() -> None:
    """Give the `aviary` logger a stderr handler at INFO, when neither it nor the root logger has one."""
    logger = logging.getLogger("aviary")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
