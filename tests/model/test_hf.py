"""Hugging Face interoperability: our export loads in transformers as LlamaForCausalLM with the same logits, tokens
and chat format; a transformers Llama checkpoint loads as our GPT with the same logits."""

import json

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from model.chat import render_prompt
from model.checkpoint import save_model
from model.config import GPTConfig
from model.gpt import GPT
from model.hf import export_hf, load_hf
from model.tokenizer import SPECIAL_TOKENS, train_bpe

transformers = pytest.importorskip("transformers")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A small model learns to answer questions about arithmetic: 2 + 3 = 5.",
    "Tokenizers split text into pieces; byte-level BPE never fails on unknown characters.",
] * 10


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXTS, vocab_size=400)


def _model_dir(path, tok, tie: bool):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, seq_len=64, n_layer=2, n_embd=64, n_head=4, n_kv_head=2,
                       mlp_hidden=96, rope_theta=5000.0, norm_eps=1e-5, tie_embeddings=tie)
    model = GPT(config).eval()
    save_model(model, path)
    tok.save(path / "tokenizer.json")
    return model


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (3, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tie", [False, True])
def test_exported_model_gives_our_logits_in_transformers(tmp_path, tok, tie):
    ours = _model_dir(tmp_path / "model", tok, tie)
    out = export_hf(tmp_path / "model", tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(theirs).__name__ == "LlamaForCausalLM"
    assert theirs.config.tie_word_embeddings is tie and theirs.config.num_key_value_heads == 2
    ids = _ids(tok.vocab_size)
    with torch.no_grad():
        diff = (ours(ids)[0] - theirs(ids).logits).abs().max().item()
    assert diff < 1e-4


def test_exported_directory_has_the_standard_files(tmp_path, tok):
    _model_dir(tmp_path / "model", tok, tie=True)
    out = export_hf(tmp_path / "model", tmp_path / "hf")
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json"}
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["rope_theta"] == 5000.0
    assert config["bos_token_id"] == tok.bos_id and config["eos_token_id"] == tok.special_id("<|assistant_end|>")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left behind


def test_exported_tokenizer_encodes_like_ours(tmp_path, tok):
    _model_dir(tmp_path / "model", tok, tie=False)
    hf_tok = transformers.AutoTokenizer.from_pretrained(export_hf(tmp_path / "model", tmp_path / "hf"))
    assert (hf_tok.bos_token, hf_tok.eos_token, hf_tok.pad_token) == ("<|bos|>", "<|assistant_end|>", "<|pad|>")
    text = "The lazy fox: 2 + 3 = 5, über alles."
    ours = tok.encode(text)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ours
    assert hf_tok(text)["input_ids"] == [tok.bos_id, *ours]  # documents start with <|bos|>, as in pretraining
    # transformers parses special-token strings in text (chat templates rely on it); ours takes them from special_id
    marked = hf_tok("<|user_start|>" + text, add_special_tokens=False)["input_ids"]
    assert marked == [tok.special_id("<|user_start|>"), *ours]
    assert hf_tok.decode(ours) == tok.decode(ours) == text


def test_chat_template_renders_what_model_chat_renders(tmp_path, tok):
    _model_dir(tmp_path / "model", tok, tie=False)
    hf_tok = transformers.AutoTokenizer.from_pretrained(export_hf(tmp_path / "model", tmp_path / "hf"))
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": '{"expr": "2+3"}'}}]},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "It is 5."},
        {"role": "user", "content": "And über 3 + 3?"},
    ]
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids  # transformers 5 returns a BatchEncoding
    assert ids == render_prompt(tok, messages)


@pytest.mark.parametrize("tie", [False, True])
def test_export_then_load_hf_is_exact(tmp_path, tok, tie):
    ours = _model_dir(tmp_path / "model", tok, tie)
    back, back_tok = load_hf(export_hf(tmp_path / "model", tmp_path / "hf"))
    assert back.config == ours.config
    assert back.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ours.state_dict().values(), strict=True))
    assert (back.lm_head.weight is back.embed_tokens.weight) is tie
    assert back_tok.hf.get_vocab() == tok.hf.get_vocab()


def test_export_refuses_a_non_empty_directory_unless_overwrite(tmp_path, tok):
    _model_dir(tmp_path / "model", tok, tie=True)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        export_hf(tmp_path / "model", out)
    assert (out / "notes.txt").exists()
    export_hf(tmp_path / "model", out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").exists()


def _plain_tokenizer_json(path) -> int:
    """A byte-level BPE with only <s>/</s> (none of our chat specials), as a foreign checkpoint would ship."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(TEXTS, trainer=trainer)
    hf.save(str(path / "tokenizer.json"))
    return hf.get_vocab_size(with_added_tokens=True)


@pytest.mark.parametrize("tie", [False, True])
def test_load_hf_matches_transformers_and_adds_chat_specials(tmp_path, tie):
    vocab = _plain_tokenizer_json(tmp_path)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(config).eval()
    theirs.save_pretrained(tmp_path)

    ours, tok = load_hf(tmp_path, seq_len=64)
    assert ours.config.seq_len == 64 and ours.config.norm_eps == 1e-6 and ours.config.n_kv_head == 2
    assert all(tok.hf.token_to_id(s) is not None for s in SPECIAL_TOKENS)
    assert tok.vocab_size == ours.config.vocab_size == vocab + len(SPECIAL_TOKENS)
    new_rows = ours.embed_tokens.weight[vocab:]
    assert torch.allclose(new_rows, theirs.model.embed_tokens.weight.mean(0).expand_as(new_rows))

    ids = _ids(vocab)
    with torch.no_grad():
        diff = (ours(ids)[0][..., :vocab] - theirs(ids).logits).abs().max().item()
    assert diff < 1e-4
    assert tok.encode("The quick brown fox") == HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(
        "The quick brown fox").ids


def _config_json(path, **changes):
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "vocab_size": 300, "max_position_embeddings": 64, **changes}
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_parameters"),
        ({"model_type": "gpt2"}, "model_type"),
        ({"model_type": "mistral", "sliding_window": 16}, "sliding_window"),
        ({"head_dim": 32}, "head_dim"),
    ],
)
def test_load_hf_names_the_unsupported_config_field(tmp_path, changes, field):
    with pytest.raises(ValueError, match=field):
        load_hf(_config_json(tmp_path / "m", **changes))
