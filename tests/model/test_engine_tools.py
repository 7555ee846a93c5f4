"""The tool loop on a model that has learned to call: the single-sequence engine and the batch runner give the same
answers, run the same calls, and the evals' run_items checks the answer written after the result."""
import pytest

from model.chat import render_prompt
from model.engine import Engine, answer_batch
from model.evaluate import load_assistant, run_items
from model.identity import with_system_message
from model.tools import Toolbox, make_toolbox
from tests.serve.tool_model import IDENTITY, MULTIPLY, MULTIPLY_ANSWER, make_tool_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    return load_assistant(make_tool_model(tmp_path_factory.mktemp("tool-model")), "cpu")


def asked(question: str) -> list[dict]:
    return with_system_message([{"role": "user", "content": question}], IDENTITY)


def test_the_engine_runs_the_call_and_answers_from_its_result(assistant):
    model, tok = assistant
    use = Engine(model, tok).answer(asked(MULTIPLY), max_new_tokens=64, tools=make_toolbox(["calculator"]))
    assert use.calls == [{"name": "calculator", "arguments": {"expression": "4821 * 37"}, "result": "178377"}]
    assert use.text == MULTIPLY_ANSWER and use.finish_reason == "stop"
    assert [m["role"] for m in use.messages] == ["assistant", "tool", "assistant"]


def test_batched_answers_with_tools_equal_the_single_sequence_engine(assistant):
    model, tok = assistant
    questions = [MULTIPLY, "Hello there", MULTIPLY, "What do the notes say about rivers?"]
    box = make_toolbox(["calculator"])
    batched = answer_batch(model, tok, [render_prompt(tok, asked(q)) for q in questions], 64, box, max_batch=2)
    alone = [Engine(model, tok).answer(asked(q), max_new_tokens=64, tools=box) for q in questions]
    assert [(b.text, b.calls, b.finish_reason) for b in batched] == [(a.text, a.calls, a.finish_reason) for a in alone]
    # the search call it learned gets an error result here: this toolbox has no search
    assert batched[3].calls[0]["result"] == "error: no tool named 'search' (tools: calculator)"


def test_without_the_tool_the_call_gets_an_error_and_the_answer_goes_on(assistant):
    model, tok = assistant
    use = Engine(model, tok).answer(asked(MULTIPLY), max_new_tokens=64, tools=Toolbox())
    assert use.calls[0]["result"] == "error: no tool named 'calculator' (tools: none)"
    assert use.text != MULTIPLY_ANSWER  # what it says next follows an error, not a result


def test_run_items_scores_the_answer_after_the_result_and_keeps_the_calls(assistant):
    model, tok = assistant
    item = {"id": "x", "skill": "calculator", "messages": [{"role": "user", "content": MULTIPLY}], "reference": 178377}
    results, scores = run_items(model, tok, [item], 64, system=IDENTITY, tools=make_toolbox(["calculator"]))
    assert scores == {"score.calculator": 1.0}
    assert results[0]["calls"][0]["result"] == "178377" and results[0]["messages"] == item["messages"]
    _, bare = run_items(model, tok, [item], 64, system=IDENTITY, tools=Toolbox())
    assert bare == {"score.calculator": 0.0}
