"""GGUF export: read back with the `gguf` package (always), and run in llama.cpp through llama-cpp-python when it is
installed (`make llama` builds it): same logits, same tokens, same greedy answers, chat template included."""

import math

import numpy as np
import pytest
import torch

from model.chat import chat_template, render_prompt
from model.checkpoint import load_model
from model.engine import Engine, generate
from model.gguf_export import export_gguf, gguf_tensors, interleave_rope, modelfile, read_gguf, vocabulary
from model.gpt import apply_rope, rope_tables
from model.tokenizer import SPECIAL_TOKENS, Tokenizer
from tests.models import make_model_dir

PROMPTS = ["The quick brown fox", "12 + 30 =", "Paris is the capital of"]
CHATS = [[{"role": "user", "content": "How many letters are in the word banana?"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"), seq_len=64)


@pytest.fixture(scope="module")
def model(folder):
    return load_model(folder).eval()


@pytest.fixture(scope="module")
def tok(folder):
    return Tokenizer.from_file(folder / "tokenizer.json")


@pytest.fixture(scope="module")
def files(tmp_path_factory, model, tok):
    out = tmp_path_factory.mktemp("gguf")
    return {q: export_gguf(model, tok, out / f"model-{q}.gguf", q) for q in ("f32", "f16", "q8_0")}


def test_interleaved_rope_rows_give_the_same_attention_scores():
    """llama.cpp rotates adjacent pairs; the reordered q/k rows under its rotation score exactly as ours do."""
    n_head, head_dim, seq = 2, 8, 5
    w_q, w_k = torch.randn(n_head * head_dim, 16), torch.randn(n_head * head_dim, 16)
    x = torch.randn(seq, 16)
    cos, sin = rope_tables(seq, head_dim, 10000.0)

    def heads(t):
        return t.reshape(seq, n_head, head_dim).transpose(0, 1)

    ours_q, ours_k = apply_rope(heads(x @ w_q.T), cos, sin), apply_rope(heads(x @ w_k.T), cos, sin)

    def interleaved(t):  # rotate (t[2i], t[2i+1]) by position * theta_i
        pos = torch.arange(seq, dtype=torch.float32)[:, None]
        angle = pos * (1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        even, odd = t[..., 0::2], t[..., 1::2]
        out = torch.empty_like(t)
        out[..., 0::2] = even * angle.cos() - odd * angle.sin()
        out[..., 1::2] = even * angle.sin() + odd * angle.cos()
        return out

    theirs_q = interleaved(heads(x @ interleave_rope(w_q, n_head).T))
    theirs_k = interleaved(heads(x @ interleave_rope(w_k, n_head).T))
    assert torch.allclose(ours_q @ ours_k.transpose(-1, -2), theirs_q @ theirs_k.transpose(-1, -2), atol=1e-4)
    assert not torch.allclose(ours_q, theirs_q, atol=1e-3)  # the layouts do differ; only the scores agree


def test_f32_reads_back_with_the_llama_keys_tensors_and_tokenizer(files, model, tok):
    back = read_gguf(files["f32"])
    f, c = back["fields"], model.config
    assert f["general.architecture"] == "llama"
    assert (f["llama.block_count"], f["llama.embedding_length"], f["llama.feed_forward_length"]) == \
        (c.n_layer, c.n_embd, c.mlp_hidden)
    assert (f["llama.attention.head_count"], f["llama.attention.head_count_kv"]) == (c.n_head, c.n_kv_head)
    assert f["llama.context_length"] == c.seq_len and f["llama.rope.dimension_count"] == c.head_dim
    assert math.isclose(f["llama.rope.freq_base"], c.rope_theta)
    tokens, types, merges = vocabulary(tok, c.vocab_size)
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "llama-bpe"
    assert f["tokenizer.ggml.tokens"] == tokens and f["tokenizer.ggml.merges"] == merges
    assert list(f["tokenizer.ggml.token_type"]) == types
    control = {tokens[i] for i, t in enumerate(types) if t == 3}
    assert control == set(SPECIAL_TOKENS)
    assert f["tokenizer.ggml.bos_token_id"] == tok.bos_id
    assert f["tokenizer.ggml.eos_token_id"] == tok.special_id("<|assistant_end|>")
    assert f["tokenizer.chat_template"] == chat_template()
    expected = gguf_tensors(model)
    assert set(back["tensors"]) == set(expected)
    assert "blk.1.attn_q.weight" in expected and "output.weight" in expected
    for name, (kind, array) in back["tensors"].items():
        assert kind == "F32"
        assert np.array_equal(array, expected[name].numpy()), name


@pytest.mark.parametrize(("quant", "matrix_type", "tolerance"), [("f16", "F16", 2e-3), ("q8_0", "Q8_0", 2e-2)])
def test_quantized_files_hold_close_weights_and_are_smaller(files, model, quant, matrix_type, tolerance):
    back = read_gguf(files[quant])["tensors"]
    for name, weight in gguf_tensors(model).items():
        kind, array = back[name]
        assert kind == ("F32" if weight.ndim == 1 else matrix_type), name
        scale = float(weight.abs().max())
        assert np.abs(array - weight.numpy()).max() <= tolerance * scale, name
    sizes = {q: p.stat().st_size for q, p in files.items()}
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"]


def test_export_refuses_an_unknown_quant(tmp_path, model, tok):
    with pytest.raises(ValueError, match="q4"):
        export_gguf(model, tok, tmp_path / "m.gguf", "q4")
    assert not list(tmp_path.iterdir())


def test_modelfile_spells_our_chat_format(model):
    text = modelfile("m.gguf", 64)
    assert text.startswith("FROM ./m.gguf\n")
    assert 'eq .Role "user" }}<|user_start|>{{ .Content }}<|user_end|>' in text
    assert '<|assistant_start|>"""' in text and 'PARAMETER stop "<|assistant_end|>"' in text
    assert "PARAMETER num_ctx 64" in text


# ------------------------------------------------------------------------------------- with llama.cpp itself


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (`make llama` builds it)")


def _load(llama_cpp, path, seq_len):
    return llama_cpp.Llama(model_path=str(path), n_ctx=seq_len, logits_all=True, verbose=False, n_threads=2, seed=0)


def _llama_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def test_llama_cpp_tokenizes_like_us(llama_cpp, files, tok, model):
    llm = _load(llama_cpp, files["f32"], model.config.seq_len)
    for text in [*PROMPTS, "Tokenizers split text: 2024 isn't 20 24!\n\n  Done.", "naïve café — ünïcode"]:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == [tok.bos_id, *tok.encode(text)], text
    jinja2 = pytest.importorskip("jinja2")
    for messages in CHATS:  # the file's template, rendered and tokenized by llama.cpp, is our prompt
        text = jinja2.Environment().from_string(read_gguf(files["f32"])["fields"]["tokenizer.chat_template"]).render(
            messages=messages, add_generation_prompt=True)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == render_prompt(tok, messages)


def test_llama_cpp_logits_match_ours(llama_cpp, files, tok, model):
    ids = [tok.bos_id, *tok.encode("The quick brown fox jumps over the lazy dog. 12 + 30 = 42.")]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0].numpy()
    f32 = _llama_logits(_load(llama_cpp, files["f32"], model.config.seq_len), ids)
    assert np.abs(f32 - ours).max() < 1e-3
    q8 = _llama_logits(_load(llama_cpp, files["q8_0"], model.config.seq_len), ids)
    error = np.abs(q8 - ours).max()
    assert 0 < error < 0.1 * np.abs(ours).max()  # quantized, so not exact, but close (the note reports it)


def test_llama_cpp_greedy_text_and_chat_match_our_engine(llama_cpp, files, tok, model):
    llm = _load(llama_cpp, files["f32"], model.config.seq_len)
    for prompt in PROMPTS:
        ids = [tok.bos_id, *tok.encode(prompt)]
        ours = generate(model, ids, 12)
        llm.reset()
        theirs = []
        for token in llm.generate(ids, top_k=1, temp=0.0):
            theirs.append(token)
            if len(theirs) == len(ours):
                break
        assert theirs == ours, prompt
    engine = Engine(model, tok)
    for messages in CHATS:
        ours = engine.chat(messages, max_new_tokens=16)
        out = llm.create_chat_completion(messages, max_tokens=16, temperature=0.0, top_k=1)
        # a random model writes broken UTF-8: we decode it as U+FFFD, llama-cpp-python drops it
        assert out["choices"][0]["message"]["content"] == ours.replace("\ufffd", ""), messages
        assert len(ours.replace("\ufffd", "")) >= 8
