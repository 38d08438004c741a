"""Roles a process can run, and the worker that runs one or more of them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust

from streams.agents import admit, cache, cloud_worker, local_worker, meter
from streams.app import create_app
from streams.settings import Settings

Register = Callable[[faust.App, Settings], Any]

ROLES: dict[str, Register] = {
    "admit": admit.register,
    "cache": cache.register,
    "local": local_worker.register,
    "cloud": cloud_worker.register,
    "meter": meter.register,
}


def build_apps(settings: Settings, roles: list[str]) -> list[faust.App]:
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}")
    apps = []
    for role in dict.fromkeys(roles):  # keep order, drop repeats
        app = create_app(settings, role)
        ROLES[role](app, settings)
        apps.append(app)
    return apps


def run_worker(settings: Settings, roles: list[str]) -> None:
    """Run the roles' apps in this process until SIGINT/SIGTERM (blocks)."""
    from streams.logging_setup import install

    install(settings)  # before the apps log anything (idempotent: the CLI may have installed it already)
    apps = build_apps(settings, roles)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    worker = faust.Worker(
        *apps,
        loglevel=settings.log_level.upper(),
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()
