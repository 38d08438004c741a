"""CTransformersModel against a real (tiny, random-weight) GGUF: generation, crash recovery, bad paths."""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
from collections.abc import Iterator

import pytest

from schemas.records import Message
from tests.fixtures.tiny_gguf import CHAT_TEMPLATE, write_tiny_llama_gguf
from workers.errors import ModelCrashed, ModelError
from workers.local.chat_template import GGUFChatInfo, read_gguf_chat_template, render_chat
from workers.local.ctransformers_child import _generate
from workers.local.ctransformers_model import CTransformersModel

pytestmark = pytest.mark.timeout(120)

CHAT = [Message(role="system", content="You are terse."), Message(role="user", content="Say hello.")]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture
def model(tiny_gguf: pathlib.Path) -> Iterator[CTransformersModel]:
    m = CTransformersModel(str(tiny_gguf), name="tiny")
    try:
        yield m
    finally:
        m.close()


def test_generate_counts_tokens(model: CTransformersModel) -> None:
    out = model.generate(CHAT, max_tokens=8)
    assert isinstance(out.text, str)
    assert 1 <= out.completion_tokens <= 8
    assert out.prompt_tokens > 0
    assert out.model == "tiny"
    assert out.finish_reason in ("stop", "length")


def test_generate_is_greedy(model: CTransformersModel) -> None:
    assert model.generate(CHAT, max_tokens=6) == model.generate(CHAT, max_tokens=6)


def test_killed_child_raises_crashed_then_recovers(model: CTransformersModel) -> None:
    first = model.generate(CHAT, max_tokens=4)
    pid = model.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ModelCrashed) as info:
        model.generate(CHAT, max_tokens=4)
    assert info.value.retriable
    assert "SIGKILL" in str(info.value)
    again = model.generate(CHAT, max_tokens=4)
    assert model.pid not in (None, pid)
    assert again == first


def test_missing_model_path_raises_model_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelError) as info:
        CTransformersModel(str(tmp_path / "missing.gguf"))
    assert not isinstance(info.value, ModelCrashed)
    assert not info.value.retriable
    assert "missing.gguf" in str(info.value)


def test_corrupt_model_file_raises_model_error_with_stderr(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model" * 64)
    with pytest.raises(ModelError, match="failed to start") as info:
        CTransformersModel(str(bad))
    assert not info.value.retriable


def test_read_gguf_chat_template(tiny_gguf: pathlib.Path) -> None:
    assert read_gguf_chat_template(tiny_gguf) == CHAT_TEMPLATE


def test_render_chat_without_template_is_chatml() -> None:
    assert render_chat(CHAT, None) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_render_chat_with_template() -> None:
    template = (
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}{{ eos_token }}\n"
        "{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}"
    )
    rendered = render_chat(CHAT, template, bos_token="<s>", eos_token="</s>")
    assert rendered == "<s>[SYSTEM] You are terse.</s>\n[USER] Say hello.</s>\n[ASSISTANT] "
    assert render_chat(CHAT, CHAT_TEMPLATE) == render_chat(CHAT, None)


def test_render_chat_template_errors_are_model_errors() -> None:
    with pytest.raises(ModelError):
        render_chat(CHAT, "{{ raise_exception('no system role') }}")


def test_render_chat_is_sandboxed() -> None:
    with pytest.raises(ModelError):
        render_chat(CHAT, "{{ messages.__class__.__mro__[1].__subclasses__() }}")


def test_tiny_gguf_loads_in_llama_cpp(tiny_gguf: pathlib.Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=256, verbose=False)
    out = llm.create_completion("Hello", max_tokens=4, temperature=0.0)
    assert isinstance(out["choices"][0]["text"], str)


def test_prompt_longer_than_context_is_a_model_error(model: CTransformersModel) -> None:
    with pytest.raises(ModelError, match="does not fit context") as info:
        model.generate([Message(role="user", content="hello " * 2000)], max_tokens=8)
    assert not info.value.retriable
    assert model.generate(CHAT, max_tokens=2).completion_tokens == 2  # the child survived


class _FakeLLM:
    """Stands in for a ctransformers LLM: emits fixed pieces, one token each."""

    context_length = 64

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def tokenize(self, text: str, add_bos_token: bool | None = None) -> list[int]:
        return [1, 2, 3]

    def generate(self, tokens: list[int], **_: object) -> Iterator[int]:
        yield from range(len(self.pieces))

    def detokenize(self, tokens: list[int], decode: bool = True) -> bytes:
        return "".join(self.pieces[t] for t in tokens).encode()


@pytest.mark.parametrize(
    ("pieces", "max_tokens", "expected"),
    [
        (["Hi", " there", "<|im", "_end|>", "junk"], 10, ("Hi there", 4, "stop")),
        (["a", "b", "c", "d"], 2, ("ab", 2, "length")),
        (["a", "b"], 10, ("ab", 2, "stop")),
        (["a"], 0, ("", 0, "length")),
    ],
)
def test_child_generation_loop(pieces: list[str], max_tokens: int, expected: tuple[str, int, str]) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    reply = _generate(_FakeLLM(pieces), GGUFChatInfo(), request, argparse.Namespace(seed=0, threads=1))
    assert (reply["text"], reply["completion_tokens"], reply["finish_reason"]) == expected
    assert reply["prompt_tokens"] == 3
