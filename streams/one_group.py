"""One Faust app for all the roles of a worker process (``SLUICE_SINGLE_GROUP=true``).

By default each role is its own app: its own consumer group, consumer thread, fetch loop and producer. An
exact hit crosses three of them (admit, meter, settle), and a busy worker's CPU goes mostly to per-fetch and
per-produce work in Python, not to the stages (bench/hot_path_profile.py). With one app per process, one
consumer fetches every role's partitions and one producer batches every role's output: at 400 exact hits/s a
worker used 2.0 CPU ms per answer instead of 2.7 and kept up (p50 44-79 ms), where per-role apps fell seconds
behind.

The price is Faust's rule that every member of an app's group runs the same agents and tables: every worker
process of the deployment must run the same roles, and the mode must not be mixed with per-role workers on the
same topics (both would read every request). ``check_no_mixed_modes`` refuses to start a worker when the other
mode's groups have live members. Tables keep the changelog topics of their per-role apps
(``<prefix>-<role>-<table>-changelog``), so switching modes keeps their state; input offsets belong to the
groups, and a new group starts from the beginning of its topics (stages are idempotent per request id).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka.errors import KafkaError

from streams.kafka_clients import admin_client
from streams.settings import Settings

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 10.0


class RoleView:
    """The shared app as one role registers on it: tables get the changelog topic of the role's own app."""

    def __init__(self, app: faust.App, settings: Settings, role: str) -> None:
        self._app = app
        self._changelog_prefix = f"{settings.topic_prefix}-{role}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)

    def Table(self, name: str, **kwargs: Any) -> Any:
        _name_changelogs_by_role()
        self._app.sluice_changelog_prefix = self._changelog_prefix
        try:
            return self._app.Table(name, **kwargs)
        finally:
            self._app.sluice_changelog_prefix = None


def _name_changelogs_by_role() -> None:
    """Faust names a table's changelog ``<app id>-<table>-changelog`` when the table is made (the table manager
    indexes it then): made through a RoleView, the role's app id takes the place of the shared app's."""
    from faust.tables.base import Collection

    original = Collection._changelog_topic_name
    if getattr(original, "sluice_by_role", False):
        return

    def topic_name(table: Any) -> str:
        name = table.__dict__.get("_sluice_changelog")
        if name is None:
            prefix = getattr(table.app, "sluice_changelog_prefix", None)
            name = f"{prefix}-{table.name}-changelog" if prefix else original(table)
            table.__dict__["_sluice_changelog"] = name
        return str(name)

    topic_name.sluice_by_role = True  # type: ignore[attr-defined]
    Collection._changelog_topic_name = topic_name


def other_mode_groups(settings: Settings, roles: list[str]) -> list[str]:
    """The groups that would read the same topics as this worker in the other mode."""
    other = settings.with_overrides(single_group=not settings.single_group)
    return list(dict.fromkeys(other.group(role) for role in roles))


async def live_groups(settings: Settings, groups: list[str]) -> list[str]:
    """Those of ``groups`` that have members now."""
    async with admin_client(settings) as admin:
        described = await admin.describe_consumer_groups(groups)
    live = []
    for response in described:
        for group in response.groups:
            # (error_code, group, state, protocol_type, protocol, members, ...)
            if group[0] == 0 and group[5]:
                live.append(str(group[1]))
    return live


async def check_no_mixed_modes(settings: Settings, roles: list[str]) -> None:
    """Refuse to start next to live workers of the other mode: both would process every request."""
    try:
        live = await asyncio.wait_for(live_groups(settings, other_mode_groups(settings, roles)), CHECK_TIMEOUT_S)
    except (TimeoutError, KafkaError, OSError) as exc:  # no broker yet: the worker waits for it anyway
        log.warning("could not check for workers in the other SLUICE_SINGLE_GROUP mode: %r", exc)
        return
    if live:
        mode = "per-role groups" if settings.single_group else "SLUICE_SINGLE_GROUP"
        raise RuntimeError(
            f"consumer group(s) {', '.join(live)} have live members: workers in the other mode ({mode}) read the "
            "same topics; run every worker with the same SLUICE_SINGLE_GROUP"
        )
