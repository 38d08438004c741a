"""A ``LocalModel`` backed by ctransformers, run in a child process.

ctransformers 0.2.27 can segfault inside native code (some vocabularies) and runs best single-threaded.
A segfault in-process would kill the whole worker, so the model lives in
``workers.local.ctransformers_child`` and we talk JSON lines over its stdin/stdout. A dead child turns
into ``ModelCrashed`` (retriable) and the next call starts a fresh one.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from schemas.records import Message
from workers.errors import ModelCrashed, ModelError
from workers.ports import Cancelled, Completion, OnText

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
_STDERR_LINES = 40


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"exit code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exit code {code}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin (it exits on EOF); kill it if it lingers. Safe to call twice."""
    if proc.poll() is None:
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream:
            stream.close()


class CTransformersModel:
    """One ctransformers model in one child process; one ``generate`` at a time (a lock enforces it)."""

    def __init__(
        self,
        model_path: str,
        *,
        model_type: str = "llama",
        threads: int = 1,
        seed: int = 0,
        name: str | None = None,
        context_length: int = -1,
    ) -> None:
        self.name = name or Path(model_path).stem
        self.model_path = model_path
        self._args = [
            "--model-path", model_path,
            "--model-type", model_type,
            "--threads", str(threads),
            "--seed", str(seed),
            "--context-length", str(context_length),
        ]  # fmt: skip
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._drainer: threading.Thread | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.context_length = 0
        with self._lock:
            self._start()  # fail fast: a bad path or model surfaces at construction, not mid-traffic

    @property
    def pid(self) -> int | None:
        """The current child's pid (None when no child is running)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _stderr_tail(self) -> str:
        return "\n".join(self._stderr) or "(no stderr output)"

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        # Keeps the pipe from filling (and blocking the child) while retaining a tail for error messages.
        for raw in stream:
            self._stderr.append(raw.decode("utf-8", errors="replace").rstrip())
        stream.close()

    def _start(self) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, env.get("PYTHONPATH")) if p)
        self._stderr.clear()
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.local.ctransformers_child", *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stderr is not None
        self._drainer = threading.Thread(target=self._drain_stderr, args=(proc.stderr,), daemon=True)
        self._drainer.start()
        self._proc = proc
        self._finalizer = weakref.finalize(self, _stop, proc)
        try:
            ready = self._read_reply()
        except ModelCrashed as exc:
            self._discard()
            raise ModelError(f"model {self.name} failed to start: {exc}") from exc
        if "error" in ready:
            self._discard()
            raise ModelError(f"model {self.name} failed to start: {ready['error']}\n{self._stderr_tail()}")
        self.context_length = int(ready.get("context_length", 0))

    def _discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _stop once
            self._finalizer = None
        self._proc = None

    def _read_reply(self) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            if self._drainer is not None:
                self._drainer.join(timeout=1)  # let the child's last words reach the tail
            raise ModelCrashed(
                f"model {self.name} child process died ({_describe_exit(code)}); stderr tail:\n{self._stderr_tail()}"
            )
        reply: dict[str, Any] = orjson.loads(line)
        return reply

    def generate(self, messages: Sequence[Message], max_tokens: int) -> Completion:
        """Greedy completion of ``messages``; blocks until the child answers.

        A child found dead (even one that died while idle) raises ``ModelCrashed`` once, so callers
        see every crash; the call after that starts a fresh child.
        """
        request = orjson.dumps(
            {"messages": [{"role": m.role, "content": m.content} for m in messages], "max_tokens": max_tokens}
        )
        with self._lock:
            if self._proc is None:  # first call after a crash or close(): start a fresh child
                self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            try:
                proc.stdin.write(request + b"\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # the child is gone; reading its reply below reports how it died
            try:
                reply = self._read_reply()
            except ModelCrashed:
                self._discard()  # the next call starts a fresh child
                raise
        if "error" in reply:
            raise ModelError(f"model {self.name}: {reply['error']}")
        return Completion(
            text=str(reply["text"]),
            prompt_tokens=int(reply["prompt_tokens"]),
            completion_tokens=int(reply["completion_tokens"]),
            model=self.name,
            finish_reason=str(reply["finish_reason"]),
        )

    def stream(self, messages: Sequence[Message], max_tokens: int, on_text: OnText, cancelled: Cancelled) -> Completion:
        """Streaming fallback: the child process answers whole, so the text arrives as one piece."""
        completion = self.generate(messages, max_tokens)
        if completion.text:
            on_text(completion.text)
        return completion

    def close(self) -> None:
        """Stop the child; a later ``generate`` would start a new one."""
        with self._lock:
            self._discard()
