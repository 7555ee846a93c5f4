"""Label schemas, inbox validation, dedup/splits, the labeling queue and the demo inbox."""

import json
from collections import Counter
from pathlib import Path

import pytest

from data.chat.labels import (
    LabelsConfig,
    content_hash,
    dedup_records,
    from_argilla,
    from_label_studio,
    queue_item,
    read_inbox,
    read_jsonl,
    record_kind,
    split_records,
    validate_comparison,
    validate_conversation,
    write_jsonl,
)
from data.samples.labels import build_label_inbox
from data.sources.quarantine import Quarantine

LIMITS = LabelsConfig()


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_valid_conversations_pass():
    plain = {"messages": msgs(("user", "Hi"), ("assistant", "Hello!"))}
    with_system = {"id": "x", "meta": {"a": 1},
                   "messages": msgs(("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"),
                                    ("user", "And 3+3?"), ("assistant", "6"))}
    with_tool = {"messages": [{"role": "user", "content": "Weather?"},
                              {"role": "assistant", "content": "", "tool_calls": [{"name": "weather"}]},
                              {"role": "tool", "content": "sunny"},
                              {"role": "assistant", "content": "It is sunny."}]}
    for rec in (plain, with_system, with_tool):
        assert validate_conversation(rec, LIMITS) is None


@pytest.mark.parametrize("messages, reason", [
    (msgs(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")), "'messages' must end with an assistant turn"),
    (msgs(("user", "Hi"), ("assistant", "Hello"), ("bot", "x"), ("assistant", "y")),
     "messages[2]: role 'bot' is not one of system/user/assistant/tool"),
    (msgs(("user", "Hi"), ("user", "Hi again"), ("assistant", "Hello")),
     "messages[1]: roles must alternate user/assistant ('user' after 'user')"),
    (msgs(("user", "  "), ("assistant", "Hello")), "messages[0]: empty content"),
    (msgs(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "x" * 9120)),
     "messages[3]: 9120 characters > max_chars_per_message 8000"),
    (msgs(("user", "a"), ("tool", "result"), ("assistant", "b")),
     "messages[1]: a 'tool' message must follow an assistant message, not 'user'"),
    (msgs(("user", "a"), ("system", "b"), ("assistant", "c")), "messages[1]: 'system' is only allowed as the first"),
    (msgs(("assistant", "hello")), "messages[0]: a conversation must start with a user turn"),
    ([], "'messages' is empty"),
    ("hello", "'messages' must be a list of messages, got str"),
    ([{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}],
     "messages[0]: 'content' must be a string, got int"),
])
def test_bad_conversations_get_the_right_reason(messages, reason):
    got = validate_conversation({"messages": messages}, LIMITS)
    assert got is not None and got.startswith(reason), got


def test_conversation_size_limits():
    limits = LabelsConfig(max_messages=4, max_chars_per_message=100, max_total_chars=150)
    too_many = msgs(*[("user", "q"), ("assistant", "a")] * 3)
    assert validate_conversation({"messages": too_many}, limits) == "6 messages > max_messages 4"
    too_long = msgs(("user", "q" * 80), ("assistant", "a" * 80))
    assert validate_conversation({"messages": too_long}, limits) == "160 characters in total > max_total_chars 150"


def test_non_objects_and_missing_messages_are_rejected():
    assert validate_conversation(["messages"], LIMITS) == "record must be a JSON object, got list"
    assert validate_conversation({"prompt": "x"}, LIMITS) == "missing 'messages'"
    assert validate_conversation({"messages": msgs(("user", "a"), ("assistant", "b")), "meta": "x"},
                                 LIMITS) == "'meta' must be an object, got str"


def test_comparisons_valid_and_invalid():
    ok = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
    assert validate_comparison(ok, LIMITS) is None
    assert validate_comparison({**ok, "prompt": msgs(("system", "s"), ("user", "2+2?"))}, LIMITS) is None
    cases = [
        ({**ok, "prompt": msgs(("user", "a"), ("assistant", "b"))}, "'prompt' must end with a user turn"),
        ({"prompt": "p", "chosen": "4"}, "missing 'rejected'"),
        ({**ok, "rejected": " "}, "'rejected' is empty"),
        ({**ok, "prompt": ""}, "'prompt' is empty"),
        ({**ok, "chosen": 4}, "'chosen' must be a string, got int"),
        ({**ok, "rejected": "4 "}, "'chosen' and 'rejected' are identical"),
        ({**ok, "chosen": "x" * 9000}, "'chosen': 9000 characters > max_chars_per_message 8000"),
    ]
    for rec, reason in cases:
        assert validate_comparison(rec, LIMITS) == reason


def test_record_kind():
    assert record_kind({"messages": []}) == "conversation"
    assert record_kind({"prompt": "p", "chosen": "a", "rejected": "b"}) == "comparison"
    assert record_kind({"text": "hello"}) is None


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_read_inbox_quarantines_each_bad_line_with_file_and_line(tmp_path):
    good = json.dumps({"messages": msgs(("user", "Hi"), ("assistant", "Hello"))}).encode()
    comp = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode()
    write_lines(tmp_path / "inbox" / "a.jsonl", [
        good,                                   # line 1
        b"",                                    # line 2: blank, skipped, not counted
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # line 3: latin-1 bytes
        b'{"messages": [',                      # line 4: truncated
        b"[1, 2]",                              # line 5: not an object
        b'{"text": "a document"}',              # line 6: unknown kind
        json.dumps({"messages": msgs(("user", "Hi"))}).encode(),  # line 7: ends with the user
    ])
    write_lines(tmp_path / "inbox" / "sub" / "b.jsonl", [comp])
    (tmp_path / "inbox" / "notes.txt").write_text("not a jsonl file")
    stats: Counter = Counter()
    with Quarantine(tmp_path / "q.jsonl") as q:
        out = list(read_inbox(tmp_path / "inbox", q, stats, LIMITS))
        assert q.count == 5
    assert [kind for kind, _ in out] == ["conversation", "comparison"]
    assert stats["read"] == 7 and stats["quarantined"] == 5
    assert stats["quarantined:invalid_utf8"] == 1 and stats["quarantined:bad_json"] == 1
    rows = read_jsonl(tmp_path / "q.jsonl")
    assert [r["source"] for r in rows] == ["a.jsonl:3", "a.jsonl:4", "a.jsonl:5", "a.jsonl:6", "a.jsonl:7"]
    reasons = [r["reason"] for r in rows]
    assert reasons[0].startswith("a.jsonl line 3: invalid UTF-8")
    assert reasons[1].startswith("a.jsonl line 4: invalid JSON")
    assert reasons[2] == "a.jsonl line 5: record must be a JSON object, got list"
    assert reasons[3].startswith("a.jsonl line 6: neither a conversation")
    assert reasons[4] == "a.jsonl line 7: 'messages' must end with an assistant turn"


def test_read_inbox_on_demo_inbox_reconciles(tmp_path):
    counts = build_label_inbox(tmp_path / "inbox", pages=None, n_conversations=600, n_comparisons=120, seed=3)
    assert set(counts["bad"]) >= {"ends_with_user", "empty_assistant", "role_bot", "invalid_utf8",
                                  "truncated_json", "duplicate"}
    assert "conversations-batch-002.jsonl" in counts["files"] and "comparisons-batch-001.jsonl" in counts["files"]
    stats: Counter = Counter()
    with Quarantine(tmp_path / "q.jsonl") as q:
        out = list(read_inbox(tmp_path / "inbox", q, stats, LIMITS))
    assert stats["read"] == counts["lines"] == len(out) + stats["quarantined"]
    assert stats["quarantined"] == counts["invalid"] == len(read_jsonl(tmp_path / "q.jsonl"))
    assert stats["quarantined:invalid_utf8"] == counts["bad"]["invalid_utf8"]
    assert len(out) == counts["conversations"] + counts["comparisons"] + counts["duplicates"]
    unique, dropped = dedup_records(out)
    assert dropped == counts["duplicates"] and len(unique) == 720


def test_demo_inbox_is_deterministic(tmp_path):
    a = build_label_inbox(tmp_path / "a", None, n_conversations=300, n_comparisons=50, seed=1)
    b = build_label_inbox(tmp_path / "b", None, n_conversations=300, n_comparisons=50, seed=1)
    c = build_label_inbox(tmp_path / "c", None, n_conversations=300, n_comparisons=50, seed=2)
    assert a == b
    for name in a["files"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / a["files"][0]).read_bytes() != (tmp_path / "c" / c["files"][0]).read_bytes()


def test_demo_inbox_without_bad_records_is_all_valid(tmp_path):
    counts = build_label_inbox(tmp_path / "inbox", None, n_conversations=100, n_comparisons=20, bad_records=False)
    stats: Counter = Counter()
    with Quarantine(tmp_path / "q.jsonl") as q:
        out = list(read_inbox(tmp_path / "inbox", q, stats, LIMITS))
    assert counts["invalid"] == 0 and stats["quarantined"] == 0 and len(out) == 120


def test_content_hash_ignores_id_and_meta_but_not_content():
    a = {"id": "1", "messages": msgs(("user", "Hi"), ("assistant", "Hello")), "meta": {"x": 1}}
    b = {"id": "2", "messages": msgs(("user", "Hi"), ("assistant", "Hello"))}
    c = {"messages": msgs(("user", "Hi"), ("assistant", "Hello!"))}
    assert content_hash("conversation", a) == content_hash("conversation", b)
    assert content_hash("conversation", a) != content_hash("conversation", c)
    p = {"prompt": "q", "chosen": "a", "rejected": "b"}
    assert content_hash("comparison", p) != content_hash("comparison", {**p, "chosen": "b", "rejected": "a"})
    with pytest.raises(ValueError, match="unknown kind"):
        content_hash("document", a)


def test_split_is_deterministic_and_stable_per_record():
    records = [{"messages": msgs(("user", f"q{i}"), ("assistant", f"a{i}"))} for i in range(2000)]
    train, val = split_records(records, 0.1, seed=0)
    assert len(train) + len(val) == 2000 and 140 < len(val) < 260
    assert split_records(records, 0.1, seed=0) == (train, val)
    # a record's side does not depend on the rest of the set, so it survives the set growing
    _, val_half = split_records(records[:1000], 0.1, seed=0)
    assert val_half == [r for r in val if r in records[:1000]]
    _, val_other_seed = split_records(records, 0.1, seed=1)
    assert val_other_seed != val
    pairs = [("conversation", r) for r in records[:100]]
    assert [r for _, r in split_records(pairs, 0.1, 0)[1]] == split_records(records[:100], 0.1, 0)[1]


def test_queue_item_fields_and_stable_id():
    item = queue_item("What is 2+2?", "5", reason="wrong answer", source="eval:arithmetic", expected="4")
    assert item["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert item["status"] == "todo" and item["source"] == "eval:arithmetic" and item["expected"] == "4"
    assert item["created"].endswith("+00:00") and item["meta"] == {}
    again = queue_item([{"role": "user", "content": "What is 2+2?"}], "5", "other reason", "eval:arithmetic")
    assert again["id"] == item["id"]
    assert queue_item("What is 2+2?", "4", "x", "eval:arithmetic")["id"] != item["id"]


def test_write_and_read_jsonl_roundtrip_atomically(tmp_path):
    path = tmp_path / "out" / "queue.jsonl"
    records = [{"a": i, "text": "caf\u00e9"} for i in range(3)]
    assert write_jsonl(path, iter(records)) == 3
    assert read_jsonl(path) == records
    assert [p.name for p in path.parent.iterdir()] == ["queue.jsonl"]  # no temp file left behind
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match="queue.jsonl line 3: invalid JSON"):
        read_jsonl(path)


def ls_task(task_id, selected, cancelled=False):
    return {"id": task_id, "data": {"prompt": "2+2?", "answer1": "4", "answer2": "5"},
            "annotations": [{"completed_by": 7, "was_cancelled": cancelled, "result": [
                {"type": "pairwise", "from_name": "comparison", "to_name": ["answer1", "answer2"],
                 "value": {"selected": selected}}]}]}


def test_label_studio_pairwise_tasks_become_comparisons():
    assert from_label_studio(ls_task(1, "left"))[0]["chosen"] == "4"
    (right,) = from_label_studio(ls_task(2, "right"))
    assert (right["prompt"], right["chosen"], right["rejected"]) == ("2+2?", "5", "4")
    assert "no submitted pairwise, ranker or textarea annotation" in from_label_studio(ls_task(3, "left", True))


def test_argilla_v1_and_v2_rankings_become_comparisons():
    fields = {"request": "2+2?", "response-1": "5", "response-2": "4"}
    v1 = {"id": "a", "fields": fields, "responses": [{"status": "submitted", "values": {"preference": {"value": [
        {"value": "response-1", "rank": 2}, {"value": "response-2", "rank": 1}]}}}]}
    v2 = {"id": "b", "fields": fields, "responses": {"preference": [
        {"value": ["response-2", "response-1"], "status": "submitted"}]}}
    for rec in (v1, v2):
        (got,) = from_argilla(rec)
        assert (got["prompt"], got["chosen"], got["rejected"]) == ("2+2?", "4", "5")
    draft = {"id": "c", "fields": fields, "responses": {"preference": [{"value": ["response-2", "response-1"],
                                                                         "status": "draft"}]}}
    assert "no submitted ranking" in from_argilla(draft)


def test_read_inbox_reads_tool_exports(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "label-studio.json").write_text(json.dumps([ls_task(1, "left"), ls_task(2, "right", cancelled=True)]))
    argilla = {"id": "a", "fields": {"prompt": "p", "response1": "good", "response2": "bad"},
               "responses": {"rank": [{"value": ["response1", "response2"], "status": "submitted"}]}}
    (inbox / "argilla.jsonl").write_text(json.dumps(argilla) + "\n")
    stats: Counter = Counter()
    with Quarantine(tmp_path / "q.jsonl") as q:
        out = list(read_inbox(inbox, q, stats, LIMITS))
    assert [(k, r["chosen"]) for k, r in out] == [("comparison", "good"), ("comparison", "4")]
    assert stats["read"] == 3 and stats["quarantined:bad_export"] == 1
    assert read_jsonl(tmp_path / "q.jsonl")[0]["reason"].startswith("label-studio.json item 2: Label Studio task 2")


def test_a_tool_calling_turn_may_have_null_content_as_openai_sends_it():
    rec = {"messages": [{"role": "user", "content": "Weather?"},
                        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "weather"}}]},
                        {"role": "tool", "content": "sunny"},
                        {"role": "assistant", "content": "It is sunny."}]}
    assert validate_conversation(rec, LIMITS) is None
    rec["messages"][1].pop("tool_calls")
    assert validate_conversation(rec, LIMITS) == "messages[1]: 'content' is missing"


def test_labels_config_rejects_unknown_settings_and_a_split_outside_0_1():
    assert LabelsConfig().inbox == "builtin:sample"
    with pytest.raises(ValueError, match="max_mesages"):
        LabelsConfig(max_mesages=3)
    with pytest.raises(ValueError, match="val_fraction"):
        LabelsConfig(val_fraction=1.5)
