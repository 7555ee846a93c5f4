"""`factory chat` with tools: each call and its result are shown before the answer (once, or turn by turn in the
loop, which keeps the tool turns in the conversation), the model's own system message by default, --system and
--no-tools. The model has memorised a few tool-calling conversations (tests/serve/tool_model.py)."""

import pytest
from typer.testing import CliRunner

from flows.cli import _call_line, app
from tests.serve.tool_model import DOCS_INSTRUCTIONS, MULTIPLY, MULTIPLY_ANSWER, RIVERS, register_tool_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tool_model_dir):
    wd = tmp_path_factory.mktemp("chat")
    register_tool_model(wd, tool_model_dir)  # no index_path tag: search is off
    return wd


def chat(workdir, *args: str, input: str | None = None) -> list[str]:
    result = CliRunner().invoke(app, ["chat", "--workdir", str(workdir), *args], input=input)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()


def test_chat_prompt_shows_the_call_and_its_result_then_the_answer(workdir):
    lines = chat(workdir, "--prompt", MULTIPLY)
    assert lines[-2:] == ["[calculator] 4821 * 37 -> 178377", MULTIPLY_ANSWER]
    assert lines[0].startswith("note: search is off")


def test_the_interactive_chat_shows_each_call_before_its_answer(workdir):
    lines = chat(workdir, input=f"{MULTIPLY}\n/quit\n")
    assert "you> [calculator] 4821 * 37 -> 178377" in lines  # the prompt is on the line input() left unfinished
    assert f"assistant> {MULTIPLY_ANSWER}" in lines


def test_the_interactive_chat_answers_the_next_turn_with_the_tool_turns_in_its_history(workdir, tool_model_dir):
    from model.checkpoint import load_model
    from model.engine import Engine
    from model.tools import Calculator, Toolbox
    from tests.serve.tool_model import IDENTITY, tokenizer

    lines = chat(workdir, input=f"{MULTIPLY}\nAnd again?\n/quit\n")
    engine = Engine(load_model(tool_model_dir).eval(), tokenizer(tool_model_dir))
    history = [{"role": "system", "content": IDENTITY.system_text()}, {"role": "user", "content": MULTIPLY}]
    first = engine.answer(history, max_new_tokens=128, tools=Toolbox.of([Calculator()]))
    assert [m["role"] for m in first.messages] == ["assistant", "tool", "assistant"]
    second = engine.answer([*history, *first.messages, {"role": "user", "content": "And again?"}],
                           max_new_tokens=128, tools=Toolbox.of([Calculator()]))
    without = engine.answer([*history, {"role": "assistant", "content": first.text},
                             {"role": "user", "content": "And again?"}], max_new_tokens=128,
                            tools=Toolbox.of([Calculator()]))
    shown = [_call_line(c) for c in second.calls]
    assert shown != [_call_line(c) for c in without.calls]  # so what is shown tells which history the loop kept
    assert "\n".join([*shown, f"assistant> {second.text}"]) in "\n".join(lines).replace("you> ", "")


def test_chat_without_tools_leaves_the_call_as_text(workdir):
    lines = chat(workdir, "--no-tools", "--prompt", MULTIPLY)
    assert not any(line.startswith("[calculator]") for line in lines)
    assert '"name": "calculator"' in lines[-1]


def test_chat_system_replaces_the_model_own_system_message(workdir):
    # with the docs instructions it learned to search; search is off here, so the call gets the toolbox's error
    lines = chat(workdir, "--system", DOCS_INSTRUCTIONS, "--prompt", RIVERS)
    assert "[search] rivers -> error: no tool named 'search' (tools: calculator)" in lines


def test_chat_with_both_system_options_exits_2(workdir):
    result = CliRunner().invoke(app, ["chat", "--workdir", str(workdir), "--system", "x", "--no-system",
                                      "--prompt", "hi"])
    assert result.exit_code == 2 and "--system and --no-system" in result.output
