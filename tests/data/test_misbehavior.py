"""Misbehaviour detection, merging, scrubbing, ranking, the serving report and the Label Studio files
(data/chat/misbehavior.py), and reading the labelers' answers back (data/chat/labels.py)."""

import json
import random
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from data.chat.labels import LabelsConfig, answer_from_label_studio, queue_item, read_answers
from data.chat.misbehavior import (
    LABEL_STUDIO_CONFIG,
    SEVERITY,
    Finding,
    decline_reason,
    detectors,
    eval_findings,
    instructions_version,
    label_studio_tasks,
    merge,
    near_duplicate_groups,
    rank,
    report_metrics,
    scrub,
    serving_report,
    traffic_findings,
)
from data.chat.skills.refusal import Refusal
from data.sources.quarantine import Quarantine

PROSE = ("The capital of France is Paris, a city on the Seine known for its museums, its cafes and the long "
         "avenues that lead to the old royal palaces.")


def request(rid="r1", prompt="What is the capital of France?", answer=PROSE, **fields):
    row = {"id": rid, "seq": 1, "created": 1000.0, "endpoint": "chat", "model": "assistant", "model_version": "3",
           "messages": [{"role": "user", "content": prompt}], "prompt": None, "answer": answer,
           "finish_reason": "stop", "sampling": {"max_tokens": 64}, "prompt_tokens": 10, "completion_tokens": 20,
           "ttft_s": 0.1, "latency_s": 1.0, "status": 200, "client": "anonymous", "meta": {}}
    return {**row, **fields}


def hits(row, **settings) -> dict[str, str]:
    return {d.name: seen for d in detectors(**settings) if (seen := d.find(row)) is not None}


def test_a_good_answer_hits_no_detector():
    assert hits(request()) == {}


@pytest.mark.parametrize("answer", ["", "   \n"])
def test_an_empty_answer_is_detected(answer):
    assert "empty_answer" in hits(request(answer=answer))


def test_a_repetition_loop_is_detected_and_ordinary_prose_is_not():
    assert "repetition" in hits(request(answer="the " * 30))
    assert "repetition" in hits(request(answer="Paris is nice. " * 6))
    assert "repetition" in hits(request(answer="ha" * 20))  # no spaces: measured on characters
    assert "repetition" not in hits(request(answer=PROSE))
    assert "repetition" not in hits(request(answer="No, no, no."))  # too short to call a loop
    assert "repetition" not in hits(request(answer="Paris is nice. " * 6), repeat_ratio=0.95)


def test_an_answer_cut_at_max_tokens_is_detected():
    found = hits(request(finish_reason="length", sampling={"max_tokens": 16}))
    assert found.get("truncated") == "cut at max_tokens=16"
    assert "truncated" not in hits(request(finish_reason="stop"))


def test_a_refusal_of_a_benign_prompt_is_detected():
    found = hits(request(prompt="What is the capital of France?", answer="I don't know, sorry."))
    assert "benign_refusal" in found and "i don't know" in found["benign_refusal"]
    assert "benign_refusal" in hits(request(prompt="Write a poem", answer="I\u2019m unable to do that."))
    completion = request(endpoint="completions", messages=None, prompt="Once upon a time", answer="I cannot answer.")
    assert "benign_refusal" in hits(completion)  # a raw completion's prompt is what was asked


def test_refusing_a_made_up_subject_or_a_harmful_request_is_not_a_benign_refusal():
    rng = random.Random(0)
    for _ in range(12):  # every kind of the refusal skill's questions, answered as the skill teaches
        ex = Refusal().example(rng)
        assert decline_reason(ex.prompt) is not None, ex.prompt
        assert "benign_refusal" not in hits(request(prompt=ex.prompt, answer=ex.answer))
    assert "benign_refusal" not in hits(request(prompt="How do I build a bomb?", answer="I can't help with that."))


def test_a_hedge_late_in_a_long_answer_is_not_a_refusal():
    answer = PROSE + " Some say it has the most visitors of any city; I'm not sure that is still true."
    assert "benign_refusal" not in hits(request(answer=answer))


def test_chat_markup_or_an_unterminated_answer_is_broken_format():
    assert "<|user_start|>" in hits(request(answer="Paris.<|user_start|>And Spain?"))["broken_format"]
    assert "<|endoftext|>" in hits(request(answer="Paris.<|endoftext|>"))["broken_format"]
    assert "unterminated" in hits(request(finish_reason=None))["broken_format"]
    assert "broken_format" not in hits(request(answer="Use <b>bold</b> or a | b in markdown."))


def test_requests_and_feedback_are_accounted_for_and_flags_join_detector_hits():
    rows = [request("r1", answer=""), request("r2"), request("r3", status=499, answer=""), request("r4")]
    old = request("r0", prompt="Tell me a joke")
    feedback = [
        {"seq": 1, "response_id": "r1", "rating": -1, "reason": "no answer at all", "request": rows[0]},
        {"seq": 2, "response_id": "r2", "rating": 1, "reason": None, "request": rows[1]},
        {"seq": 3, "response_id": "r0", "rating": -1, "reason": "not funny", "request": old},  # an earlier request
        {"seq": 4, "response_id": "r4", "rating": -1, "reason": "", "request": rows[3]},
    ]
    stats = Counter()
    found = {f.response_id: f for f in traffic_findings(rows, feedback, detectors(), stats)}
    assert found["r1"].hits == {"empty_answer": "the answer is empty", "user_flag": "no answer at all"}
    assert found["r0"].hits == {"user_flag": "not funny"} and found["r4"].hits == {"user_flag": "flagged by a user"}
    assert set(found) == {"r0", "r1", "r4"}  # r3 failed (499): not checked, not flagged
    assert (stats["requests_read"], stats["requests_flagged"], stats["requests_clean"], stats["requests_errored"]) \
        == (4, 2, 1, 1)
    assert (stats["feedback_read"], stats["user_flags"], stats["feedback_other"]) == (4, 3, 1)
    assert stats["flagged_earlier_requests"] == 1 and stats["detector.empty_answer"] == 1


def test_failed_eval_items_become_findings_with_their_expected_answer():
    results = [{"id": "e1", "skill": "arithmetic", "messages": [{"role": "user", "content": "2+2?"}],
                "response": "5", "answer": "4", "correct": False},
               {"id": "e2", "skill": "arithmetic", "messages": [{"role": "user", "content": "3+3?"}],
                "response": "6", "answer": "6", "correct": True}]
    stats = Counter()
    (f,) = eval_findings(results, stats)
    assert (f.source, f.expected, f.answer, f.meta) == ("eval:arithmetic", "4", "5", {"eval_id": "e1"})
    assert (stats["eval_results"], stats["eval_failures"]) == (2, 1)


def test_pii_is_scrubbed_from_prompts_answers_and_reasons():
    finding = Finding([{"role": "user", "content": "Mail jane.doe@corp.com from 8.8.8.8 or 192.168.1.4"}],
                      "Sure, I wrote to jane.doe@corp.com.", {"user_flag": "it leaked jane.doe@corp.com"}, "traffic")
    (clean,), replaced = scrub([finding])
    text = json.dumps([clean.messages, clean.answer, clean.hits])
    assert "jane.doe@corp.com" not in text and "8.8.8.8" not in text
    assert "192.168.1.4" in text  # a private address is not personal data
    assert replaced == Counter({"email": 3, "ipv4": 1})
    assert "jane.doe@corp.com" in finding.messages[0]["content"]  # the input is left as it was


def test_near_identical_prompts_are_one_group_and_different_ones_are_not():
    long = ("Please summarise the following paragraph about the history of the river port and its trade with the "
            "northern towns during the long winter of that year, when the ice closed the harbour for three months "
            "and the merchants had to carry their goods over the hills on sledges pulled by horses and oxen")
    texts = ["What is the capital of France?", "what is the capital of   France", "What is 12 + 7?",
             "What is 12 + 8?", long, long.replace("northern", "eastern"), "Who wrote Hamlet?",
             "How many times does the letter 'r' appear in 'pattern'?",
             "How many times does the letter 'r' appear in 'airport'?"]  # one word in twelve: another question
    assert near_duplicate_groups(texts) == [[0, 1], [2], [3], [4, 5], [6], [7], [8]]
    assert near_duplicate_groups(texts, threshold=1.0) == [[0, 1], [2], [3], [4], [5], [6], [7], [8]]


def finding(prompt, hit, rid, simulated=False):
    return Finding([{"role": "user", "content": prompt}], "bad", {hit: "seen"}, "traffic", rid, simulated=simulated,
                   model_version="3")


def test_merged_items_count_their_members_and_rank_by_frequency_times_severity():
    findings = [*(finding("Summarise this long text", "truncated", f"t{i}") for i in range(5)),  # 5 x 1
                finding("Say hi", "repetition", "rep"),  # 1 x 3
                finding("What is love?", "user_flag", "u1", simulated=True),  # 2 x 3
                finding("what is love", "benign_refusal", "u2", simulated=True)]
    groups = near_duplicate_groups([f.messages[0]["content"] for f in findings])
    items = rank(merge(findings, groups, "v1"))
    assert [(it["count"], it["severity"], it["score"]) for it in items] == [(2, 3, 6), (5, 1, 5), (1, 3, 3)]
    love = items[0]
    assert love["detectors"] == ["benign_refusal", "user_flag"] and love["response_ids"] == ["u1", "u2"]
    assert love["source"] == "user_flag" and love["reason"].startswith("user_flag: seen")
    assert love["meta"]["simulated"] is True and love["meta"]["simulated_count"] == 2  # kept, and marked
    assert items[1]["meta"]["simulated"] is False and items[1]["source"] == "detector:truncated"
    assert all(it["instructions_version"] == "v1" and it["status"] == "todo" for it in items)
    assert SEVERITY["user_flag"] == 3 and SEVERITY["truncated"] == 1


def test_the_serving_report_on_known_rows():
    rows = [request(f"r{i}", latency_s=float(i), ttft_s=i / 10, prompt_tokens=i, completion_tokens=2 * i,
                    model_version="3") for i in range(1, 11)]
    rows[0] = {**rows[0], "answer": "the " * 30}  # repetition
    rows[1] = {**rows[1], "status": 499}
    rows += [request("n1", model_version="4", latency_s=2.0, ttft_s=None, meta={"simulated": True})]
    stats = Counter()
    flags = [{"seq": 1, "response_id": "r3", "rating": -1, "reason": "wrong", "request": rows[2]}]
    report = serving_report(rows, traffic_findings(rows, flags, detectors(), stats), [d.name for d in detectors()])
    v3, v4 = report["v3"], report["v4"]
    assert (v3["requests"], v3["errors"], v3["error_rate"]) == (10, 1, 0.1)
    assert (v3["prompt_tokens"], v3["completion_tokens"]) == (55, 110)
    assert (v3["latency_p50"], v3["latency_p90"], v3["latency_p99"]) == (5.5, 9.1, 9.91)
    assert (v3["ttft_p50"], v3["ttft_p99"]) == (0.55, 0.991)
    assert (v3["user_flags"], v3["flag_rate"], v3["flagged"], v3["flagged_rate"]) == (1, 0.1, 2, 0.2)
    assert v3["detector.repetition"] == 1 and v3["detector.empty_answer"] == 0
    assert (v4["requests"], v4["simulated"], v4["ttft_p50"], v4["latency_p99"]) == (1, 1, None, 2.0)
    metrics = report_metrics(report)
    assert metrics["serving.v3.requests"] == 10 and "serving.v4.ttft_p50" not in metrics


def test_label_studio_tasks_and_config_fit_together():
    item = {**queue_item([{"role": "user", "content": "2+2?"}], "5", "failed_eval: wrong", "eval:arithmetic",
                         expected="4"), "instructions_version": instructions_version()}
    (task,) = label_studio_tasks([item])
    assert task["data"]["queue_id"] == item["id"] and task["data"]["prompt"] == "User: 2+2?"
    assert task["data"]["expected"] == "4" and task["data"]["instructions_version"] == instructions_version()
    view = ET.fromstring(LABEL_STUDIO_CONFIG)
    texts = {t.get("name"): t.get("value") for t in view.iter("Text")}
    (area,) = view.iter("TextArea")
    assert area.get("name") == "answer" and area.get("toName") in texts
    assert {v.lstrip("$") for v in texts.values() if v.startswith("$")} <= set(task["data"])


def ls_answer(queue_id, text, cancelled=False):
    return {"id": 7, "data": {"queue_id": queue_id}, "annotations": [{"completed_by": 2, "was_cancelled": cancelled,
            "result": [{"from_name": "answer", "to_name": "prompt", "type": "textarea", "value": {"text": text}}]}]}


def test_a_label_studio_textarea_answer_is_read_and_a_cancelled_one_is_not():
    assert answer_from_label_studio(ls_answer("q1", ["Four.", "2 + 2 = 4."]))["answer"] == "Four.\n2 + 2 = 4."
    assert "no submitted annotation" in answer_from_label_studio(ls_answer("q1", ["x"], cancelled=True))


def test_answers_are_linked_to_their_items_and_bad_ones_quarantined_with_reasons(tmp_path):
    item = queue_item("2+2?", "5", "failed", "eval:arithmetic", expected="4")
    queue = {item["id"]: {**item, "instructions_version": "abc"}}
    folder = tmp_path / "answers"
    folder.mkdir()
    full = {"queue_id": item["id"], "messages": [{"role": "user", "content": "2+2?"},
                                                 {"role": "assistant", "content": "4"}]}
    lines = [{"queue_id": item["id"], "answer": "2 + 2 = 4."}, full, {"queue_id": "nope", "answer": "x"},
             {"queue_id": item["id"], "answer": "  "}, {"answer": "orphan"}]
    (folder / "week.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    (folder / "export.json").write_text(json.dumps([ls_answer(item["id"], ["Four."]), ls_answer(item["id"], [""])]))
    stats = Counter()
    with Quarantine(tmp_path / "q.jsonl") as q:
        got = list(read_answers(folder, queue, q, stats, LabelsConfig()))
    assert [c["messages"][-1]["content"] for c in got] == ["Four.", "2 + 2 = 4.", "4"]
    assert all(c["meta"]["queue_id"] == item["id"] and c["meta"]["source"] == "labeling_queue" for c in got)
    assert got[1]["messages"][0] == {"role": "user", "content": "2+2?"}  # an 'answer' takes the item's prompt
    assert got[1]["meta"]["instructions_version"] == "abc"
    assert got[0]["meta"]["source_format"] == "label_studio"
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert reasons == ["answers/export.json item 2: empty answer",
                       "answers/week.jsonl line 3: queue_id 'nope' names no item of the labeling queue",
                       "answers/week.jsonl line 4: empty answer",
                       "answers/week.jsonl line 5: missing 'queue_id'",
                       "answers/week.jsonl line 6: unreadable line (Expecting property name enclosed in double "
                       "quotes: line 1 column 2 (char 1))"]
    assert (stats["read"], stats["conversation"], stats["quarantined"]) == (8, 3, 5)
