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


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def goal(value: float | None, target: float, at_least: bool = False) -> dict[str, Any]:
    """One target: the value, the goal, whether it is met and by how much (value/target)."""
    met = value is not None and (value >= target if at_least else value <= target)
    out: dict[str, Any] = dict(value=value, target=f"{'>=' if at_least else '<='} {target:g}", met=met)
    return {**out, "value_over_target": ratio(value, target)}


def md_table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    return ["| " + " | ".join(str(x) for x in row) + " |" for row in (head, ("---",) * len(head), *rows)]


def targets_table(targets: dict[str, dict[str, Any]]) -> list[str]:
    """The markdown rows every bench ends with: each target, met or not, and by how much."""
    rows = [
        (k, v["value"], v["target"], "yes" if v["met"] else "no", v["value_over_target"]) for k, v in targets.items()
    ]
    return md_table(("target", "value", "goal", "met", "value/target"), rows)
