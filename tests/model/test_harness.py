"""lm-evaluation-harness on our models: the adapter's scores are our model's own log-probs, its generations our greedy
decoding cut at the stop strings, and run_harness runs local YAML + JSONL tasks (the shipped ones too) offline."""
import json
import math
import socket

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from model.engine import generate
from model.harness import FactoryLM, load_for_harness, main, run_harness
from model.hf import export_hf
from tests.models import make_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("harness") / "model", seq_len=64)


@pytest.fixture(scope="module")
def lm(model_dir):
    return FactoryLM(pretrained=model_dir, device="cpu", batch_size=4)


def request(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@torch.no_grad()
def direct_logprob(lm: FactoryLM, context: list[int], continuation: list[int]) -> float:
    """Sum of log p(continuation token | everything before it), from one forward pass of our model."""
    ids = context + continuation
    logits, _ = lm.model(torch.tensor([ids[:-1]]))
    logprobs = torch.log_softmax(logits[0].float(), dim=-1)
    return sum(float(logprobs[len(context) - 1 + j, t]) for j, t in enumerate(continuation))


def test_loglikelihood_is_the_sum_of_the_continuation_token_logprobs(lm):
    tok = lm.tok
    context, continuation = tok.encode("The quick brown"), tok.encode(" fox jumps")
    assert tok.encode("The quick brown fox jumps") == context + continuation  # the split is where the words are
    (logprob, _), = lm.loglikelihood([request("loglikelihood", "The quick brown", " fox jumps")])
    assert logprob == pytest.approx(direct_logprob(lm, [tok.bos_id, *context], continuation), abs=1e-4)


def test_a_trailing_space_in_the_context_moves_to_the_continuation(lm):
    spaced, plain = lm.loglikelihood([request("loglikelihood", "The quick brown ", "fox"),
                                      request("loglikelihood", "The quick brown", " fox")])
    assert spaced[0] == pytest.approx(plain[0], abs=1e-5)


def test_is_greedy_is_true_exactly_for_the_greedy_continuation(lm):
    context = [lm.tok.bos_id, *lm.tok.encode("Paris is the capital of")]
    greedy = generate(lm.model, context, 3)
    other = [*greedy[:2], (greedy[2] + 1) % lm.tok.vocab_size]
    (_, is_greedy), (_, not_greedy) = lm.score_pairs([(context, greedy), (context, other)])
    assert is_greedy is True and not_greedy is False


def test_batched_scores_equal_scores_one_at_a_time(lm):
    pairs = [("The quick brown", " fox"), ("12 + 30 =", " 42"), ("How many letters are in the word", " banana?"),
             ("", "Paris is the capital of France.")]
    together = lm.loglikelihood([request("loglikelihood", *p) for p in pairs])
    alone = [lm.loglikelihood([request("loglikelihood", *p)])[0] for p in pairs]
    for (a, greedy_a), (b, greedy_b) in zip(together, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b


def test_a_context_longer_than_seq_len_is_cut_from_the_left(lm):
    text = "The quick brown fox jumps over the lazy dog. " * 12
    context = [lm.tok.bos_id, *lm.tok.encode(text.rstrip())]
    continuation = lm.tok.encode(" The end")
    assert len(context) > lm.seq_len
    (logprob, _), = lm.score_pairs([(context, continuation)])
    kept = (context + continuation)[-(lm.seq_len + 1):]
    assert logprob == pytest.approx(direct_logprob(lm, kept[:-len(continuation)], continuation), abs=1e-4)


def test_loglikelihood_rolling_is_the_whole_text_after_bos(lm):
    text = "Paris is the capital of France. How many letters are in the word banana?"
    ids = lm.tok.encode(text)
    assert len(ids) < lm.seq_len
    rolling, = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert rolling == pytest.approx(direct_logprob(lm, [lm.tok.bos_id], ids), abs=1e-4)


def test_loglikelihood_rolling_scores_every_token_of_a_long_text_once(model_dir):
    model, tok = load_for_harness(model_dir, "cpu")
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: each scored token adds exactly -ln(vocab)
    uniform = FactoryLM(model=model, tokenizer=tok, batch_size=2)
    text = "The quick brown fox jumps over the lazy dog. " * 30
    n = len(tok.encode(text))
    assert n > 2 * uniform.seq_len
    rolling, = uniform.loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert rolling == pytest.approx(-n * math.log(model.config.vocab_size), rel=1e-5)


def test_generate_until_is_greedy_decoding_cut_at_the_first_stop_string(lm):
    context = "12 + 30 ="
    ids = [lm.tok.bos_id, *lm.tok.encode(context)]
    full = lm.tok.decode(generate(lm.model, ids, 12, stop_ids=[lm.tok.bos_id]))
    assert len(full) > 6
    stop = full[4:6]
    free, stopped = lm.generate_until([request("generate_until", context, {"until": [], "max_gen_toks": 12}),
                                       request("generate_until", context, {"until": [stop], "max_gen_toks": 12})])
    assert free == full
    assert stopped == full.split(stop)[0]


def test_generate_until_refuses_settings_it_does_not_honour(lm):
    with pytest.raises(ValueError, match="num_beams"):
        lm.generate_until([request("generate_until", "Hi", {"until": ["\n"], "num_beams": 4})])


def test_lm_eval_builds_the_adapter_by_name_from_its_argument_string(model_dir, lm):
    made = get_model("factory").create_from_arg_string(f"pretrained={model_dir}",
                                                       {"batch_size": "2", "device": "cpu", "max_batch_size": None})
    asked = [request("loglikelihood", "12 + 30 =", " 42")]
    assert made.batch_size == 2 and made.loglikelihood(asked)[0][0] == pytest.approx(lm.loglikelihood(asked)[0][0])


def test_an_exported_hugging_face_folder_scores_like_the_model_folder(model_dir, lm, tmp_path):
    hf = FactoryLM(pretrained=export_hf(model_dir, tmp_path / "hf"), device="cpu")
    asked = [request("loglikelihood", "The quick brown", " fox jumps")]
    assert hf.loglikelihood(asked)[0][0] == pytest.approx(lm.loglikelihood(asked)[0][0], abs=1e-4)


OBVIOUS_TASK = """
task: obvious_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: obvious.jsonl
output_type: multiple_choice
test_split: test
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: 0
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def obvious_tasks(tmp_path_factory):
    """A task whose answer any model picks: the wrong choice is the right one followed by more words, so its
    log-likelihood is the right one's plus more negative terms."""
    folder = tmp_path_factory.mktemp("obvious_tasks")
    (folder / "obvious.yaml").write_text(OBVIOUS_TASK)
    words = ["apple", "banana", "cherry", "river", "castle"]
    (folder / "obvious.jsonl").write_text("".join(
        json.dumps({"question": f"Name a word: {w}.", "choices": [w, f"{w} {w} and {w} again"]}) + "\n"
        for w in words))
    return folder


def test_run_harness_scores_a_task_from_an_extra_folder(lm, obvious_tasks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data_files are relative to the YAML, not to the working directory
    out = run_harness(lm, ["obvious_mc"], include_path=obvious_tasks)
    samples = out["samples"]["obvious_mc"]
    assert len(samples) == 5 and all(s["acc"] == 1.0 for s in samples)
    assert out["results"]["obvious_mc"]["acc"] == 1.0


def test_run_harness_opens_no_network_connection(lm, obvious_tasks, monkeypatch):
    def refuse(sock, address):
        raise AssertionError(f"network connection to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert run_harness(lm, ["obvious_mc"], include_path=obvious_tasks, limit=2)["results"]["obvious_mc"]["acc"] == 1.0


@pytest.fixture(scope="module")
def shipped(lm):
    return run_harness(lm, ["factory"], limit=4)


def test_run_harness_runs_every_shipped_task_by_its_tag(shipped):
    assert set(shipped["results"]) == {"factory_arith_mc", "factory_copy", "factory_paragraphs"}
    assert all(len(shipped["samples"][task]) == 4 for task in shipped["results"])


def test_shipped_metrics_agree_with_their_samples(shipped):
    arith, copy = shipped["results"]["factory_arith_mc"], shipped["results"]["factory_copy"]
    assert 0.0 <= arith["acc"] <= 1.0 and arith["acc_stderr"] is not None
    assert arith["acc"] == pytest.approx(sum(s["acc"] for s in shipped["samples"]["factory_arith_mc"]) / 4)
    assert copy["exact_match"] == pytest.approx(sum(s["exact_match"] for s in shipped["samples"]["factory_copy"]) / 4)
    # word perplexity: exp(-(sum of the paragraphs' log-likelihoods) / (sum of their words)), from the samples' pairs
    logprobs, words = zip(*(s["word_perplexity"] for s in shipped["samples"]["factory_paragraphs"]), strict=True)
    expected = math.exp(-sum(logprobs) / sum(words))
    assert shipped["results"]["factory_paragraphs"]["word_perplexity"] == pytest.approx(expected, rel=1e-6)


def test_run_harness_output_is_plain_json(shipped):
    assert json.loads(json.dumps(shipped)) == shipped


def test_an_unknown_task_name_is_a_clear_error(lm):
    with pytest.raises(ValueError, match="no_such_task"):
        run_harness(lm, ["factory_arith_mc", "no_such_task"], limit=1)


def test_the_command_line_writes_the_whole_result_as_json(model_dir, tmp_path, capsys):
    main([str(model_dir), "--tasks", "factory_arith_mc", "--limit", "2", "--output", str(tmp_path / "out.json")])
    written = json.loads((tmp_path / "out.json").read_text())
    assert len(written["samples"]["factory_arith_mc"]) == 2
    assert json.loads(capsys.readouterr().out) == written["results"]
