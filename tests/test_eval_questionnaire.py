"""Questionnaire: blank CSV round trip, validation of filled ones (bad rows reported), the Fig. 4a table
against hand-computed percentages, and the chart."""
import csv

import pytest

from skingpt4.evaluation import questionnaire as q


def _fill(blank, path, reviewer, ratings):
    """ratings: {(case_id, statement_id): rating text}; other rows stay blank."""
    with open(blank, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["rating"] = ratings.get((row["case_id"], row["statement_id"]), "")
        row["reviewer"] = reviewer
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=q.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_blank_has_seven_statements_per_case(tmp_path):
    path = q.write_blank(tmp_path / "blank.csv", ["c1", "c2"])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 14
    assert [r["statement_id"] for r in rows[:7]] == [sid for sid, _, _ in q.STATEMENTS]
    assert rows[7]["case_id"] == "c2" and rows[7]["statement"] == "The diagnosis is correct or relevant."
    assert all(r["rating"] == "" for r in rows)


def test_aggregate_matches_hand_computed_percentages(tmp_path):
    blank = q.write_blank(tmp_path / "blank.csv", ["c1", "c2", "c3", "c4"])
    # 'diagnosis' statement: reviewer A rates 5,4,4,2; reviewer B rates SA, neutral, 1, agree.
    # pooled (8 ratings): SA 2, A 3, N 1, D 1, SD 1 -> 25%, 37.5%, 12.5%, 12.5%, 12.5%; agree_total 62.5%
    a = _fill(blank, tmp_path / "a.csv", "A", {("c1", "diagnosis"): "5", ("c2", "diagnosis"): "4",
                                               ("c3", "diagnosis"): "Agree", ("c4", "diagnosis"): "2",
                                               ("c1", "privacy"): "SA", ("c2", "privacy"): "sd", ("c3", "privacy"): "3"})
    b = _fill(blank, tmp_path / "b.csv", "B", {("c1", "diagnosis"): "strongly agree", ("c2", "diagnosis"): " Neutral",
                                               ("c3", "diagnosis"): "1", ("c4", "diagnosis"): "A"})
    ratings = q.read_filled([a, b], known_cases={"c1", "c2", "c3", "c4"})
    table = {row["statement_id"]: row for row in q.aggregate(ratings.rows)}
    d = table["diagnosis"]
    assert d["n"] == 8
    assert (d["strongly_agree"], d["agree"], d["neutral"], d["disagree"], d["strongly_disagree"]) == (25.0, 37.5, 12.5, 12.5, 12.5)
    assert d["agree_total"] == 62.5 and d["paper_agree_total"] == 80.63
    p = table["privacy"]  # 1 SA, 1 N, 1 SD of 3 -> 33.33 each
    assert p["n"] == 3 and p["strongly_agree"] == 33.33 and p["neutral"] == 33.33 and p["agree_total"] == 33.33
    assert table["willing"]["n"] == 0  # nobody rated it: no percentages invented
    # unrated rows are reported, not silently dropped: 2 reviewers x 28 rows - 11 rated
    assert len(ratings.problems) == 56 - 11 and all(p.reason == "not rated" for p in ratings.problems)
    by_reviewer = {r["reviewer"]: r for r in q.per_reviewer(ratings.rows)}
    assert by_reviewer["A"]["n"] == 7 and by_reviewer["A"]["agree_total"] == pytest.approx(100 * 4 / 7, abs=0.01)


def test_bad_rows_are_reported_with_file_line_and_reason(tmp_path):
    path = tmp_path / "filled.csv"
    rows = [
        {"case_id": "c1", "statement_id": "diagnosis", "rating": "4", "reviewer": ""},        # ok, reviewer = file stem
        {"case_id": "c1", "statement_id": "diagnosis", "rating": "5", "reviewer": ""},        # duplicate
        {"case_id": "c1", "statement_id": "diagnsis", "rating": "5", "reviewer": ""},         # typo
        {"case_id": "c9", "statement_id": "useful", "rating": "5", "reviewer": ""},           # unknown case
        {"case_id": "c1", "statement_id": "useful", "rating": "6", "reviewer": ""},           # out of scale
        {"case_id": "", "statement_id": "useful", "rating": "5", "reviewer": ""},             # no case
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=q.COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    ratings = q.read_filled([path], known_cases={"c1"})
    assert ratings.rows == [{"case_id": "c1", "statement_id": "diagnosis", "reviewer": "filled", "rating": "agree"}]
    reasons = [(p.line, p.reason) for p in ratings.problems]
    assert reasons[0] == (3, f"duplicate rating by 'filled' (first at {path}:2)")
    assert reasons[1][0] == 4 and reasons[1][1].startswith("unknown statement_id 'diagnsis' (valid: diagnosis, informative")
    assert reasons[2] == (5, "unknown case_id 'c9'")
    assert reasons[3][0] == 6 and reasons[3][1].startswith("invalid rating '6'")
    assert reasons[4] == (7, "empty case_id")
    assert str(ratings.problems[2]) == f"{path}:5: unknown case_id 'c9' (case_id=c9,statement_id=useful,rating=5)"


def test_missing_columns_and_files_are_clear_errors(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("case,rating\nc1,5\n")
    with pytest.raises(q.QuestionnaireError, match=r"lacks the column\(s\) \['case_id', 'statement_id'\]"):
        q.read_filled([path])
    with pytest.raises(q.QuestionnaireError, match="questionnaire file not found"):
        q.read_filled([tmp_path / "nope.csv"])


def test_stacked_chart_is_a_png(tmp_path):
    rows = [{"case_id": "c1", "statement_id": sid, "reviewer": "A", "rating": "agree"} for sid, _, _ in q.STATEMENTS]
    path = q.plot_stacked(q.aggregate(rows), tmp_path / "fig4a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
