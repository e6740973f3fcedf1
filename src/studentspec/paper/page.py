"""The pieces of a self-contained report page: its style, tables, embedded figures and the page frame.

Shared by `paper.report` (run, sweep and reproduce pages) and by experiments that write their own
report body (`paper/experiments/cifar10.py`). No external file, script, font or style: figures are
embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

CSS = """
body { font-family: Georgia, 'DejaVu Serif', serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .3em .5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-family: monospace; }
.pass { background: #dff3df; color: #135e13; font-weight: bold; } \
.fail { background: #f9dcdc; color: #8a1010; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; } \
figcaption { font-size: .9em; color: #555; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .8em; } .small { font-size: .85em; color: #555; }
.wide { overflow-x: auto; }
"""


def escape(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value))


def fmt(value: Any) -> str:
    """A table cell's text: 'n/a' for None, floats to 4 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    """An HTML table; the columns in `numeric` right-aligned in monospace."""
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{escape(fmt(v))}</td>" if i in numeric else f"<td>{escape(fmt(v))}</td>"
            for i, v in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figures_html(out: Path, names: list[str], captions: dict[str, str], folder: str = "figures") -> str:
    """The PNGs out/folder/NAME.png embedded as base64 <figure>s; a missing one is named in red."""
    parts = []
    for name in names:
        png = out / folder / f"{name}.png"
        if not png.is_file():
            parts.append(f"<p class='fail'>figure {escape(name)} missing</p>")
            continue
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(
            f"<figure id='fig-{escape(name)}'><img alt='{escape(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{escape(name)}</b>: {escape(captions.get(name, ''))} (PDF beside the PNG in "
            f"{escape(folder)}/)</figcaption></figure>"
        )
    return "\n".join(parts)


def page(title: str, out: Path, body: str, regenerate: str = "") -> str:
    """A whole self-contained page: title, provenance line, body."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="small">Generated {escape(time.strftime("%Y-%m-%d %H:%M:%S"))} from the stored results in \
{escape(out.resolve())}.
Regenerate with <code>studentspec report {escape(out)}{escape(regenerate)}</code> (no retraining).</p>
{body}
</body></html>
"""


def seed_table(summary: dict[str, Any], lead: list[Any] | None = None) -> tuple[list[str], list[list[Any]]]:
    """Per seed of a summary.json: its final numbers (time_to_specialize lists left out), diverged as a step or 'no'."""
    entries = summary.get("per_seed", {})
    keys = list(dict.fromkeys(k for e in entries.values() for k in e if not k.startswith("time_to_specialize")))
    rows = []
    for seed, entry in entries.items():
        values = [entry.get(k) for k in keys]
        rows.append(
            [*(lead or []), seed, *("no" if k == "diverged_at_step" and v is None else v for k, v in zip(keys, values))]
        )
    return ["seed", *("diverged at step" if k == "diverged_at_step" else k for k in keys)], rows


def numeric_columns(rows: list[list[Any]]) -> set[int]:
    """Columns whose cells are all numbers (right-aligned)."""
    return (
        {
            i
            for i in range(len(rows[0]))
            if all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows)
        }
        if rows
        else set()
    )


def path_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Which code trained and evaluated a run (summary.json's pipeline, kernel, eval_kernel) and its size."""
    keys = [
        ("pipeline", "pipeline"),
        ("kernel", "kernel (training step: 'c' = compiled, 'torch')"),
        ("eval_kernel", "eval_kernel (evaluation)"),
        ("seeds", "seeds"),
        ("steps", "steps"),
        ("n_train", "n_train"),
        ("n_eval", "n_eval"),
    ]
    return [
        [label, summary[k] if k != "seeds" else ", ".join(map(str, summary[k]))] for k, label in keys if k in summary
    ]


def versions_table(summary: dict[str, Any]) -> str:
    """The table of package versions a summary.json records."""
    return table(["package", "version"], [[k, v] for k, v in summary.get("versions", {}).items()])
