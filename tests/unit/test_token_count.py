"""Token counting offline: exact for OpenAI-family models (bpe-openai), len/4 for the rest."""

from __future__ import annotations

import sys
from importlib.util import find_spec
from types import SimpleNamespace

import pytest

from schemas.records import Message
from streams.policy import token_count as tc

needs_bpe = pytest.mark.skipif(
    find_spec("bpe_openai") is None, reason="bpe-openai not installed (bpe-openai==0.1.4 gives exact counts)"
)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4.1-nano", "o200k_base"),
        ("GPT-5", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("gpt-oss-20b", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("cl100k_base", "cl100k_base"),
        ("claude-3-5-sonnet", None),
        ("llama-3.1-8b-instruct", None),
        ("o100", None),
        ("text-davinci-003", None),  # legacy encodings are not shipped offline
    ],
)
def test_encoding_for_model(model: str, encoding: str | None) -> None:
    assert tc.encoding_name(model) == encoding


@needs_bpe
def test_exact_counts_match_the_openai_encodings() -> None:
    assert tc.count_tokens("hello world", "gpt-4o") == 2
    assert tc.count_tokens("hello world, this is a test", "gpt-4") == 7
    assert tc.count_tokens("hello world, this is a test", "gpt-4o-mini") == 7
    assert tc.is_exact("gpt-4o") and tc.is_exact("gpt-3.5-turbo")


def test_unknown_models_use_the_heuristic() -> None:
    assert tc.count_tokens("abcdefghi", "claude-3-haiku") == 3  # ceil(9 / 4)
    assert tc.heuristic_tokens("abcd") == 1
    assert not tc.is_exact("mistral-7b")


def test_empty_text_is_zero_tokens() -> None:
    assert tc.count_tokens("", "gpt-4o") == 0
    assert tc.count_tokens("", "unknown") == 0


@needs_bpe
def test_special_token_text_is_counted_not_rejected() -> None:
    assert tc.count_tokens("<|endoftext|> hi", "gpt-4") > 2


@needs_bpe
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_long_text_is_chunked_without_changing_the_count() -> None:
    import bpe_openai

    text = "The quick brown fox jumps over the lazy dog.\n" * 3000  # 135k chars, > CHUNK_CHARS
    assert len(text) > tc.CHUNK_CHARS
    direct = len(bpe_openai.get_encoding("cl100k_base").encode_ordinary(text))
    assert tc.count_tokens(text, "gpt-4") == direct
    blob = "x" * (tc.CHUNK_CHARS * 2 + 7)  # no whitespace to cut at
    assert tc.count_tokens(blob, "gpt-4o") > 0


@needs_bpe
def test_encoders_are_cached() -> None:
    tc.count_tokens("warm", "gpt-4o")
    first = tc._encoders["o200k_base"]
    tc.count_tokens("again", "gpt-4o-mini")
    assert tc._encoders["o200k_base"] is first


def test_missing_package_falls_back_to_the_heuristic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc, "_encoders", {})
    monkeypatch.setitem(sys.modules, "bpe_openai", None)  # import fails
    assert tc.count_tokens("abcdefgh", "gpt-4o") == 2
    assert not tc.is_exact("gpt-4o")


def test_encoder_errors_fall_back_to_the_heuristic(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(text: str) -> list[int]:
        raise RuntimeError("tokenizer failure")

    monkeypatch.setattr(tc, "_encoders", {"o200k_base": SimpleNamespace(encode_ordinary=boom)})
    assert tc.count_tokens("abcdefgh", "gpt-4o") == 2


def test_chat_count_adds_framing() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, Message(role="user", content="What is Kafka?")]
    model = "gpt-4o"
    expected = tc.REPLY_PRIMING + sum(
        tc.MESSAGE_OVERHEAD + tc.count_tokens(r, model) + tc.count_tokens(c, model)
        for r, c in (("system", "Be brief."), ("user", "What is Kafka?"))
    )
    assert tc.count_chat_tokens(msgs, model) == expected
    assert tc.count_chat_tokens([], model) == tc.REPLY_PRIMING
    assert tc.count_chat_tokens([{"role": "user", "content": None}], "unknown") == 3 + 3 + 1
