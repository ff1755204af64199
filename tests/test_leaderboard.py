"""``locrob leaderboard``: reports ranked by one column, in Markdown and HTML."""

from __future__ import annotations

import pytest

import locrob
from locrob.leaderboard import leaderboard_html, leaderboard_markdown, ranked


def report(name: str, **summaries: dict[str, float]) -> locrob.Report:
    return locrob.Report(
        model={"name": name},
        dataset={"name": "digits"},
        split="test",
        n_examples=10,
        metrics={m: locrob.MetricResult(m, s) for m, s in summaries.items()},
    )


REPORTS = [
    report("a", clean={"accuracy": 0.90}, adversarial={"PGD": 0.40}),
    report("b<i>", clean={"accuracy": 0.97}, adversarial={"PGD": 0.10}),
    report("c", clean={"accuracy": 0.80}),
]


def test_ranks_by_the_column_with_missing_values_last_and_unranked():
    header, rows = ranked(REPORTS, "adversarial PGD")
    assert header == ["rank", "model", "dataset", "n", "clean accuracy", "adversarial PGD"]
    assert [(r[0], r[1], r[5]) for r in rows] == [
        ("1", "a", "0.4"),
        ("2", "b<i>", "0.1"),
        ("", "c", ""),
    ]
    _, rows = ranked(REPORTS, "clean accuracy", ascending=True)
    assert [r[1] for r in rows] == ["c", "a", "b<i>"]


def test_markdown_and_html_carry_the_same_table_escaped():
    md = leaderboard_markdown(REPORTS, "clean accuracy")
    assert md.splitlines()[2] == "| 1 | b<i> | digits | 10 | 0.97 | 0.1 |"
    page = leaderboard_html(REPORTS, "clean accuracy")
    assert "<td>b&lt;i&gt;</td>" in page and "<i>" not in page.split("<table>")[1]
    assert page.count("<tr>") == 4 and "class=sorted" in page


def test_unknown_column_lists_the_known_ones():
    with pytest.raises(
        locrob.LocrobError,
        match="no column 'pgd' to sort by; the reports have: clean accuracy, adversarial PGD",
    ):
        ranked(REPORTS, "pgd")


def test_leaderboard_command(tmp_path, locrob_cli):
    for r in REPORTS:
        r.save(tmp_path / r.label.replace("<", "").replace(">", ""))
    dirs = [str(tmp_path / d) for d in ("a", "bi", "c")]
    code, out, _ = locrob_cli(
        "leaderboard", *dirs, "--sort", "clean accuracy", "--out", str(tmp_path / "lb")
    )
    assert code == 0, out
    assert "| 1 | b<i> |" in out
    assert (tmp_path / "lb" / "leaderboard.html").read_text().startswith("<!doctype html>")


def test_folders_without_a_report_are_skipped_and_other_environments_warned_of(
    tmp_path, locrob_cli
):
    a, b = report("a", clean={"accuracy": 0.9}), report("b", clean={"accuracy": 0.8})
    a.environment = {"torch": "2.4.0", "threads": 8}
    b.environment = {"torch": "2.5.1", "threads": 8}
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    compare = tmp_path / "compare"  # where `locrob plot` writes: runs/* lists it
    args = [str(tmp_path / "a"), str(tmp_path / "b"), str(compare)]
    code, out, err = locrob_cli("plot", *args[:2], "--out", str(compare))
    assert code == 0 and "| a | digits |" in out
    assert err.splitlines() == [
        "locrob: warning: the reports were measured with different torch: "
        f"2.4.0 ({tmp_path / 'a'}); 2.5.1 ({tmp_path / 'b'})"
    ]
    board = ["--sort", "clean accuracy", "--out", str(tmp_path / "board")]
    for command in (["plot", *args, "--out", str(compare)], ["leaderboard", *args, *board]):
        code, out, err = locrob_cli(*command)
        assert code == 0, err
        skipped, *warnings = err.splitlines()
        assert skipped == f"locrob: skipped the folder(s) without a report.json: {compare}"
        assert len(warnings) == 1
    code, _, err = locrob_cli("leaderboard", str(compare), *board)
    assert code == 2
    assert err.startswith(f"locrob: error: no report.json in {compare}; write one with")


def test_ranks_by_either_side_of_alpha_lim_and_marks_orders_the_intervals_leave_open():
    def alpha(name: str, lower: float, upper: float) -> locrob.Report:
        sides = {"alpha@0.5": lower, "alpha_upper@0.5": upper}
        return report(name, **{"local-robustness": sides})

    models = [
        alpha("a", 0.1, 0.2),
        alpha("b", 0.15, 0.5),
        alpha("c", 0.6, 0.9),
        alpha("d", 1.0, 2.0),
    ]
    _, rows = ranked(models, "local-robustness alpha_upper@0.5", ascending=True)
    # a [0.1, 0.2] and b [0.15, 0.5] overlap; c and d are each certainly above the one before
    assert [(r[0], r[1]) for r in rows] == [("1", "a"), ("2?", "b"), ("3", "c"), ("4", "d")]
    board = leaderboard_markdown(models, "local-robustness alpha@0.5", ascending=True)
    assert "| 2? | b |" in board and "do not decide their order" in board
    assert "do not decide" in leaderboard_html(models, "local-robustness alpha@0.5", True)
    # not only the rank just above: [0, 10], [5, 6], [1, 4] leave the third open against the
    # first
    wide = [alpha("p", 0.0, 10.0), alpha("q", 5.0, 6.0), alpha("s", 1.0, 4.0)]
    _, rows = ranked(wide, "local-robustness alpha_upper@0.5")
    assert [(r[0], r[1]) for r in rows] == [("1", "p"), ("2?", "q"), ("3?", "s")]
    # lower bounds alone: nothing to decide with, nothing marked
    plain = [report(m.label, **{"local-robustness": {"alpha@0.5": 0.1}}) for m in models]
    assert "?" not in leaderboard_markdown(plain, "local-robustness alpha@0.5")
