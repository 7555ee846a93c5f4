"""Tools: the calculator computes exact arithmetic and refuses everything else with a message the model reads; the
toolbox turns every failure into an "error:" result and holds its limits; ToolUse pauses an answer on a call, puts the
result in its context exactly as the chat format renders a tool turn, and stops a model that keeps calling."""
import time

import pytest

from model.chat import render_conversation, render_prompt
from model.engine import ToolUse
from model.tokenizer import train_bpe
from model.tools import Calculator, Toolbox, ToolCall, ToolError, ToolLimits, format_call, make_toolbox, parse_call


@pytest.mark.parametrize("expression, result", [
    ("4821 * 37", "178377"), ("4821*37", "178377"), ("2 + 3 * 4", "14"), ("(2 + 3) * 4", "20"),
    ("178377 / 37", "4821"), ("7 / 2", "3.5"), ("1 / 3", "0.3333333333"), ("2 ^ 10", "1024"), ("2 ** 3 ** 2", "512"),
    ("-3 - -4", "1"), ("4,821 × 37", "178377"), ("10 ÷ 4", "2.5"), ("2 ^ -2", "0.25"), ("1.5 * 4", "6"),
    ("99999 * 99999", "9999800001"),
])
def test_calculator_computes_exact_arithmetic(expression, result):
    assert Calculator().run({"expression": expression}) == result


@pytest.mark.parametrize("expression, reason", [
    ("__import__('os').system('ls')", "'__import__' is not one"),
    ("abs(-3)", "'abs' is not one"),
    ("(1).__class__", "'.' is not one"),
    ("x + 1", "'x' is not one"),
    ("9 ** 9 ** 9", "too large"),
    ("10 ^ 101", "too large"),
    ("2 ** 5000", "too large"),
    ("(" * 40 + "1" + ")" * 40, "nests deeper"),
    ("1 / 0", "division by zero"),
    ("1 +", "ends too early"),
    ("(1 + 2", "not closed"),
    ("1 2", "unexpected 2"),
    ("1" * 250, "over 200 characters"),
    ("(-8) ^ 0.5", "not a real number"),
])
def test_calculator_refuses_anything_but_bounded_arithmetic(expression, reason):
    with pytest.raises(ToolError, match=reason):
        Calculator().run({"expression": expression})


def test_a_huge_power_is_refused_before_it_is_computed():
    started = time.perf_counter()
    with pytest.raises(ToolError):
        Calculator().run({"expression": "7 ^ 999"})
    assert time.perf_counter() - started < 0.1


def test_calls_parse_from_the_canonical_text_and_from_openai_string_arguments():
    call = ToolCall("calculator", {"expression": "1 + 1"})
    assert call.text == '{"name": "calculator", "arguments": {"expression": "1 + 1"}}'
    assert parse_call(call.text) == call
    assert parse_call('{"name": "calculator", "arguments": "{\\"expression\\": \\"1 + 1\\"}"}') == call
    for bad, reason in [("calculator(1+1)", "not JSON"), ('{"arguments": {}}', "a call is"),
                        ('{"name": "calculator", "arguments": [1]}', "must be an object")]:
        with pytest.raises(ToolError, match=reason):
            parse_call(bad)


class Sleepy:
    name, description, parameters = "sleepy", "never answers in time", {}

    def run(self, arguments):
        time.sleep(5)
        return "late"


class Broken:
    name, description, parameters = "broken", "always fails", {}

    def run(self, arguments):
        raise KeyError("index")


def test_the_toolbox_turns_every_failure_into_a_result_the_model_reads():
    box = Toolbox.of([Calculator(), Sleepy(), Broken()], ToolLimits(timeout_s=0.2, max_result_chars=80))
    assert box.call(format_call("calculator", {"expression": "6 * 7"})) == (ToolCall("calculator", {"expression":
                                                                                                  "6 * 7"}), "42")
    assert box.call(format_call("weather", {}))[1] == ("error: no tool named 'weather' (tools: calculator, sleepy, "
                                                       "broken)")
    assert box.call("not json")[1].startswith("error: the call is not JSON")
    assert box.call(format_call("calculator", {"expression": "abs(1)"}))[1].startswith("error: calculator only")
    assert box.call(format_call("calculator", {}))[1].startswith("error: calculator needs")
    started = time.perf_counter()
    assert box.call(format_call("sleepy", {}))[1] == "error: sleepy took longer than 0.2 s"
    assert time.perf_counter() - started < 1.0
    assert box.call(format_call("broken", {}))[1] == "error: broken failed: KeyError: 'index'"
    assert box.call(format_call("calculator", {"expression": "10 ^ 90"}))[1] == "1" + "0" * 76 + "..."


def test_make_toolbox_knows_its_tools_and_leaves_search_out_without_an_index():
    assert make_toolbox(["calculator", "search"]).names == ["calculator"]
    with pytest.raises(ValueError, match="unknown tool 'python'"):
        make_toolbox(["python"])


@pytest.fixture(scope="module")
def tok():
    return train_bpe(['What is 4821 times 37? {"name": "calculator", "arguments": {"expression": "4821 * 37"}} '
                      "4821 * 37 = 178377. Answer: 178377"] * 20, vocab_size=400)


def segment(tok, content: str, call: str) -> list[int]:
    return [*tok.encode(content), tok.special_id("<|tool_call_start|>"), *tok.encode(call),
            tok.special_id("<|tool_call_end|>")]


def test_tool_use_continues_from_the_context_the_chat_format_renders_for_the_same_turns(tok):
    question = [{"role": "user", "content": "What is 4821 times 37?"}]
    use = ToolUse(tok, Toolbox.of([Calculator()]), render_prompt(tok, question), max_new_tokens=64)
    call = format_call("calculator", {"expression": "4821 * 37"})
    ids = use.feed(segment(tok, "", call), "tool_call")
    assert use.calls == [{"name": "calculator", "arguments": {"expression": "4821 * 37"}, "result": "178377"}]
    # what the model reads next is exactly the rendered conversation with its tool turn, and a new assistant turn
    rendered = render_prompt(tok, [*question, *use.messages])
    assert ids == rendered
    final = tok.encode("4821 * 37 = 178377. Answer: 178377")
    assert use.feed(final, "stop") is None
    assert use.text == "4821 * 37 = 178377. Answer: 178377" and use.finish_reason == "stop"
    # and the whole answer, rendered as training data, trains on the call and the answer but not on the result
    ids, mask = render_conversation(tok, [*question, *use.messages], max_len=10_000)
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert call in trained and "Answer: 178377" in trained and "<|tool_result_start|>" not in trained
    assert use.budget == 64 - len(segment(tok, "", call)) - len(final)


def test_tool_use_stops_a_model_that_keeps_calling_past_the_limit(tok):
    use = ToolUse(tok, Toolbox.of([Calculator()], ToolLimits(max_calls=2)), [tok.bos_id], max_new_tokens=500)
    call = segment(tok, "", format_call("calculator", {"expression": "1 + 1"}))
    results = []
    while (ids := use.feed(call, "tool_call")) is not None:
        results.append(use.calls[-1]["result"])
        assert ids[-1] == tok.special_id("<|assistant_start|>")
    assert results == ["2", "2", "error: no more tool calls in this answer (at most 2)"]
    assert use.finish_reason == "tool_calls_exceeded" and len(use.calls) == 4
    assert [c["name"] for c in use.calls] == ["calculator"] * 4  # refused calls are named, not run


def test_without_tools_a_call_is_plain_text_and_nothing_runs(tok):
    use = ToolUse(tok, None, [tok.bos_id], max_new_tokens=50)
    assert use.pause_ids == frozenset()
    tokens = segment(tok, "", format_call("calculator", {"expression": "1 + 1"}))
    assert use.feed(tokens, "stop") is None
    assert use.calls == [] and "<|tool_call_start|>" in use.text


def test_a_call_that_uses_the_last_token_ends_the_answer_as_length(tok):
    call = segment(tok, "", format_call("calculator", {"expression": "1 + 1"}))
    use = ToolUse(tok, Toolbox.of([Calculator()]), [tok.bos_id], max_new_tokens=len(call))
    assert use.feed(call, "tool_call") is None
    assert use.finish_reason == "length" and use.calls[0]["result"] == "2"


def test_one_calculator_answers_concurrent_calls_each_with_its_own_result():
    from concurrent.futures import ThreadPoolExecutor

    calc = Calculator()
    expressions = [f"{n} * {n + 1} + ({n} - 3) ^ 2" for n in range(200)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda e: calc.run({"expression": e}), expressions))
    assert results == [str(n * (n + 1) + (n - 3) ** 2) for n in range(200)]


def test_tiny_powers_are_not_refused_as_too_large():
    assert Calculator().run({"expression": "2 ^ -20"}) == "9.536743164e-07"


def test_an_end_marker_without_a_start_leaves_the_segment_as_text(tok):
    use = ToolUse(tok, Toolbox.of([Calculator()]), [tok.bos_id], max_new_tokens=50)
    tokens = [*tok.encode("Answer: 2"), tok.special_id("<|tool_call_end|>")]
    assert use.feed(tokens, "tool_call") is None
    assert use.calls == [] and use.text.startswith("Answer: 2")
