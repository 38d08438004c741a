from __future__ import annotations

import pytest

from schemas.records import Message
from streams.policy.cache_key import dedup_key, normalize_text, semantic_text
from streams.policy.cache_policy import query_text


def _k(tenant: str, *turns: tuple[str, str], max_tokens: int = 16) -> str:
    return dedup_key(tenant, [Message(r, c) for r, c in turns], {"max_tokens": max_tokens})


def test_whitespace_does_not_change_the_key_but_case_and_words_do() -> None:
    assert normalize_text("  what   is\n2+2 ") == "what is 2+2"
    assert _k("a", ("user", "what is 2+2")) == _k("a", ("user", " what  is 2+2\n"))
    assert _k("a", ("user", "what is 2+2")) != _k("a", ("user", "What is 2+2"))
    assert _k("a", ("user", "enable 2FA")) != _k("a", ("user", "disable 2FA"))


def test_tenant_and_answer_changing_params_separate_keys() -> None:
    assert _k("a", ("user", "hi")) != _k("b", ("user", "hi"))
    assert _k("a", ("user", "hi"), max_tokens=16) != _k("a", ("user", "hi"), max_tokens=17)


def test_multi_turn_requests_key_on_the_whole_conversation() -> None:
    one = _k("a", ("user", "tell me about it"))
    two = _k("a", ("user", "Paris?"), ("assistant", "A city."), ("user", "tell me about it"))
    three = _k("a", ("user", "Rome?"), ("assistant", "A city."), ("user", "tell me about it"))
    assert len({one, two, three}) == 3
    assert _k("a", ("system", "x"), ("user", "y")) != _k("a", ("user", "x"), ("user", "y"))


@pytest.mark.parametrize(
    ("sent", "compared"),
    [
        ("Hi! How do I reset my password?", "How do I reset my password?"),
        ("Hey there,  how do I reset my password? Thanks!", "how do I reset my password?"),
        ("Good morning! What is AI? Thank you so much.", "What is AI?"),
        ("Fix my code, thanks", "Fix my code"),
        ("Hello world in Java", "Hello world in Java"),  # no punctuation: not a greeting
        ("Hello, World!", "Hello, World!"),  # the program, not a greeting
        ("Say thanks", "Say thanks"),  # the request itself
        ("Thanks!", "Thanks!"),  # nothing else left: kept
    ],
)
def test_the_semantic_cache_compares_a_request_without_greeting_or_thanks(sent: str, compared: str) -> None:
    assert semantic_text(sent) == compared
    assert query_text([Message(role="user", content=sent)]) == compared
    # The exact key still hashes the text as sent: a greeting is a different exact request.
    if sent != compared:
        assert dedup_key("t", [Message(role="user", content=sent)], {}) != dedup_key(
            "t", [Message(role="user", content=compared)], {}
        )
