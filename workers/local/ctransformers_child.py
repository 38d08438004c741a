"""Child process that owns one ctransformers model (see ``ctransformers_model.py`` for why).

Protocol: one JSON object per line. After loading, the child writes ``{"ready": true, ...}`` (or
``{"error": ...}`` and exits 1). Then, per request line ``{"messages": [...], "max_tokens": n}``, it
writes ``{"text", "prompt_tokens", "completion_tokens", "finish_reason"}`` or ``{"error": ...}``.
Native libraries print to fd 1, so fd 1 is pointed at stderr and the protocol uses a private dup.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import orjson

from schemas.records import Message
from workers.local.chat_template import GGUFChatInfo, read_gguf_chat_info, render_chat

STOP_STRINGS = ("<|im_end|>",)


def _protocol_stream() -> IO[bytes]:
    """Keep the real stdout for replies; everything else written to fd 1 lands on stderr."""
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "wb", buffering=0)


def _send(out: IO[bytes], payload: dict[str, Any]) -> None:
    out.write(orjson.dumps(payload) + b"\n")


def _generate(llm: Any, info: GGUFChatInfo, request: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Greedy generation for one request; ``llm`` is a ctransformers LLM (typed Any: no stubs)."""
    messages = [Message(role=str(m["role"]), content=str(m["content"])) for m in request["messages"]]
    prompt = render_chat(messages, info.template, bos_token=info.bos_token, eos_token=info.eos_token)
    add_bos: bool | None = None
    if info.bos_token and prompt.startswith(info.bos_token):
        # The template wrote BOS as text; the tokenizer would split it into pieces, so add the real id.
        prompt, add_bos = prompt[len(info.bos_token) :], True
    tokens = llm.tokenize(prompt, add_bos_token=add_bos)
    room = llm.context_length - len(tokens)
    if room <= 0:
        return {"error": f"prompt of {len(tokens)} tokens does not fit context {llm.context_length}"}
    budget = min(int(request["max_tokens"]), room)
    if budget <= 0:
        return {"text": "", "prompt_tokens": len(tokens), "completion_tokens": 0, "finish_reason": "length"}
    stops = [s.encode() for s in STOP_STRINGS if s in prompt]
    longest = max((len(s) for s in stops), default=0)
    buf, count, finish = b"", 0, "stop"
    generator = llm.generate(
        tokens, top_k=1, top_p=1.0, temperature=0.0, repetition_penalty=1.0, seed=args.seed, threads=args.threads
    )
    for token in generator:
        start = max(0, len(buf) - longest)
        buf += llm.detokenize([token], decode=False)
        count += 1
        hit = [i for i in (buf.find(s, start) for s in stops) if i >= 0]
        if hit:
            buf = buf[: min(hit)]
            break
        if count >= budget:
            finish = "length"
            break
    generator.close()
    return {
        "text": buf.decode("utf-8", errors="ignore"),
        "prompt_tokens": len(tokens),
        "completion_tokens": count,
        "finish_reason": finish,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-type", default="llama")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-length", type=int, default=-1)
    args = parser.parse_args(argv)
    out = _protocol_stream()

    if not os.path.exists(args.model_path):
        # ctransformers would treat a missing path as a Hugging Face repo id and try to download it.
        _send(out, {"error": f"model file not found: {args.model_path}"})
        return 1
    try:
        from ctransformers import AutoModelForCausalLM  # deferred: a broken native lib is a load error

        with ThreadPoolExecutor(max_workers=1) as pool:
            # Metadata parsing is slow on big vocabularies; overlap it with the (GIL-free) native load.
            info_future = (
                pool.submit(read_gguf_chat_info, args.model_path) if args.model_path.endswith(".gguf") else None
            )
            llm = AutoModelForCausalLM.from_pretrained(
                args.model_path,
                model_type=args.model_type,
                threads=args.threads,
                seed=args.seed,
                context_length=args.context_length,
                local_files_only=True,
            )
            info = info_future.result() if info_future is not None else GGUFChatInfo()
    except Exception as exc:
        _send(out, {"error": f"failed to load {args.model_path}: {type(exc).__name__}: {exc}"})
        return 1
    _send(out, {"ready": True, "context_length": llm.context_length, "has_template": info.template is not None})

    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            reply = _generate(llm, info, orjson.loads(line), args)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        _send(out, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
