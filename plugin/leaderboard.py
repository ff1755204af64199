"""A RobustBench-style leaderboard from any number of reports: ranked Markdown and HTML."""

from __future__ import annotations

import html
from collections.abc import Sequence

from locrob import markdown
from locrob.errors import LocrobError
from locrob.metrics.local_robustness import alpha_key, alpha_side
from locrob.report import Report, summary_columns, summary_value


def _column_name(metric: str, key: str) -> str:
    return f"{metric} {key}"


def ranked(
    reports: Sequence[Report], sort: str, ascending: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Header and rows, ranked by the column named ``sort`` (``"clean accuracy"``).

    Higher ranks first unless ``ascending``; reports without that value come last, unranked.
    """
    columns = summary_columns(reports)
    names = [_column_name(m, k) for m, k in columns]
    if sort not in names:
        raise LocrobError(f"no column '{sort}' to sort by; the reports have: {', '.join(names)}")
    metric, key = columns[names.index(sort)]
    with_value = [r for r in reports if summary_value(r, metric, key) is not None]
    without = [r for r in reports if summary_value(r, metric, key) is None]
    with_value.sort(key=lambda r: summary_value(r, metric, key), reverse=not ascending)
    header = ["rank", "model", "dataset", "n", *names]
    undecided = _undecided(with_value, names, metric, key)
    rows = []
    for rank, report in enumerate([*with_value, *without], start=1):
        values = [summary_value(report, m, k) for m, k in columns]
        mark = UNDECIDED if rank - 1 in undecided else ""
        rows.append(
            [
                f"{rank}{mark}" if report in with_value else "",
                report.label,
                str(report.dataset.get("name", "")),
                str(report.n_examples),
                *("" if v is None else f"{v:.4g}" for v in values),
            ]
        )
    return header, rows


UNDECIDED = "?"
UNDECIDED_NOTE = (
    f"{UNDECIDED}: its alpha_lim interval [lower, certified upper] overlaps the one of a rank "
    "above, so the bounds do not decide their order."
)


def _undecided(
    ranked_reports: Sequence[Report], names: list[str], metric: str, key: str
) -> set[int]:
    """Positions (from 0) whose alpha_lim interval overlaps the interval of any rank above,
    when the sorted column (``metric``'s ``key``) is an alpha_lim side whose lower
    (``alpha@r``) and upper (``alpha_upper@r``) sides both are in the reports."""
    named = alpha_side(key)
    if named is None or named[0] not in ("alpha", "alpha_upper"):
        return set()
    sides = (alpha_key(named[1]), alpha_key(named[1], "alpha_upper"))
    if not all(_column_name(metric, side) in names for side in sides):
        return set()
    bounds = [tuple(summary_value(rep, metric, side) for side in sides) for rep in ranked_reports]

    def overlap(a: tuple, b: tuple) -> bool:
        return None not in a + b and a[0] <= b[1] and b[0] <= a[1]

    return {i for i in range(1, len(bounds)) if any(overlap(bounds[i], b) for b in bounds[:i])}


def leaderboard_markdown(reports: Sequence[Report], sort: str, ascending: bool = False) -> str:
    """The leaderboard as a Markdown table (with a note where the α_lim intervals leave an
    order undecided)."""
    header, rows = ranked(reports, sort, ascending)
    note = f"\n{UNDECIDED_NOTE}\n" if any(row[0].endswith(UNDECIDED) for row in rows) else ""
    return markdown.table(header, rows) + note


def leaderboard_html(reports: Sequence[Report], sort: str, ascending: bool = False) -> str:
    """The leaderboard as a standalone HTML page, the sorted column highlighted."""
    header, rows = ranked(reports, sort, ascending)
    target = header.index(sort)

    def cells(tag: str, row: list[str]) -> str:
        return "".join(
            f"<{tag}{' class=sorted' if i == target else ''}>{html.escape(v)}</{tag}>"
            for i, v in enumerate(row)
        )

    body = "\n".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    undecided = any(row[0].endswith(UNDECIDED) for row in rows)
    note = f" {html.escape(UNDECIDED_NOTE)}" if undecided else ""
    order = "ascending" if ascending else "descending"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>locrob leaderboard</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f0f0f0; }}
.sorted {{ background: #fff3c4; font-weight: bold; }}
</style></head><body>
<h1>Leaderboard</h1>
<p>Ranked by <b>{html.escape(sort)}</b> ({order}).{note}</p>
<table>
<tr>{cells("th", header)}</tr>
{body}
</table>
</body></html>
"""
