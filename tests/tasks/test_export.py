"""`factory export`: a model registered in MLflow, resolved by NAME@ALIAS, written as a transformers Llama directory."""

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from model.checkpoint import load_model, save_model
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import train_bpe
from tasks.core import model_registry
from tasks.core.tracking import Run, client

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir whose registry holds one tiny `assistant` version at @production."""
    wd = tmp_path_factory.mktemp("work")
    tok = train_bpe(["The quick brown fox jumps over the lazy dog."] * 10, vocab_size=300)
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=tok.vocab_size, seq_len=32, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, mlp_hidden=64
    )
    folder = wd / "finetune" / "model"
    save_model(GPT(config), folder)
    tok.save(folder / "tokenizer.json")
    run = Run.start(wd, "t", "deploy")
    version = model_registry.register(run.client, "assistant", folder, run.run_id, {})
    model_registry.move_alias(run.client, "assistant", "production", version)
    return wd


def _export(workdir, *args):
    return CliRunner().invoke(app, ["export", "--workdir", str(workdir), *args])


def test_export_writes_the_production_assistant_for_transformers(workdir, tmp_path):
    out = tmp_path / "hf"
    result = _export(workdir, "--format", "hf", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "assistant v1" in result.output and "vocab" in result.output

    production = model_registry.alias_version(client(workdir), "assistant", "production")
    ours = load_model(model_registry.model_dir(production)).eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(ids)[0] - theirs(ids).logits).abs().max().item() < 1e-4


def test_export_refuses_a_non_empty_out_without_force(workdir, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "other.txt").write_text("x")
    result = _export(workdir, "--model", "assistant/1", "--out", str(out))
    assert result.exit_code == 1 and "--force" in result.output
    assert _export(workdir, "--model", "assistant/1", "--out", str(out), "--force").exit_code == 0
    assert (out / "config.json").exists() and not (out / "other.txt").exists()


def test_export_of_an_unknown_alias_says_so(workdir, tmp_path):
    result = _export(workdir, "--model", "base@candidate", "--out", str(tmp_path / "hf"))
    assert result.exit_code == 1 and "no model base@candidate" in result.output
    assert not (tmp_path / "hf").exists()


def test_export_rejects_an_unknown_format(workdir, tmp_path):
    result = _export(workdir, "--format", "onnx", "--out", str(tmp_path / "hf"))
    assert result.exit_code == 2 and "onnx" in result.output


def test_export_gguf_writes_the_file_and_an_ollama_modelfile_beside_it(workdir, tmp_path):
    from model.gguf_export import read_gguf

    out = tmp_path / "local" / "assistant.gguf"
    result = _export(workdir, "--format", "gguf", "--quant", "q8_0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "gguf (q8_0)" in result.output and "ollama create assistant-v1" in result.output
    back = read_gguf(out)
    assert back["fields"]["general.name"] == "assistant-v1"
    assert back["tensors"]["blk.0.attn_q.weight"][0] == "Q8_0" and back["tensors"]["output_norm.weight"][0] == "F32"
    assert (out.parent / "Modelfile").read_text().startswith("FROM ./assistant.gguf\n")
    again = _export(workdir, "--format", "gguf", "--out", str(out))
    assert again.exit_code == 1 and "--force" in again.output
    assert _export(workdir, "--format", "gguf", "--out", str(out), "--force").exit_code == 0
    assert read_gguf(out)["tensors"]["blk.0.attn_q.weight"][0] == "F32"  # replaced: the default quant is f32
