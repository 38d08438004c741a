"""A fix for faust-streaming 0.15.3 that at-least-once delivery depends on.

While flow control is paused (table recovery) or after a rebalance (stale generation), a stream *skips* the
events already in its buffer, and acks them "so the lag does not grow". Acking lets the next commit move
past events nobody processed: they are lost (faust-streaming issues #216, #221). Here a skipped event is
left unacked instead, so the committed offset stays before it; Faust seeks every stream partition back to
its committed offset when recovery completes, and the event is delivered again. Sluice's stages are
idempotent per request id, so a redelivery is harmless.
"""

from __future__ import annotations

import inspect
import logging
import textwrap
from typing import Any

log = logging.getLogger(__name__)
_ACK_SKIPPED = "do_ack or value is skipped_value"
_applied = False


def _patched(method: Any) -> Any:
    import faust.streams as streams

    source = textwrap.dedent(inspect.getsource(method))
    if source.count(_ACK_SKIPPED) != 1:
        return None
    namespace: dict[str, Any] = {}
    exec(compile(source.replace(_ACK_SKIPPED, "do_ack"), streams.__file__, "exec"), vars(streams), namespace)
    return next(v for k, v in namespace.items() if callable(v))


def apply() -> bool:
    """Patch both stream iterators (Cython-backed and pure Python) once; False, with a warning, if this Faust's
    source is not the expected one."""
    global _applied
    if _applied:
        return True
    import faust.streams as streams

    patched = {name: _patched(getattr(streams.Stream, name)) for name in ("_c_aiter", "_py_aiter")}
    if any(fn is None for fn in patched.values()):
        log.warning("faust's stream iterators changed: the skipped-event patch was not applied")
        return False
    for name, fn in patched.items():
        setattr(streams.Stream, name, fn)
    _applied = True
    return True
