"""Roles a process can run, and the worker that runs one or more of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust

from streams import gc_policy
from streams.agents import admit, cache, cloud_worker, local_worker, meter
from streams.app import create_app
from streams.one_group import RoleView, check_no_mixed_modes
from streams.settings import Settings
from streams.stages.shortcut import ExactShortcut
from workers.local import gil_interval

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
    apps: dict[str, faust.App] = {}
    stages: dict[str, Any] = {}
    shared = create_app(settings, "worker") if settings.single_group else None  # see streams/one_group.py
    for role in dict.fromkeys(roles):  # keep order, drop repeats
        if shared is None:
            app = create_app(settings, role)
            stages[role] = ROLES[role](app, settings)
        else:
            app = shared
            stages[role] = ROLES[role](RoleView(shared, settings, role), settings)
        apps[role] = app
    if settings.admit_shortcut and "admit" in stages and "cache" in stages:
        lookup = stages["cache"]
        owns = cache.exact_owner(apps["cache"], lookup.state.exact, settings.partitions)
        stages["admit"].shortcut = ExactShortcut(lookup, owns)
    return list(dict.fromkeys(apps.values()))


def run_worker(settings: Settings, roles: list[str]) -> None:
    """Run the roles' apps in this process until SIGINT/SIGTERM (blocks)."""
    from streams.logging_setup import install

    install(settings)  # before the apps log anything (idempotent: the CLI may have installed it already)
    check_loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the loop Faust's worker gets
    try:
        check_loop.run_until_complete(check_no_mixed_modes(settings, list(dict.fromkeys(roles))))
    finally:
        check_loop.close()
    apps = build_apps(settings, roles)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    gc_policy.freeze_startup_objects()
    if settings.gc_freeze_survivors:
        gc_policy.freeze_survivors(settings.gc_sweep_interval_s)
    # A short GIL switch interval while a local model generates (workers/local/gil_interval.py).
    gil_interval.configure(settings.gil_switch_interval_s)
    worker = _Worker(
        *apps,
        loglevel=settings.log_level.upper(),
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()


class _Worker(faust.Worker):
    """Faust's worker, starting the roles' apps together instead of one after another.

    An app's start waits until its consumer group has assigned it partitions and its tables are recovered. One
    after another, a worker joining under load made the five groups rebalance in turn, each stalling its role's
    partitions on the workers already running (and a start took the sum of five joins); together, the groups
    rebalance at once (bench/restart_bench.py)."""

    async def on_start(self) -> None:
        await super().on_start()
        await asyncio.gather(*(child.maybe_start() for child in self._children if child is not None))
