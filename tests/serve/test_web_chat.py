"""The web chat page in a real browser (headless Chromium) against the real server: an answer streams in, a flag
with its reason reaches the store and is shown again after a reload, model and user text stay text, and a server
with API keys asks for one."""

import contextlib
import os
import re
from itertools import pairwise
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from serve.store import default_url
from tests.serve.conftest import running

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 30_000
API_KEY = "test-key-0123456789"
RESPONSE_ID = re.compile(r"^chatcmpl-")

# Each text node the page puts into an answer is one streamed chunk; an answer's aria-busy going from "true" to
# anything else is the end of its stream. Recorded in order, from the page's first script on.
WATCH_ANSWERS = """
window.__answers = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.type === "attributes" && r.oldValue === "true" && r.target.classList.contains("assistant")) {
      window.__answers.push({ event: "done" });
    } else if (r.type === "childList" && r.target.classList?.contains("text")
               && r.target.parentElement?.classList.contains("assistant")) {
      for (const node of r.addedNodes) window.__answers.push({ event: "chunk", text: node.data });
    }
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["aria-busy"],
                       attributeOldValue: true });
"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if "CHROMIUM" in os.environ:
            pytest.fail(f"CHROMIUM={CHROMIUM} does not exist")
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page in a fresh browser context (its own localStorage), watching answers as they stream."""
    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.add_init_script(WATCH_ANSWERS)
    yield page
    context.close()


@contextlib.contextmanager
def chat_server(workdir: Path, ref: str = "assistant@production", **settings):
    """The server for `ref` (as `factory serve --model REF` runs it); yields (base URL, app) so tests can read its
    store."""
    from flows.serving import build_app
    from serve.app import ServeSettings

    app = build_app(workdir, ref, ServeSettings(**settings), store_url=default_url(workdir), poll_s=0)
    with running(app) as url:
        yield url, app


def ask(page, text: str):
    """Type `text` in the message box, press Send, wait for the answer to finish; returns the answer's element."""
    answers = page.locator("article.assistant")
    before = answers.count()
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send").click()
    answer = answers.nth(before)
    expect(answer).to_have_attribute("data-response-id", RESPONSE_ID)
    expect(answer).to_have_attribute("aria-busy", "false")
    return answer


def test_an_answer_streams_in_and_its_flag_is_stored_and_shown_after_a_reload(workdir, page):
    with chat_server(workdir) as (url, app):
        page.goto(url)
        expect(page.locator("#model")).to_have_text("· assistant")
        page.get_by_label("Temperature").fill("0")  # greedy: the same (long) answer every run
        answer = ask(page, "What is the capital of France?")
        text = answer.locator(".text").text_content()
        assert text

        events = page.evaluate("window.__answers")
        end = next((i for i, e in enumerate(events) if e["event"] == "done"), None)
        assert end is not None, f"the answer's aria-busy never went from true to false: {events}"
        chunks = [e["text"] for e in events[:end]]
        assert len(chunks) > 1, f"the answer arrived in one piece: {events}"
        assert all(a and b.startswith(a) and len(b) > len(a) for a, b in pairwise(chunks)), chunks
        assert chunks[-1] == text

        answer.get_by_role("button", name="Flag this answer").click()
        reason = answer.get_by_label("What went wrong?")
        reason.fill("made things up")
        reason.press("Enter")
        expect(answer).to_contain_text("Flagged: made things up")
        expect(answer.get_by_role("button", name="Flag this answer")).to_have_attribute("aria-pressed", "true")
        rid = answer.get_attribute("data-response-id")

        stored = app.state.store.get(rid)
        assert stored["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
        assert stored["answer"] == text
        assert [(f["rating"], f["reason"]) for f in stored["feedback"]] == [(-1, "made things up")]

        page.reload()
        again = page.locator(f'[data-response-id="{rid}"]')
        expect(again).to_contain_text("Flagged: made things up")
        expect(again.get_by_role("button", name="Flag this answer")).to_have_attribute("aria-pressed", "true")
        expect(again.get_by_role("button", name="Good answer")).to_have_attribute("aria-pressed", "false")
        expect(again.locator(".text")).to_have_text(text)
        expect(page.locator("article.user")).to_have_text(["What is the capital of France?"])


def test_markup_and_special_tokens_typed_by_the_user_or_stored_as_an_answer_show_as_text(tmp_path, model_dirs, page):
    typed = "<script>window.__pwned = 1</script><b>bold</b> <|user_start|>hi"
    stored_answer = '<img src="x" onerror="window.__pwned = 2"><|assistant_end|>'
    with chat_server(tmp_path, str(model_dirs[0])) as (url, app):
        # An earlier conversation, as the page keeps it in localStorage, with an answer full of markup.
        page.goto(url)
        page.evaluate("""(content) => localStorage.setItem("llm-factory-chat", JSON.stringify({messages: [
            {role: "user", content: "say something"}, {role: "assistant", content, id: "chatcmpl-earlier"}]}))""",
                      stored_answer)
        page.reload()
        expect(page.locator('[data-response-id="chatcmpl-earlier"] .text')).to_have_text(stored_answer)
        page.get_by_role("button", name="New chat").click()  # the model's context is short: start afresh

        answer = ask(page, typed)
        expect(page.locator("article.user .text").last).to_have_text(typed)
        assert page.locator("#log script, #log b, #log img").count() == 0
        assert page.evaluate("window.__pwned") is None
        # The typed markers reach the model as text: the stored question is what was typed.
        stored = app.state.store.get(answer.get_attribute("data-response-id"))
        assert stored["messages"][-1] == {"role": "user", "content": typed}
        expect(answer.locator(".text")).to_have_text(stored["answer"])


def test_a_server_with_api_keys_asks_for_one_and_answers_once_it_is_entered(tmp_path, model_dirs, page):
    # Served from a model folder, so the model is called "m0": the page has to ask the server for the name.
    with chat_server(tmp_path, str(model_dirs[0]), api_keys={API_KEY: "alice"}) as (url, app):
        page.goto(url)
        key = page.get_by_label("API key")
        expect(key).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("API key")

        message = page.get_by_label("Message", exact=True)
        message.fill("How many letters are in the word banana?")
        message.press("Enter")
        expect(page.get_by_role("alert")).to_contain_text("missing API key")
        expect(message).to_have_value("How many letters are in the word banana?")  # given back, to send again
        expect(page.locator("article")).to_have_count(0)

        key.fill(API_KEY)
        key.press("Enter")  # retries what failed: the model list and the question
        answer = page.locator("article.assistant").last
        expect(answer).to_have_attribute("aria-busy", "false")
        expect(page.locator("#model")).to_have_text("· m0")
        expect(page.get_by_role("alert")).to_be_hidden()
        rid = answer.get_attribute("data-response-id")
        assert app.state.store.get(rid)["client"] == "alice"

        answer.get_by_role("button", name="Good answer").click()
        expect(answer).to_contain_text("Marked good")
        assert [f["rating"] for f in app.state.store.get(rid)["feedback"]] == [1]


def test_the_page_shows_the_tools_an_answer_called_and_sends_them_back_with_the_next_question(tmp_path, page,
                                                                                                 tool_model_dir):
    from tests.serve.tool_model import MULTIPLY, MULTIPLY_ANSWER

    with chat_server(tmp_path, str(tool_model_dir)) as (url, app):
        page.goto(url)
        page.get_by_label("Temperature").fill("0")
        answer = ask(page, MULTIPLY)
        expect(answer.get_by_label("Tool calls")).to_have_text("[calculator] 4821 * 37 -> 178377")
        expect(answer.locator(".text")).to_have_text(MULTIPLY_ANSWER)

        second = ask(page, "And again?")
        stored = app.state.store.get(second.get_attribute("data-response-id"))
        call = {"id": "call_1", "type": "function",
                "function": {"name": "calculator", "arguments": '{"expression":"4821 * 37"}'}}
        assert stored["messages"] == [
            {"role": "user", "content": MULTIPLY}, {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "content": "178377", "tool_call_id": "call_1"},
            {"role": "assistant", "content": MULTIPLY_ANSWER}, {"role": "user", "content": "And again?"}]


def test_the_page_offers_the_assistants_and_asks_the_one_picked(tmp_path, page, tool_model_dir):
    from tests.serve.tool_model import DOCS_INSTRUCTIONS, RIVERS

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "rivers.md").write_text("Rivers in our notes: the Nile is the longest river.")
    helper = tmp_path / "docs.yaml"
    helper.write_text(f"id: docs-helper\ninstructions: {DOCS_INSTRUCTIONS}\nfiles: notes\n")
    from flows.serving import build_app
    from serve.app import ServeSettings

    app = build_app(tmp_path, str(tool_model_dir), ServeSettings(), poll_s=0, assistants=[helper])
    with running(app) as url:
        page.goto(url)
        choice = page.get_by_label("Model", exact=True)
        expect(choice.locator("option")).to_have_text(["tool-model", "docs-helper"])
        choice.select_option("docs-helper")
        expect(page.locator("#model")).to_have_text("· docs-helper")
        page.get_by_label("Temperature").fill("0")
        answer = ask(page, RIVERS)
        expect(answer.get_by_label("Tool calls")).to_contain_text("[search] rivers -> [1]")
        stored = app.state.store.get(answer.get_attribute("data-response-id"))
        assert (stored["model"], stored["meta"]["assistant"]) == ("docs-helper", "docs-helper")
        page.reload()  # the pick is kept
        expect(page.locator("#model")).to_have_text("· docs-helper")
