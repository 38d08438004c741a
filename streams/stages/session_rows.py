"""Where the admit stage keeps each session's breaker and budget row, and when it forgets one.

Most sessions carry nothing a restart must keep: no budget limits (so their spend decides nothing) and a breaker
that never tripped (so there is no backoff streak). Their state is a minute of breaker windows. Those rows live
in this process's memory only; a row with limits or a trip lives in the changelog-backed table, as every row once
did. Writing each request's row to the changelog (~2.3 KB of JSON per request, and its deletion later) cost the
exact-hit path more than anything else the admit stage does: in bench/pipeline_bench.py --single-group (alternating
runs), keeping quiet rows in memory took p50 at 750 req/s from 31-35 ms to 20-23 ms and the answers at 1,000
req/s offered from 650-770/s to 910-975/s. The trade-off: after a crash or a rebalance such a session's breaker
windows start afresh, so a runaway loop gets at most one more window (``breaker_max_requests`` requests or
``breaker_max_cost_usd``) before it trips; budgets, reservations under limits and trips are never lost.

Forgetting: a row idle for ``session_idle_ttl_s`` goes (the table is scanned for them at most every tenth of the
TTL); a *quiet* one (:func:`is_quiet`) goes after the longest breaker window, oldest first from the order this
process wrote them, at O(forgotten) per message. Kept for a day, a new session per request held ~2.3 KB per
request (~100 GB a day at 500 req/s); now the rows plateau at the sessions of the last minute
(bench/state_bench.py). A row with a reservation still open is kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any

from streams.policy import session_breaker as breaker
from streams.settings import Settings


def quiet_ttl_ms(settings: Settings) -> int:
    """How long a quiet session is kept after its last request or usage record: the longest breaker window (at
    least a minute). Past it the row decides exactly as a fresh one would (its rate and cost windows are empty),
    except for a run of repeated prompts, which a loop slower than that is not."""
    windows = (settings.breaker_rate_window_s, settings.breaker_cost_window_s, settings.breaker_cooldown_s, 60.0)
    return int(max(windows) * 1000)


def is_ephemeral(saved: dict[str, Any]) -> bool:
    """A row that need not survive a restart: no budget limits, a breaker closed and never tripped."""
    br, bu = saved.get("breaker") or {}, saved.get("budget") or {}
    return (
        br.get("state", breaker.CLOSED) == breaker.CLOSED
        and not br.get("trips")
        and bu.get("soft_usd") is None
        and bu.get("hard_usd") is None
    )


def is_quiet(saved: dict[str, Any]) -> bool:
    """An ephemeral row with nothing reserved: forgetting it after the breaker windows changes no decision."""
    return is_ephemeral(saved) and not (saved.get("budget") or {}).get("reserved")


class SessionRows:
    def __init__(self, settings: Settings, table: MutableMapping[str, Any]) -> None:
        """``table``: the changelog-backed table of durable rows (a dict in tests)."""
        self.table = table
        self.memory: dict[str, dict[str, Any]] = {}  # ephemeral rows
        self.idle_ttl_ms = int(settings.session_idle_ttl_s * 1000)
        self.quiet_ttl_ms = quiet_ttl_ms(settings)
        # The table is scanned at most this often per partition: a tenth of the TTL, 10 s to 10 min.
        self.sweep_every_ms = min(600_000, max(10_000, self.idle_ttl_ms // 10))
        self._swept_at: dict[int, int] = {}
        self._written: dict[int, OrderedDict[str, int]] = {}  # per partition: ephemeral keys, oldest write first

    def get(self, key: str) -> dict[str, Any] | None:
        return self.memory.get(key) or self.table.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.memory or key in self.table

    def put(self, key: str, saved: dict[str, Any], partition: int | None) -> None:
        """Write a row where it belongs; a row that became durable (a trip) moves to the table, and one that
        stopped needing it (limits removed from the settings) leaves it."""
        if is_ephemeral(saved):
            if key not in self.memory and key in self.table:
                del self.table[key]
            self.memory[key] = saved
            if partition is not None:  # the write order: quiet-session expiry, and keep_partitions
                written = self._written.setdefault(partition, OrderedDict())
                written[key] = int(saved["at"])
                written.move_to_end(key)
        else:
            self.memory.pop(key, None)
            self.table[key] = saved

    def sweep(self, partition: int, now: int) -> int:
        """Forget the sessions of ``partition`` idle for longer than the TTL (quiet ones: ``quiet_ttl_ms``); how
        many were forgotten. Runs while a message of ``partition`` is being handled: a deletion from the table
        goes to that partition's changelog, the one holding the key."""
        if self.idle_ttl_ms <= 0:
            return 0
        forgotten = self._forget_quiet(partition, now)
        if now - self._swept_at.get(partition, 0) < self.sweep_every_ms:
            return forgotten
        self._swept_at[partition] = now
        horizon, quiet_horizon = now - self.idle_ttl_ms, now - min(self.quiet_ttl_ms, self.idle_ttl_ms)
        idle = [
            key
            for key, saved in list(self.table.items())
            if isinstance(saved, dict)
            and saved.get("p") == partition
            and not (saved.get("budget") or {}).get("reserved")
            # Quiet rows in the table were restored from a changelog written before they lived in memory.
            and int(saved.get("at") or now) < (quiet_horizon if is_quiet(saved) else horizon)
        ]
        for key in idle:
            del self.table[key]
        return forgotten + len(idle)

    def keep_partitions(self, partitions: set[int]) -> int:
        """After a rebalance: forget the in-memory rows of partitions this process no longer owns; how many.

        Their sessions now live with the new owner, which starts them afresh (see above); kept here, a row
        would wait for its partition's next message to be swept, and would come back stale if the partition
        returned. Durable rows need nothing: the table's partitions follow the assignment."""
        forgotten = 0
        for partition in [p for p in self._written if p not in partitions]:
            for key in self._written.pop(partition):
                forgotten += self.memory.pop(key, None) is not None
            self._swept_at.pop(partition, None)
        return forgotten

    def _forget_quiet(self, partition: int, now: int) -> int:
        written = self._written.get(partition)
        horizon = now - min(self.quiet_ttl_ms, self.idle_ttl_ms)
        forgotten = 0
        while written:
            key, at = next(iter(written.items()))
            if at >= horizon:
                break
            del written[key]
            saved = self.memory.get(key)
            if saved is None:
                continue  # moved to the table (a trip): the scan decides, at the idle TTL
            if not is_quiet(saved) and int(saved.get("at") or now) >= now - self.idle_ttl_ms:
                written[key] = now  # a reservation still open: look again a window later
                continue
            del self.memory[key]
            forgotten += 1
        return forgotten
