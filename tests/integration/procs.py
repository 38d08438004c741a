"""Running ``sluice`` as real subprocesses (so tests can SIGKILL and restart them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings
from tests.conftest import settings_env


class SluiceProcess:
    def __init__(self, settings: Settings, *args: str, log: Path, extra_env: dict[str, str] | None = None) -> None:
        env = settings_env(settings)
        env.update(extra_env or {})
        self.log = log
        self._log_handle = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            env=env,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no final offset commit."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log_handle.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._log_handle.close()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


ALL_ROLES = ("admit", "cache", "local", "cloud", "meter")


def start_worker(
    settings: Settings,
    tmp_path: Path,
    *roles: str,
    name: str = "worker",
    env: dict[str, str] | None = None,
) -> SluiceProcess:
    """Run roles in a subprocess. Unless ``env`` names a tiers file, everything routes to the local tier."""
    args = ["worker"]
    for role in roles or ALL_ROLES:
        args += ["--role", role]
    extra = dict(env or {})
    if "SLUICE_TIERS_FILE" not in extra:
        from tests.integration.tiers_files import write_tiers

        extra["SLUICE_TIERS_FILE"] = str(write_tiers(tmp_path / "tiers-local.yaml", knob=0.0))
    return SluiceProcess(settings, *args, log=tmp_path / f"{name}.log", extra_env=extra)
