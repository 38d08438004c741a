"""What every bench writes: one JSON file, a markdown table beside it, and both on stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(result: dict[str, Any], out: str | Path, render: Any, as_json: bool) -> None:
    """Every bench's output: the JSON file, the markdown table beside it and on stdout, and (``--json``) the JSON
    as the last stdout line."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    Path(out).with_suffix(".md").write_text(render(result))
    print(render(result))
    if as_json:
        print(json.dumps(result))
