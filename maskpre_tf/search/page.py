"""The HTML page of a search: a summary, then each query's picture and ranked table."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence

_STYLE = (
    "<style>body{font-family:sans-serif} td,th{padding:2px 8px;text-align:left}"
    " .yes{color:#1ea03c} .no{color:#d72828}</style>"
)
_VERDICT = {True: "<span class='yes'>yes</span>", False: "<span class='no'>no</span>", None: "?"}


def _ranking_lines(entry: dict, out_dir: str) -> list[str]:
    """The heading, picture and table of one query (see :func:`write_html`)."""
    lines = [
        f"<h2>{html.escape(os.path.basename(entry['query']))}</h2>",
        f"<img src='{html.escape(entry['picture'])}' alt='ranked list'>",
        "<table><tr><th>rank</th><th>similarity</th><th>match</th><th>file</th></tr>",
    ]
    for i, match in enumerate(entry["matches"]):
        link = html.escape(os.path.relpath(match["path"], out_dir))
        lines.append(
            f"<tr><td>{i + 1}</td><td>{match['similarity']:.4f}</td>"
            f"<td>{_VERDICT[match['correct']]}</td><td><a href='{link}'>"
            f"{html.escape(os.path.basename(match['path']))}</a></td></tr>"
        )
    lines.append("</table>")
    return lines


def write_html(out_path: str, title: str, summary: Sequence[str], entries: Sequence[dict]) -> None:
    """Write an HTML page with a summary and, per query, its picture and a ranked table.

    Args:
      out_path: the page to write; pictures and gallery files are linked relative to its folder.
      title: page title and heading.
      summary: lines shown as a list under the heading.
      entries: one dict per query: "query" (path), "picture" (PNG file name next to the page),
        "matches" [{"path", "similarity", "correct" (bool or None)}] best first.
    """
    out_dir = os.path.dirname(out_path)
    lines = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        f"{_STYLE}</head><body>",
        f"<h1>{html.escape(title)}</h1><ul>",
    ]
    lines += [f"<li>{html.escape(line)}</li>" for line in summary]
    lines.append("</ul>")
    for entry in entries:
        lines += _ranking_lines(entry, out_dir)
    lines.append("</body></html>")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
