"""Assistants (custom GPTs) from their files: served under their own model ids beside the model they share, each with
its instructions as the system message, only its own tools, and a search over its own files; the served model's
search reads the version's index (its index_path tag); a bad file is refused before anything loads, naming the file
and what is wrong with it."""

import json
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from typer.testing import CliRunner

from flows.serving import build_app, load_assistants
from model.chat import render_prompt
from serve.app import ServeSettings
from serve.assistants import AssistantError
from tests.serve.conftest import running
from tests.serve.tool_model import DOCS_INSTRUCTIONS, IDENTITY, MULTIPLY, RIVERS, register_tool_model, tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CHAT = "/v1/chat/completions"
ASK_RIVERS = [{"role": "user", "content": RIVERS}]
OWN_NOTES = "Rivers in our notes: the Nile is the longest river, and it flows north into the sea."
MODEL_INDEX = "Rivers of the world: the Amazon carries more water than any other river."


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("assistants")


@pytest.fixture(scope="module")
def workdir(root, tool_model_dir) -> Path:
    """assistant@production, whose version's index_path tag names an index of MODEL_INDEX."""
    from data.search import SearchIndex

    write(root / "world" / "rivers.md", MODEL_INDEX)
    SearchIndex.from_folder(root / "world").save(root / "index")
    wd = root / "work"
    register_tool_model(wd, tool_model_dir, {"index_path": str(root / "index")})
    return wd


@pytest.fixture(scope="module")
def files(root) -> list[Path]:
    """docs-helper, which searches its own notes, and calc-free, which speaks as the model but may only search."""
    write(root / "docs" / "notes" / "rivers.md", OWN_NOTES)
    write(root / "docs" / "notes" / "lakes.txt", "Lakes hold still water.")
    docs = write(root / "docs" / "docs.yaml", f"id: docs-helper\ninstructions: {DOCS_INSTRUCTIONS}\n"
                                              "tools: [search]\nfiles: notes\n")
    calc_free = write(root / "calc-free.json", json.dumps({"id": "calc-free", "instructions": IDENTITY.system_text(),
                                                           "tools": ["search"], "model": "assistant@production"}))
    return [docs, calc_free]


@pytest.fixture(scope="module")
def server(workdir, files):
    app = build_app(workdir, "assistant@production", ServeSettings(), poll_s=0, assistants=files)
    with running(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def tok(tool_model_dir):
    return tokenizer(tool_model_dir)


def ask(server, model: str, messages: list[dict], **body) -> dict:
    r = httpx.post(server[0] + CHAT, json={"model": model, "messages": messages, "temperature": 0, "max_tokens": 30,
                                           **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def recorded(server, rid: str) -> dict:
    return server[1].state.store.get(rid)


def test_the_models_list_has_the_served_model_and_each_assistant(server):
    models = OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0).models.list().data
    assert [m.id for m in models] == ["assistant", "docs-helper", "calc-free"]
    assert {m.version for m in models} == {"1"}  # one model, loaded once, answers for all of them


def test_an_assistant_answers_with_its_instructions_as_the_system_message(server, tok):
    body = ask(server, "docs-helper", ASK_RIVERS)
    seen = [{"role": "system", "content": DOCS_INSTRUCTIONS}, *ASK_RIVERS]
    assert body["usage"]["prompt_tokens"] == len(render_prompt(tok, seen))
    assert body["model"] == "docs-helper"
    meta = recorded(server, body["id"])["meta"]
    assert (meta["assistant"], meta["system"], meta["tools"]) == ("docs-helper", DOCS_INSTRUCTIONS, ["search"])


def test_a_client_system_message_follows_the_assistant_instructions(server):
    body = ask(server, "docs-helper", [{"role": "system", "content": "Be brief."}, *ASK_RIVERS], max_tokens=2)
    assert recorded(server, body["id"])["meta"]["system"] == DOCS_INSTRUCTIONS + "\n\nBe brief."


def test_an_assistant_searches_its_own_files(server):
    result = ask(server, "docs-helper", ASK_RIVERS)["choices"][0]["message"]["tool_results"][0]
    assert (result["name"], result["arguments"]) == ("search", {"query": "rivers"})
    assert "the Nile is the longest river" in result["content"] and "Amazon" not in result["content"]


def test_the_served_model_searches_its_version_index(server):
    messages = [{"role": "system", "content": DOCS_INSTRUCTIONS}, *ASK_RIVERS]
    result = ask(server, "assistant", messages)["choices"][0]["message"]["tool_results"][0]
    assert result["name"] == "search"
    assert "the Amazon carries more water" in result["content"] and "Nile" not in result["content"]


def test_an_assistant_calls_only_its_own_tools(server):
    # calc-free speaks as the model, so it writes the calculator call it learned, but the calculator is not its tool
    body = ask(server, "calc-free", [{"role": "user", "content": MULTIPLY}])
    [result] = body["choices"][0]["message"]["tool_results"]
    assert result["name"] == "calculator"
    assert result["content"] == "error: no tool named 'calculator' (tools: search)"
    assert ask(server, "assistant", [{"role": "user", "content": MULTIPLY}])["choices"][0]["message"][
        "tool_results"][0]["content"] == "178377"


# --------------------------------------------------------------------------------------------------- bad files


def bad(root: Path, name: str, text: str) -> Path:
    return write(root / "bad" / name, text)


BAD = {
    "a misspelt field": ("id: a\ninstruction: hi\n", "instruction: unknown field"),
    "no instructions": ("id: a\n", "instructions: Field required"),
    "an unknown tool": ("id: a\ninstructions: hi\ntools: [browser]\n", '"browser" is not a tool here'),
    "an id with a space": ("id: my helper\ninstructions: hi\n", "id: String should match pattern"),
    "files without search": ("id: a\ninstructions: hi\ntools: [calculator]\nfiles: .\n",
                             "files: only the search tool reads them"),
    "a missing files folder": ("id: a\ninstructions: hi\nfiles: nowhere\n", "files 'nowhere'"),
    "files with nothing to read": ("id: a\ninstructions: hi\nfiles: empty\n", "no document to search"),
    "the served model's name": ("id: assistant\ninstructions: hi\n", "the served model's own name"),
    "another model": ("id: a\ninstructions: hi\nmodel: base@candidate\n", "not the model this server serves"),
    "not YAML": ("id: [a\n", "not YAML or JSON"),
    "a list": ("- id: a\n", "must be a mapping"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_assistant_file_is_refused_naming_the_file_and_the_problem(root, case):
    text, problem = BAD[case]
    (root / "bad" / "empty").mkdir(parents=True, exist_ok=True)
    write(root / "bad" / "empty" / "image.png", "not text")
    path = bad(root, "helper.yaml", text)
    with pytest.raises(AssistantError) as error:
        load_assistants([path], "assistant@production", ServeSettings())
    assert str(error.value).startswith(f"assistant file {path}: ")
    assert problem in str(error.value)


def test_two_assistants_with_one_id_are_refused(root):
    first, second = (bad(root, f"{n}.yaml", "id: twin\ninstructions: hi\n") for n in ("one", "two"))
    with pytest.raises(AssistantError, match=f"{second}: id 'twin' is also the id of {first}"):
        load_assistants([first, second], "assistant@production", ServeSettings())


def test_an_assistant_that_would_search_nothing_is_refused(tmp_path, tool_model_dir):
    path = bad(tmp_path, "searcher.yaml", "id: searcher\ninstructions: hi\ntools: [search]\n")
    with pytest.raises(AssistantError, match=f"{path}: tools: search has nothing to search"):
        # a model folder, served without --index: no search index
        build_app(tmp_path / "work", str(tool_model_dir), ServeSettings(), poll_s=0, assistants=[path])


def test_factory_serve_with_a_bad_assistant_file_exits_2_with_one_line_before_loading_anything(tmp_path):
    from flows.cli import app

    path = bad(tmp_path, "helper.yaml", "id: a\ninstructions: hi\ntools: [browser]\n")
    result = CliRunner().invoke(app, ["serve", "--assistant", str(path), "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: assistant file {path}: tools.0: "), result.output
    assert not (tmp_path / "work" / "serving").exists()
