"""The report card's change column: paired over the items two models were both asked, with an interval."""

from pathlib import Path

from data.chat.labels import write_jsonl
from flows.report import change, per_item


def _evals(folder: Path, right: dict[str, bool], attacks: dict[str, bool], refused: dict[str, bool]) -> Path:
    folder.mkdir()
    write_jsonl(folder / "results.jsonl", [{"id": k, "skill": "arithmetic", "correct": v} for k, v in right.items()])
    write_jsonl(folder / "redteam.jsonl",
                [{"id": k, "family": "direct", "expect": "refuse", "attack_success": v, "over_refusal": None}
                 for k, v in attacks.items()]
                + [{"id": k, "family": "benign", "expect": "answer", "attack_success": None, "over_refusal": v}
                   for k, v in refused.items()])
    return folder


def test_a_change_on_shared_items_is_paired_with_an_interval_that_can_exclude_zero(tmp_path):
    ids = [f"i{n}" for n in range(30)]
    mine = per_item(_evals(tmp_path / "a", {k: True for k in ids}, {k: False for k in ids[:24]},
                           {k: n < 3 for n, k in enumerate(ids[:10])}))
    theirs = per_item(_evals(tmp_path / "b", {k: n >= 15 for n, k in enumerate(ids)}, {k: False for k in ids[:24]},
                             {k: n < 3 for n, k in enumerate(ids[:10])}))
    assert set(mine) == {"score.arithmetic", "redteam.asr", "redteam.asr.direct", "redteam.over_refusal"}
    # 15 of 30 items flipped to right: +0.5, an interval well above 0
    moved = change(None, None, mine["score.arithmetic"], theirs["score.arithmetic"])
    low = float(moved.split("[")[1].split(",")[0])
    assert moved.startswith("+0.500 [") and moved.endswith("(paired n 30)") and low > 0.2
    # the same answers: no change, an interval around 0
    same = change(None, None, mine["redteam.over_refusal"], theirs["redteam.over_refusal"])
    assert same.startswith("+0.000 [-0.") and same.endswith("(paired n 10)")


def test_without_shared_items_the_change_is_the_plain_difference_marked_unpaired(tmp_path):
    mine = per_item(_evals(tmp_path / "a", {"x1": True, "x2": True}, {}, {}))
    theirs = per_item(_evals(tmp_path / "b", {"y1": True, "y2": False}, {}, {}))
    a, b = {"value": 1.0}, {"value": 0.5}
    assert change(a, b, mine["score.arithmetic"], theirs["score.arithmetic"]) == "+0.500 (unpaired)"
    assert change(a, None, mine["score.arithmetic"], None) == ""
    assert per_item(None) == {} and per_item(tmp_path / "gone") == {}
