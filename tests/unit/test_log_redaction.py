"""Log redaction: secrets and prompt text are scrubbed from every record, and a real worker at info level with a
provider key in its environment never writes the key or the prompt to its log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.records import Message
from streams.logging_setup import REDACTED, Redactor, install, uninstall
from streams.settings import Settings, secret_env_values

KEY = "zq-Provider-Key-7f3a9c2e"  # no well-known key shape: only the environment tells the redactor it is secret
PROMPT = "PURPLE-ELEPHANT-42 plans the quarterly merger"


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        ("headers={'Authorization': 'Bearer abc.DEF-123_xyz'}", "abc.DEF-123_xyz", "headers"),
        ("openai: HTTP 401: Incorrect API key provided: sk-proj-AbCdEf123456", "sk-proj-AbCdEf123456", "HTTP 401"),
        ("key sk-ant-api03-XYZxyz0987654321 rejected", "sk-ant-api03-XYZxyz0987654321", "rejected"),
        (
            'HTTP Request: POST https://h/v1/models/x:generate?key=AIzaSyA1234567890abcdefgh "HTTP/1.1 200"',
            "AIzaSyA1234567890abcdefgh",
            "HTTP Request: POST",
        ),
        ("connect sasl_plain_password='hunter2-long' mechanism=PLAIN", "hunter2-long", "mechanism=PLAIN"),
        ('{"api_key": "k-9876543210", "model": "gpt-4o"}', "k-9876543210", '"model": "gpt-4o"'),
        ("x-api-key: abcdefgh12345678", "abcdefgh12345678", "x-api-key"),
        ('job {"prompt": "launch codes are 0000", "max_tokens": 8}', "launch codes", '"max_tokens": 8'),
        ('{"messages":[{"role":"user","content":"my \\"diary\\" entry"}],"v":1}', "diary", '"v":1'),
        (f"request {dict(prompt='tell me a secret', tenant='acme')}", "tell me a secret", "'tenant': 'acme'"),
        (f"turn {Message(role='user', content='my password is swordfish')}", "swordfish", "role='user'"),
        (f"chat messages={[Message('user', 'quarterly numbers')]!r} end", "quarterly numbers", " end"),
        ('dead letter {"original": "{\\"prompt\\": \\"truncated secr', "truncated secr", "dead letter"),
        (f"provider failed with {KEY}", KEY, "provider failed"),
    ],
)
def test_scrub_removes_secrets_and_prompt_text_and_keeps_the_rest(line: str, secret: str, kept: str) -> None:
    out = Redactor([KEY]).scrub(line)
    assert secret not in out and REDACTED in out
    assert kept in out


def test_secret_env_values_pick_secret_names_only() -> None:
    env = {
        "OPENAI_API_KEY": "sk-abcdefgh",
        "SLUICE_KAFKA_SASL_PASSWORD": "pw-12345678",
        "GH_TOKEN": "ghp_x" * 3,
        "SLUICE_MAX_TOKENS_LIMIT": "10240000",
        "SLUICE_TOPIC_PREFIX": "sluice-prod",
        "SHORT_KEY": "abc",
    }
    assert sorted(secret_env_values(env)) == sorted(["sk-abcdefgh", "pw-12345678", "ghp_x" * 3])


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("sluice.test.redaction")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield stream
    finally:
        log.removeHandler(handler)
        uninstall()


def _log_everything() -> None:
    log = logging.getLogger("sluice.test.redaction")
    log.info("calling %s with key %s for %r", "openai", KEY, {"prompt": PROMPT})
    try:
        raise RuntimeError(f"upstream said: bad key {KEY} for prompt='{PROMPT}'")
    except RuntimeError:
        log.exception("provider call failed")
    log.info("Authorization: Bearer %s", "tok_0123456789abcdef")


def test_installed_redaction_scrubs_messages_args_and_tracebacks(captured: io.StringIO) -> None:
    assert install(Settings(kafka_sasl_password="sasl-pw-000111"), [KEY]) is not None
    assert install(Settings()) is not None  # idempotent: a second install reuses the first
    _log_everything()
    logging.getLogger("sluice.test.redaction").warning("joining with sasl-pw-000111")
    text = captured.getvalue()
    assert "provider call failed" in text and "Traceback" in text and "RuntimeError" in text
    for secret in (KEY, PROMPT, "tok_0123456789abcdef", "sasl-pw-000111"):
        assert secret not in text
    assert text.count(REDACTED) >= 5


def test_redaction_off_leaves_records_alone(captured: io.StringIO) -> None:
    """The control for the test above: without the filter the same records do carry the secrets."""
    assert install(Settings(log_redact=False), [KEY]) is None
    _log_everything()
    text = captured.getvalue()
    assert KEY in text and PROMPT in text and "tok_0123456789abcdef" in text


@pytest.mark.integration
async def test_worker_at_info_level_logs_neither_key_nor_prompt(settings: Settings, tmp_path: Path) -> None:
    from streams.client import SluiceClient, make_request
    from streams.topics import create_topics
    from tests.fixtures.provider_sim import ProviderSim, Reply
    from tests.integration.procs import start_worker
    from tests.integration.tiers_files import write_tiers

    await create_topics(settings)
    async with ProviderSim(expected_key=KEY) as sim:
        tiers = write_tiers(
            tmp_path / "tiers.yaml",
            knob=1.01,
            openai_base_url=sim.openai_base_url,
            fallback=[{"provider": "openai", "model": "gpt-4o"}],
        )
        env = {"SLUICE_TIERS_FILE": str(tiers), "SLUICE_TEST_OPENAI_KEY": KEY, "SLUICE_LOG_LEVEL": "info"}
        worker = start_worker(settings, tmp_path, "admit", "cache", "cloud", name="info", env=env)
        try:
            async with SluiceClient(settings) as client:
                # A 429 (retried: an info line), then a 401 whose body echoes the key (a warning with the error).
                sim.script("openai", Reply(status=429, retry_after="0"))
                ok = await client.submit(make_request(PROMPT, tenant="acme", session="s1", max_tokens=8), 120)
                sim.script("openai", Reply(status=401, text=f"Incorrect API key provided: {KEY}"))
                failed = await client.submit(make_request(PROMPT + " again", tenant="acme", session="s2"), 120)
        finally:
            worker.stop()
    log = worker.log.read_text(errors="replace")
    assert ok.status == "ok" and ok.route["attempts"] == 2, worker.tail()
    assert failed.status == "error" and KEY not in failed.reason
    assert any(r.body and PROMPT in str(r.body) for r in sim.seen("openai"))  # the prompt did travel upstream
    assert "INFO" in log and "retrying openai" in log and "failed" in log  # info lines were written
    assert KEY not in log
    assert "PURPLE-ELEPHANT" not in log
