"""Table rows, and the report files ``bench.json`` and ``bench.md``.

A row is a dict ``{"id", "what", "value", "target", "met", "raw"}``: ``met`` is True,
False, or None (no target); ``raw`` the number behind ``value``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchlib.util import MIB, TIMES, json_default


def row(mid: str, what: str, value: str, target: str = "—", met: bool | None = None,
        raw: Any = None) -> dict[str, Any]:
    return {"id": mid, "what": what, "value": value, "target": target, "met": met,
            "raw": raw}


def fmt_s(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x < 1e-3:
        return f"{x * 1e6:.1f} µs"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.3f} s"


def fmt_x(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}{TIMES}"


def fmt_mib(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x / MIB:.1f} MiB" if abs(x) < 10 * MIB else f"{x / MIB:.0f} MiB"


def at_most(x: float | None, bound: float) -> bool | None:
    return None if x is None else x <= bound


def at_least(x: float | None, bound: float) -> bool | None:
    return None if x is None else x >= bound


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**NO**")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| id | what | value | target | met? |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {_cell(r['id'])} | {_cell(r['what'])} | {_cell(r['value'])} | "
                     f"{_cell(r['target'])} | {_met(r['met'])} |")
    return "\n".join(lines)


def simple_table(header: list[str], body: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in line) + " |" for line in body]
    return "\n".join(lines)


def write_report(out_dir: Path, doc: dict[str, Any], rows: list[dict[str, Any]],
                 header: str, extra_md: str = "") -> None:
    """``bench.json`` (everything) and ``bench.md`` (header, the rows, extra tables)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], **doc, "rows": rows}
    tmp = out_dir / "bench.json.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, default=json_default)
        f.write("\n")
    os.replace(tmp, out_dir / "bench.json")
    text = header + "\n" + markdown_table(rows) + "\n" + (("\n" + extra_md) if extra_md
                                                          else "")
    tmp = out_dir / "bench.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_dir / "bench.md")
