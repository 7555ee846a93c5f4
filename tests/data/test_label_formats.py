"""Label formats as labeling teams deliver them: ShareGPT, Label Studio and Argilla conversations and rankings, read
from real inbox files; rankings become pairs; each record keeps its labeler and labeling-instructions version."""

import json
from collections import Counter, defaultdict

import pytest

from data.chat.labels import (
    LabelsConfig,
    inbox_files,
    instructions_versions,
    ranking_pairs,
    read_inbox,
    read_jsonl,
    split_key,
    split_records,
)
from data.sources.quarantine import Quarantine


def read(inbox, tmp_path, default_version=None):
    """(records, stats, quarantine rows) of reading `inbox`; checks the source-record counts reconcile."""
    stats: Counter = Counter()
    with Quarantine(tmp_path / "q.jsonl") as q:
        out = list(read_inbox(inbox, q, stats, LabelsConfig(), default_version=default_version))
    assert stats["read"] == stats["quarantined"] + len(out) - stats["pairs_from_rankings"] + stats["rankings"]
    assert len(out) == stats["conversation"] + stats["comparison"]
    return out, stats, read_jsonl(tmp_path / "q.jsonl")


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, list) and path.suffix == ".jsonl":
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in content))
    else:
        path.write_text(json.dumps(content))
    return path


def sharegpt(*turns, **extra):
    return {**extra, "conversations": [{"from": f, "value": v} for f, v in turns]}


def ls_annotation(result, by=5, cancelled=False):
    return {"completed_by": by, "was_cancelled": cancelled, "result": [result]}


def ls_textarea_task(task_id, prompt, lines, **data):
    result = {"from_name": "answer", "to_name": "prompt", "type": "textarea", "value": {"text": lines}}
    return {"id": task_id, "data": {"prompt": prompt, **data}, "annotations": [ls_annotation(result)]}


ANSWERS = [{"id": "a", "body": "Paris."}, {"id": "b", "body": "It is Paris, on the Seine."},
           {"id": "c", "body": "Lyon."}, {"id": "d", "body": "I do not know."}]


def ls_ranker_task(task_id, ranker, items=ANSWERS, by=5):
    result = {"from_name": "rank", "to_name": "answers", "type": "ranker", "value": {"ranker": ranker}}
    return {"id": task_id, "data": {"prompt": "Capital of France?", "items": items},
            "annotations": [ls_annotation(result, by)]}


FIELDS = {"prompt": "Capital of France?", "r1": "Paris.", "r2": "It is Paris, on the Seine.", "r3": "Lyon.",
          "r4": "I do not know."}


def argilla_v1(rec_id, question, value, user="u-1", fields=FIELDS, status="submitted", **extra):
    return {"id": rec_id, "fields": fields, **extra,
            "responses": [{"user_id": user, "status": status, "values": {question: {"value": value}}}]}


def argilla_v2(rec_id, question, value, user="u-2", fields=FIELDS, status="submitted"):
    return {"id": rec_id, "fields": fields, "responses": {question: [{"user_id": user, "value": value,
                                                                      "status": status}]}}


def triples(records):
    return [(r["chosen"], r["rejected"]) for _, r in records]


# ---------------------------------------------------------------------------------------------------------------
# ranking -> pairs


def test_a_strict_ranking_of_k_answers_makes_every_better_worse_pair():
    assert ranking_pairs([["a"], ["b"], ["c"], ["d"]]) == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]


def test_tied_answers_make_no_pair_with_each_other_and_a_lone_rank_makes_none():
    # a > b = c > d: b and c both beat d and both lose to a, but face no pair with each other
    assert ranking_pairs([["a"], ["b", "c"], ["d"]]) == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "d"), ("c", "d")]
    assert ranking_pairs([["a", "b"], ["c", "d"]]) == [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]
    assert ranking_pairs([["a", "b", "c"]]) == []
    assert ranking_pairs([["a"]]) == [] and ranking_pairs([]) == []


# ---------------------------------------------------------------------------------------------------------------
# conversations


def test_sharegpt_json_list_and_jsonl_become_openai_conversations(tmp_path):
    inbox = tmp_path / "inbox"
    write(inbox / "sharegpt.json", [
        sharegpt(("system", "Be brief."), ("human", "2+2?"), ("gpt", "4"), id="sg-1"),
        sharegpt(("user", "Hi"), ("assistant", "Hello!"), ("human", "Bye"), ("chatgpt", "Goodbye!"),
                 meta={"labeler": "ann"}),
    ])
    write(inbox / "sharegpt.jsonl", [sharegpt(("human", "Name a color."), ("model", "Blue."), labeler="bo")])
    out, stats, rows = read(inbox, tmp_path)
    assert rows == [] and stats["read"] == 3 and [k for k, _ in out] == ["conversation"] * 3
    first, second, third = (r for _, r in out)
    assert first["id"] == "sg-1" and first["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user", "assistant"]
    assert second["id"] and second["meta"]["labeler"] == "ann" and second["meta"]["source_format"] == "sharegpt"
    assert third["meta"] == {"source_format": "sharegpt", "batch": "sharegpt.jsonl", "instructions_version": None,
                             "labeler": "bo"}


def test_a_label_studio_writing_task_becomes_a_user_assistant_conversation(tmp_path):
    inbox = tmp_path / "inbox"
    write(inbox / "ls-sft.json", [ls_textarea_task(11, "Say hi in French.", ["Bonjour !", "(informal: salut)"],
                                                   instructions_version="v2")])
    (out,), _, _ = read(inbox, tmp_path)
    kind, rec = out
    assert kind == "conversation" and rec["id"] == "ls-11"
    assert rec["messages"] == [{"role": "user", "content": "Say hi in French."},
                               {"role": "assistant", "content": "Bonjour !\n(informal: salut)"}]
    assert (rec["meta"]["labeler"], rec["meta"]["instructions_version"]) == (5, "v2")


def test_argilla_sft_records_v1_and_v2_become_conversations(tmp_path):
    fields = {"prompt": "Capital of Italy?", "context": "geography"}
    inbox = tmp_path / "inbox"
    write(inbox / "argilla-sft.jsonl", [
        argilla_v1("s1", "response", "Rome.", fields=fields, metadata={"instructions_version": "v3"}),
        argilla_v2("s2", "response", "Rome, on the Tiber.", fields=fields),
    ])
    out, _, rows = read(inbox, tmp_path)
    assert rows == []
    assert [(r["id"], r["messages"][-1]["content"], r["meta"]["labeler"]) for _, r in out] == [
        ("argilla-s1", "Rome.", "u-1"), ("argilla-s2", "Rome, on the Tiber.", "u-2")]
    assert out[0][1]["messages"][0] == {"role": "user", "content": "Capital of Italy?"}
    assert [r["meta"]["instructions_version"] for _, r in out] == ["v3", None]


# ---------------------------------------------------------------------------------------------------------------
# rankings


def test_label_studio_ranker_orders_and_buckets_become_pairs(tmp_path):
    inbox = tmp_path / "inbox"
    write(inbox / "ls-rank.json", [
        ls_ranker_task(1, {"rank": ["b", "a", "c"]}, items=ANSWERS[:3]),  # List + Ranker: a strict order
        ls_ranker_task(2, ["b", "a"], items=ANSWERS[:2]),                 # older export: a plain list
        # buckets best first: a and b tie, c and d tie, and "_" (left unsorted) is no rank
        ls_ranker_task(3, {"good": ["a", "b"], "bad": ["c"], "_": ["d"]}),
    ])
    out, stats, rows = read(inbox, tmp_path)
    assert rows == [] and (stats["read"], stats["rankings"], stats["pairs_from_rankings"]) == (3, 3, 6)
    p = {item["id"]: item["body"] for item in ANSWERS}
    assert triples(out) == [(p["b"], p["a"]), (p["b"], p["c"]), (p["a"], p["c"]),
                            (p["b"], p["a"]),
                            (p["a"], p["c"]), (p["b"], p["c"])]
    assert [r["id"] for _, r in out] == ["ls-1-0", "ls-1-1", "ls-1-2", "ls-2-0", "ls-3-0", "ls-3-1"]
    third = out[4][1]
    assert third["prompt"] == "Capital of France?"
    assert {k: third["meta"][k] for k in ("ranking_id", "pair", "compared", "labeler")} == {
        "ranking_id": "ls-3", "pair": 0, "compared": ["a", "c"], "labeler": 5}


def test_argilla_rankings_of_four_with_a_tie_become_their_pairs(tmp_path):
    tied = [{"value": "r1", "rank": 2}, {"value": "r2", "rank": 1}, {"value": "r3", "rank": 2},
            {"value": "r4", "rank": 3}]  # r2 > r1 = r3 > r4
    inbox = tmp_path / "inbox"
    write(inbox / "argilla-rank.jsonl", [argilla_v1("k1", "preference", tied),
                                         argilla_v2("k2", "preference", ["r4", "r3", "r2", "r1"])])
    out, stats, rows = read(inbox, tmp_path)
    assert rows == [] and (stats["read"], stats["rankings"], stats["pairs_from_rankings"]) == (2, 2, 5 + 6)
    f = FIELDS
    assert triples(out[:5]) == [(f["r2"], f["r1"]), (f["r2"], f["r3"]), (f["r2"], f["r4"]),
                                (f["r1"], f["r4"]), (f["r3"], f["r4"])]
    assert triples(out[5:]) == [(f["r4"], f["r3"]), (f["r4"], f["r2"]), (f["r4"], f["r1"]),
                                (f["r3"], f["r2"]), (f["r3"], f["r1"]), (f["r2"], f["r1"])]
    assert {r["meta"]["labeler"] for _, r in out[:5]} == {"u-1"} and {r["meta"]["labeler"] for _, r in out[5:]} == {
        "u-2"}
    assert [r["id"] for _, r in out[:5]] == [f"argilla-k1-{i}" for i in range(5)]


def test_pairs_of_one_ranking_land_on_one_side_of_the_split(tmp_path):
    inbox = tmp_path / "inbox"
    write(inbox / "rankings.jsonl", [argilla_v2(f"q{i}", "preference", ["r1", "r2", "r3", "r4"],
                                                fields={**FIELDS, "prompt": f"Question {i}?"}) for i in range(40)])
    out, _, _ = read(inbox, tmp_path)
    train, val = split_records([r for _, r in out], 0.5, seed=0, key=lambda r: split_key("comparison", r))
    sides = defaultdict(set)
    for side, records in (("train", train), ("val", val)):
        for r in records:
            sides[r["meta"]["ranking_id"]].add(side)
    assert len(sides) == 40 and all(len(s) == 1 for s in sides.values())
    assert 8 < sum(s == {"val"} for s in sides.values()) < 32
    plain = {"prompt": "p", "chosen": "a", "rejected": "b"}  # a plain comparison still splits by what it says
    assert split_key("comparison", {**plain, "meta": {}}) == split_key("comparison", plain)


# ---------------------------------------------------------------------------------------------------------------
# broken records


def test_broken_records_of_each_format_are_quarantined_with_file_line_and_reason(tmp_path):
    inbox = tmp_path / "inbox"
    write(inbox / "sharegpt.json", [
        sharegpt(("human", "Hi"), ("gpt", "Hello")),
        sharegpt(("human", "Hi"), ("bot", "Hello")),             # item 2: unknown speaker
        {"conversations": "Hi"},                                 # item 3: not a list of turns
        sharegpt(("human", "Hi"), ("gpt", "Hello"), ("human", "Bye")),  # item 4: ends with the user
    ])
    write(inbox / "label-studio.json", [
        ls_textarea_task(1, "Hi?", ["Hello."]),
        {"id": 2, "data": {"prompt": "Hi?"}, "annotations": [ls_annotation({"type": "textarea"}, cancelled=True)]},
        ls_textarea_task(3, "Hi?", [""]),                        # item 3: empty answer
        ls_ranker_task(4, {"rank": ["a", "zz"]}),                # item 4: ranks an answer the task does not have
        ls_ranker_task(5, {"good": ["a", "b", "c", "d"]}),       # item 5: all tied, no pair
        ls_ranker_task(6, {"rank": ["a", "b", "c"]}, items=[*ANSWERS[:2], {"id": "c", "body": "Paris."}]),
    ])
    write(inbox / "argilla.jsonl", [
        argilla_v2("ok", "preference", ["r1", "r2"]),
        argilla_v1("draft", "preference", ["r1", "r2"], status="draft"),  # line 2: nothing submitted
        argilla_v2("noprompt", "preference", ["r1", "r2"], fields={"r1": "a", "r2": "b"}),  # line 3
        '{"fields": {"prompt": ',                                # line 4: truncated
    ])
    out, stats, rows = read(inbox, tmp_path)
    assert [(k, r["id"]) for k, r in out[:2]] == [("comparison", "argilla-ok-0"), ("conversation", "ls-1")]
    assert out[2][0] == "conversation" and len(out[2][1]["id"]) == 16  # no id delivered: its content hash
    assert stats["read"] == 14 and stats["quarantined"] == 11 == len(rows)
    assert [r["source"] for r in rows] == [
        "argilla.jsonl:2", "argilla.jsonl:3", "argilla.jsonl:4",
        "label-studio.json:2", "label-studio.json:3", "label-studio.json:4", "label-studio.json:5",
        "label-studio.json:6", "sharegpt.json:2", "sharegpt.json:3", "sharegpt.json:4"]
    reasons = [r["reason"] for r in rows]
    assert reasons[0].startswith("argilla.jsonl line 2: Argilla record draft: no submitted ranking")
    assert reasons[1] == "argilla.jsonl line 3: Argilla record noprompt: no prompt field " \
                         "(one of prompt/instruction/request/question/input/text)"
    assert reasons[2].startswith("argilla.jsonl line 4: invalid JSON")
    assert reasons[3] == "label-studio.json item 2: Label Studio task 2: no submitted pairwise, ranker or textarea " \
                         "annotation"
    assert reasons[4] == "label-studio.json item 3: messages[1]: empty content"
    assert reasons[5] == "label-studio.json item 4: Label Studio task 4: ranked answer 'zz' is not one of its " \
                         "answers (a/b/c/d)"
    assert reasons[6] == "label-studio.json item 5: Label Studio task 5: the ranking makes no pair " \
                         "(fewer than two ranks)"
    assert reasons[7] == "label-studio.json item 6: pair 1 of 3: 'chosen' and 'rejected' are identical"
    assert reasons[8].startswith("sharegpt.json item 2: conversations[1]: unknown speaker 'bot' (expected one of")
    assert reasons[9] == "sharegpt.json item 3: 'conversations' must be a list of turns, got str"
    assert reasons[10] == "sharegpt.json item 4: 'messages' must end with an assistant turn"
    assert stats["rankings"] == 1 and stats["pairs_from_rankings"] == 1  # quarantined rankings make no pairs


# ---------------------------------------------------------------------------------------------------------------
# labeler and labeling-instructions version


def test_each_record_keeps_its_labeler_and_the_instructions_version_of_its_batch(tmp_path):
    inbox = tmp_path / "inbox"
    conv = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    own = {**conv, "id": "own", "meta": {"instructions_version": "v4", "labeler": "lee"}}
    write(inbox / "week-1.jsonl", [own, {**conv, "id": "side", "labeler": "kim"}])
    write(inbox / "week-1.jsonl.meta.json", {"instructions_version": "v3", "labeler": "team-a"})
    write(inbox / "team-b" / "ranked.json", [ls_ranker_task(9, ["a", "b"], by={"id": 4, "email": "x@lab.example"})])
    write(inbox / "team-b" / "batch.json", {"instructions_version": 2})
    write(inbox / "loose" / "plain.jsonl", [{**conv, "id": "loose"}])
    assert [p.relative_to(inbox).as_posix() for p in inbox_files(inbox)] == [
        "loose/plain.jsonl", "team-b/ranked.json", "week-1.jsonl"]  # the sidecars are no batches
    out, _, rows = read(inbox, tmp_path)
    assert rows == []
    got = {r["id"]: (r["meta"].get("labeler"), r["meta"]["instructions_version"], r["meta"]["batch"]) for _, r in out}
    assert got == {"own": ("lee", "v4", "week-1.jsonl"), "side": ("kim", "v3", "week-1.jsonl"),
                   "ls-9-0": ("x@lab.example", "2", "team-b/ranked.json"), "loose": (None, None, "loose/plain.jsonl")}
    assert instructions_versions(out) == {
        "2": {"files": ["team-b/ranked.json"], "conversations": 0, "comparisons": 1},
        "unspecified": {"files": ["loose/plain.jsonl"], "conversations": 1, "comparisons": 0},
        "v3": {"files": ["week-1.jsonl"], "conversations": 1, "comparisons": 0},
        "v4": {"files": ["week-1.jsonl"], "conversations": 1, "comparisons": 0}}
    out, _, _ = read(inbox, tmp_path, default_version="builtin")  # what the built-in sample inbox is filed under
    assert {r["id"]: r["meta"]["instructions_version"] for _, r in out}["loose"] == "builtin"


def test_an_unreadable_batch_sidecar_names_itself(tmp_path):
    inbox = tmp_path / "inbox"
    write(inbox / "a.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    (inbox / "a.jsonl.meta.json").write_text('{"instructions_version": ')
    with pytest.raises(ValueError, match=r"batch sidecar .*a\.jsonl\.meta\.json: unreadable JSON"):
        read(inbox, tmp_path)
