"""The OpenAI-compatible forwarder against a real OpenAI-compatible server: llama-cpp-python's own
``llama_cpp.server`` serving the local SmolLM2 GGUF on loopback. No Kafka needed.

Needs llama-cpp-python's ``server`` extra (uvicorn, fastapi, sse-starlette, starlette-context,
pydantic-settings), installed one by one so pip does not rebuild llama-cpp-python.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from schemas.records import Message
from workers.cloud import OpenAICompatProvider
from workers.local.model_files import default_model_path


def _server_importable() -> str | None:
    """Why ``llama_cpp.server`` cannot run here, or None. Checked in a child: importing it loads native code."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    probe = subprocess.run(
        [sys.executable, "-c", "import llama_cpp.server.app"], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"llama_cpp.server cannot import (install llama-cpp-python's server extras individually): {last}"
    return None


pytestmark = pytest.mark.timeout(300)

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LlamaServer:
    base_url: str
    model_id: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    why_not = _server_importable()  # here, not at collection: the probe costs a second or two
    if why_not is not None:
        pytest.skip(why_not)
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path())]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        model_id = _wait_ready(proc, base_url, log_path)
        yield LlamaServer(base_url, model_id)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> str:
    """Poll GET /v1/models until the server lists its model; fail with the log tail if it dies or stalls."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                response = client.get(f"{base_url}/models")
                if response.status_code == 200 and response.json().get("data"):
                    return str(response.json()["data"][0]["id"])
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    pytest.fail(f"llama_cpp.server not ready after {READY_TIMEOUT_S:.0f}s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def test_openai_forwarder_against_llama_cpp_server(llama_server: LlamaServer) -> None:
    provider = OpenAICompatProvider(api_key=None, base_url=llama_server.base_url, name="llama-server")
    try:
        chat = [Message("system", "You are a helpful assistant."), Message("user", "What is the capital of France?")]
        completion = await provider.complete(chat, 8, llama_server.model_id, timeout_s=120)
    finally:
        await provider.aclose()
    assert completion.text.strip(), completion
    assert completion.prompt_tokens > 5
    assert 1 <= completion.completion_tokens <= 8
    assert completion.finish_reason in {"stop", "length"}
    assert completion.model
