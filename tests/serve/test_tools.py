"""Tools through the API, against the real server and the official `openai` client: the server runs its built-in tools
inside a request (results in `tool_results` and the request store), within the limits and off the engine's thread; a
client's own functions come back as OpenAI tool_calls (streamed or not) and their results are read when sent back;
tool_choice; the model's own system message. The model has memorised a few tool-calling conversations
(tests/serve/tool_model.py), so asked one of them it makes the call; what it says otherwise is not what is tested."""

import contextlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from flows.serving import build_app
from model.chat import render_prompt
from model.tools import ToolLimits, ToolsConfig
from serve.app import ServeSettings
from tests.serve.conftest import running
from tests.serve.tool_model import (
    IDENTITY,
    MULTIPLY,
    MULTIPLY_ANSWER,
    WEATHER,
    WEATHER_ANSWER,
    WEATHER_QUESTION,
    WEATHER_RESULT,
    WEATHER_SYSTEM,
    register_tool_model,
    tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CHAT = "/v1/chat/completions"
ASK_MULTIPLY = [{"role": "user", "content": MULTIPLY}]
ASK_WEATHER = [{"role": "user", "content": WEATHER_QUESTION}]
MULTIPLY_CALL = {"name": "calculator", "arguments": {"expression": "4821 * 37"}, "content": "178377"}


@dataclass
class Server:
    url: str
    app: object

    @property
    def worker(self):
        return self.app.state.served.current

    @property
    def store(self):
        return self.app.state.store

    def client(self) -> OpenAI:
        return OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@contextlib.contextmanager
def serve(workdir: Path, **settings):
    app = build_app(workdir, "assistant@production", ServeSettings(**settings), poll_s=0)
    with running(app) as url:
        yield Server(url, app)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tool_model_dir) -> Path:
    wd = tmp_path_factory.mktemp("tools")
    register_tool_model(wd, tool_model_dir)
    return wd


@pytest.fixture(scope="module")
def server(workdir):
    with serve(workdir) as server:
        yield server


@pytest.fixture(scope="module")
def tok(tool_model_dir):
    return tokenizer(tool_model_dir)


def post(server: Server, body: dict) -> dict:
    r = httpx.post(server.url + CHAT, json={"temperature": 0, "max_tokens": 40, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def stream(server: Server, body: dict) -> list[dict]:
    with httpx.stream("POST", server.url + CHAT, timeout=60,
                      json={"temperature": 0, "max_tokens": 40, **body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def chat(server: Server, messages: list[dict], **body):
    return server.client().chat.completions.create(**{"model": "assistant", "messages": messages,
                                                      "temperature": 0, "max_tokens": 40, **body})


# --------------------------------------------------------------------------------------------------- built-in tools


def test_a_built_in_call_runs_inside_the_request_and_the_answer_reads_its_result(server):
    answer = chat(server, ASK_MULTIPLY)
    message = answer.choices[0].message
    assert message.content == MULTIPLY_ANSWER and answer.choices[0].finish_reason == "stop"
    assert message.tool_results == [MULTIPLY_CALL]  # the documented extra field, as the openai client keeps it
    assert message.tool_calls is None


def test_the_request_store_keeps_what_was_called(server):
    answer = chat(server, ASK_MULTIPLY)
    row = server.store.get(answer.id)
    assert row["meta"]["tool_results"] == [MULTIPLY_CALL]
    assert row["meta"]["tools"] == ["calculator"]  # search is off: the version has no index
    assert row["answer"] == MULTIPLY_ANSWER


def test_each_choice_runs_its_own_calls(server):
    body = post(server, {"messages": ASK_MULTIPLY, "n": 2})
    for choice in body["choices"]:
        assert choice["message"]["tool_results"] == [MULTIPLY_CALL]
        assert choice["message"]["content"] == MULTIPLY_ANSWER
    choices = server.store.get(body["id"])["meta"]["choices"]
    assert [c["tool_results"] for c in choices] == [[MULTIPLY_CALL]] * 2


def test_metrics_count_the_tool_calls_by_tool_and_outcome(workdir, server):
    def calls(outcome: str) -> float:
        text = httpx.get(server.url + "/metrics").text
        line = f'factory_tool_calls_total{{outcome="{outcome}",tool="calculator"}} '
        return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)), 0.0)

    before = calls("ok")
    chat(server, ASK_MULTIPLY)
    assert calls("ok") == before + 1


def test_a_streamed_answer_sends_the_tool_result_as_a_delta_then_the_answer(server):
    chunks = stream(server, {"messages": ASK_MULTIPLY})
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    results = [d["tool_results"] for d in deltas if "tool_results" in d]
    assert results == [[MULTIPLY_CALL]]
    after = deltas[[i for i, d in enumerate(deltas) if "tool_results" in d][0]:]
    assert "".join(d.get("content") or "" for d in deltas) == "".join(d.get("content") or "" for d in after)
    assert "".join(d.get("content") or "" for d in deltas) == MULTIPLY_ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_the_call_limit_answers_a_call_past_it_with_an_error_result(workdir):
    limits = ToolLimits(max_calls=0)
    with serve(workdir, tools=ToolsConfig(limits=limits)) as server:
        message = chat(server, ASK_MULTIPLY).choices[0].message
    first = message.tool_results[0]
    assert (first["name"], first["arguments"]) == ("calculator", {"expression": "4821 * 37"})
    assert first["content"] == "error: no more tool calls in this answer (at most 0)"


def test_max_tokens_bounds_the_call_and_the_answer_together(server):
    answer = chat(server, ASK_MULTIPLY, max_tokens=5)  # the call alone is longer
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 5
    assert getattr(answer.choices[0].message, "tool_results", None) is None


def test_a_server_without_tools_leaves_the_call_as_text(workdir):
    with serve(workdir, tools=ToolsConfig(enabled=[])) as server:
        answer = chat(server, ASK_MULTIPLY)
    assert getattr(answer.choices[0].message, "tool_results", None) is None
    assert '"name": "calculator"' in answer.choices[0].message.content


class SlowCalculator:
    """The calculator, held until the test lets it answer."""

    name, description = "calculator", "slow arithmetic"
    parameters = {"type": "object", "properties": {"expression": {"type": "string"}}}

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def run(self, arguments):
        self.started.set()
        self.release.wait(20)
        return "178377"


def test_a_slow_tool_does_not_hold_up_the_other_requests(server):
    slow = SlowCalculator()
    tools = server.worker.tools
    real, tools["calculator"] = tools["calculator"], slow
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(chat, server, ASK_MULTIPLY)
            assert slow.started.wait(30)
            other = chat(server, [{"role": "user", "content": "Hello there"}], max_tokens=8)
            assert other.choices[0].finish_reason in ("stop", "length")
            assert not waiting.done()  # the call is still running while the other request was answered
            slow.release.set()
            assert waiting.result().choices[0].message.content == MULTIPLY_ANSWER
    finally:
        slow.release.set()
        tools["calculator"] = real


# --------------------------------------------------------------------------------------------------- client tools


def test_a_call_to_a_client_function_ends_the_answer_with_openai_tool_calls(server):
    answer = chat(server, ASK_WEATHER, tools=[WEATHER])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert server.store.get(answer.id)["meta"]["tool_calls"] == [call.model_dump()]


def test_a_streamed_call_to_a_client_function_comes_as_a_tool_calls_delta(server):
    events = list(chat(server, ASK_WEATHER, tools=[WEATHER], stream=True))
    calls = [d for e in events for d in (e.choices[0].delta.tool_calls or [])]
    assert [(c.index, c.type, c.function.name) for c in calls] == [(0, "function", "get_weather")]
    assert json.loads("".join(c.function.arguments for c in calls)) == {"city": "Paris"}
    assert events[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(e.choices[0].delta.content or "" for e in events)


def test_the_openai_client_sends_the_result_back_and_gets_the_answer(server, tok):
    first = chat(server, ASK_WEATHER, tools=[WEATHER]).choices[0].message
    call = first.tool_calls[0]
    messages = [*ASK_WEATHER, first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT}]
    answer = chat(server, messages, tools=[WEATHER])
    assert answer.choices[0].message.content == WEATHER_ANSWER
    # the call went back to the model as its own canonical text, arguments an object, not OpenAI's JSON string
    seen = [{"role": "system", "content": WEATHER_SYSTEM}, *ASK_WEATHER,
            {"role": "assistant", "content": None,
             "tool_calls": ['{"name": "get_weather", "arguments": {"city": "Paris"}}']},
            {"role": "tool", "content": WEATHER_RESULT}]
    assert answer.usage.prompt_tokens == len(render_prompt(tok, seen))
    assert server.store.get(answer.id)["messages"][1]["tool_calls"][0]["id"] == call.id


def test_client_functions_are_listed_in_the_system_message(server, tok):
    body = post(server, {"messages": ASK_WEATHER, "tools": [WEATHER]})
    seen = [{"role": "system", "content": WEATHER_SYSTEM}, *ASK_WEATHER]
    assert body["usage"]["prompt_tokens"] == len(render_prompt(tok, seen))
    assert "get_weather: The weather now in a city." in WEATHER_SYSTEM


def test_tool_choice_none_turns_every_tool_off(server, tok):
    answer = chat(server, ASK_WEATHER, tools=[WEATHER], tool_choice="none")
    assert answer.choices[0].finish_reason != "tool_calls" and answer.choices[0].message.tool_calls is None
    # the functions are not shown to the model, and no built-in tool runs either
    assert answer.usage.prompt_tokens == len(render_prompt(tok, [{"role": "system", "content": IDENTITY.system_text()},
                                                                 *ASK_WEATHER]))
    off = chat(server, ASK_MULTIPLY, tool_choice="none").choices[0].message
    assert getattr(off, "tool_results", None) is None and '"name": "calculator"' in off.content


def test_a_greeting_is_answered_without_a_call_when_the_model_may_choose(server):
    free = chat(server, [{"role": "user", "content": "Hello there"}], tools=[WEATHER]).choices[0]
    assert free.finish_reason == "stop" and free.message.tool_calls is None


def test_tool_choice_naming_a_function_makes_the_answer_a_call_to_it(server):
    forced = chat(server, [{"role": "user", "content": "Hello there"}], tools=[WEATHER],
                  tool_choice={"type": "function", "function": {"name": "get_weather"}}).choices[0]
    assert forced.finish_reason == "tool_calls"
    assert forced.message.tool_calls[0].function.name == "get_weather"


def test_tool_choice_required_starts_the_answer_with_a_call(server):
    # on a greeting this model does not call by itself; made to start a call, it writes one (a call, or an error
    # result for a call no tool takes) or leaves it unclosed, and a call never closed comes back as text
    forced = chat(server, [{"role": "user", "content": "Hello there"}], tools=[WEATHER], tool_choice="required")
    message = forced.choices[0].message
    assert message.tool_calls or getattr(message, "tool_results", None) or \
        message.content.startswith("<|tool_call_start|>"), message


def test_a_call_never_closed_streams_as_the_text_the_answer_stores(server):
    # made to start a call with too few tokens to close it: the call is text, and the stream must send all of it
    body = {"messages": [{"role": "user", "content": "Hello there"}], "tool_choice": "required", "max_tokens": 3}
    whole = post(server, body)["choices"][0]["message"]["content"]
    assert whole.startswith("<|tool_call_start|>") and len(whole) > len("<|tool_call_start|>")
    chunks = stream(server, body)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == whole
    assert server.store.get(chunks[0]["id"])["answer"] == whole


@pytest.mark.parametrize(("body", "named"), [
    ({"messages": ASK_WEATHER, "tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]},
     "'nope'"),
    ({"messages": ASK_WEATHER, "tools": [WEATHER, WEATHER]}, "declared twice"),
    ({"messages": [*ASK_WEATHER, {"role": "tool", "content": None}]}, "content is missing"),
    ({"messages": [{"role": "user", "content": "hi", "tool_calls": [{"function": {"name": "f"}}]}]},
     "only an assistant message has tool_calls"),
], ids=["an undeclared tool_choice", "a function twice", "a tool result without content", "a user's tool_calls"])
def test_a_malformed_tool_request_is_refused_naming_the_problem(server, body, named):
    r = httpx.post(server.url + CHAT, json=body, timeout=60)
    assert r.status_code == 422, r.text
    assert named in r.json()["error"]["message"]


def test_text_content_parts_are_read_as_their_text(server):
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is 4821 "}, {"type": "text",
                                                                                    "text": "times 37?"}]}]
    assert post(server, {"messages": parts})["choices"][0]["message"]["content"] == MULTIPLY_ANSWER


# --------------------------------------------------------------------------------------------------- identity


def test_a_chat_without_a_system_message_gets_the_model_own(server, tok):
    body = post(server, {"messages": ASK_MULTIPLY, "max_tokens": 2})
    seen = [{"role": "system", "content": IDENTITY.system_text()}, *ASK_MULTIPLY]
    assert body["usage"]["prompt_tokens"] == len(render_prompt(tok, seen))
    assert server.store.get(body["id"])["meta"]["system"] == IDENTITY.system_text()


def test_a_chat_with_its_own_system_message_keeps_it(server, tok):
    messages = [{"role": "system", "content": "Be brief."}, *ASK_MULTIPLY]
    body = post(server, {"messages": messages, "max_tokens": 2})
    assert body["usage"]["prompt_tokens"] == len(render_prompt(tok, messages))
    assert "system" not in server.store.get(body["id"])["meta"]
