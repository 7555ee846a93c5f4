"""Stages `train_tokenizer` and `tokenize` on document shards laid out as preprocess writes them (several shards per
split): the BPE sample covers every shard, token shards come out byte-identical on any number of workers, and the
manifest's counts are exact.

The build functions run on a small stand-in for StageRun (no Prefect server): the stages' wiring under Prefect is
covered by tests/e2e/test_pipeline.py."""

import logging
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from data.tokens.bpe_sample import sample_texts
from data.tokens.documents import ShardWriter
from data.tokens.shards import load_tokens
from model.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe
from tasks.core.config import FactoryConfig
from tasks.tokenize import tokenize, tokenize_documents
from tasks.train_tokenizer import train_tokenizer

WORDS = ("the crawl gives us pages about rivers and mountains where people walk every summer while engineers "
         "write notes on tokenizers merges bytes and the loss that falls as the model reads").split()


def make_docs(n: int, seed: int, tag: str) -> list[dict]:
    rng = random.Random(seed)
    words = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) for _ in range(n)]
    return [{"id": f"{tag}-{i}", "text": f"{text} {tag} {i}."} for i, text in enumerate(words)]


def write_split(documents: Path, split: str, shards: list[list[dict]]) -> None:
    """Shard i of a split is `{split}-{i:05d}-00000.parquet`, as preprocess names them."""
    for i, docs in enumerate(shards):
        with ShardWriter(documents, f"{split}-{i:05d}") as writer:
            for doc in docs:
                writer.write(doc)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("corpus")
    train = [make_docs(n, seed=i, tag=f"train{i}") for i, n in enumerate([120, 40, 80, 10])]
    val = [make_docs(30, seed=10, tag="val0"), make_docs(5, seed=11, tag="val1")]
    write_split(root / "documents", "train", train)
    write_split(root / "documents", "val", val)
    tok = train_bpe([d["text"] for shard in train for d in shard], vocab_size=600)
    tok.save(root / "tokenizer.json")
    return SimpleNamespace(documents=root / "documents", tokenizer=root / "tokenizer.json", tok=tok, train=train,
                           val=val)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_token_shards_are_byte_identical_on_one_or_two_workers(corpus, tmp_path):
    serial = tokenize_documents(corpus.documents, corpus.tokenizer, tmp_path / "one", tokens_per_shard=500, workers=1)
    parallel = tokenize_documents(corpus.documents, corpus.tokenizer, tmp_path / "two", tokens_per_shard=500,
                                  workers=2)
    assert serial == parallel
    one, two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert one == two
    assert "train-00000-00000.bin" in one and "val-00001-00000.bin" in one  # named by document shard, then piece


def test_counts_are_exact_sums_over_the_shards_written(corpus, tmp_path):
    counts = tokenize_documents(corpus.documents, corpus.tokenizer, tmp_path, tokens_per_shard=500, workers=2)
    tok = corpus.tok
    for split, shards in (("train", corpus.train), ("val", corpus.val)):
        docs = [d for shard in shards for d in shard]  # in document order: shard by shard
        expected = [t for d in docs for t in [tok.bos_id, *tok.encode(d["text"])]]
        tokens = load_tokens(tmp_path, split)
        assert tokens.tolist() == expected
        assert counts[f"docs_{split}"] == len(docs)
        assert counts[f"tokens_{split}"] == len(expected) == len(tokens)
        assert counts[f"shards_{split}"] == len(list(tmp_path.glob(f"{split}-*.bin")))
        assert counts[f"document_shards_{split}"] == len(shards)
    assert counts["dtype"] == "uint16" and tokens.dtype == np.uint16
    assert counts["shards_train"] > len(corpus.train)  # tokens_per_shard cut the bigger document shards


def test_a_vocab_over_65536_writes_uint32_shards(tmp_path):
    rng = random.Random(0)
    words = sorted({"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(6, 10)))
                    for _ in range(28_000)})
    texts = [" ".join(words[i:i + 50]) for i in range(0, len(words), 50)]
    tok = train_bpe(texts, vocab_size=70_000, min_frequency=1)
    assert tok.vocab_size == 70_000
    tok.save(tmp_path / "tokenizer.json")
    write_split(tmp_path / "documents", "train", [[{"id": str(i), "text": t} for i, t in enumerate(texts)]])
    counts = tokenize_documents(tmp_path / "documents", tmp_path / "tokenizer.json", tmp_path / "shards", workers=1)
    tokens = load_tokens(tmp_path / "shards", "train")
    assert counts["dtype"] == "uint32" and tokens.dtype == np.uint32
    assert int(tokens.max()) >= 65_536  # ids past uint16 survive the round trip
    assert tokens.tolist() == [t for text in texts for t in [tok.bos_id, *tok.encode(text)]]


def test_the_bpe_sample_draws_from_every_shard(corpus):
    files = sorted(corpus.documents.glob("train-*.parquet"))
    all_docs = [d for shard in corpus.train for d in shard]
    budget = sum(len(d["text"]) for d in all_docs) // 4
    sample = sample_texts(files, budget)
    assert sample.shards == len(files) == 4 and sample.docs_seen == len(all_docs)
    tags = {text.split()[-2] for text in sample.texts}
    assert tags == {"train0", "train1", "train2", "train3"}
    assert sample.chars == sum(map(len, sample.texts))
    assert budget <= sample.chars < budget + max(len(t) for t in sample.texts)  # just enough to reach the budget
    assert len(sample.texts) < len(all_docs) / 2


def test_the_bpe_sample_does_not_depend_on_how_documents_are_sharded(corpus, tmp_path):
    docs = [d for shard in corpus.train for d in shard]
    random.Random(5).shuffle(docs)
    write_split(tmp_path, "train", [docs[:100], docs[100:]])
    budget = 3_000
    resharded = sample_texts(sorted(tmp_path.glob("train-*.parquet")), budget)
    original = sample_texts(sorted(corpus.documents.glob("train-*.parquet")), budget)
    assert resharded.texts == original.texts


def test_the_bpe_sample_takes_everything_below_the_budget(corpus):
    files = sorted(corpus.documents.glob("train-*.parquet"))
    sample = sample_texts(files, 10**9)
    assert sorted(sample.texts) == sorted(d["text"] for shard in corpus.train for d in shard)


class FakeStageRun(SimpleNamespace):
    """What a build function uses of StageRun."""

    log = logging.getLogger("test")

    def progress(self, fraction: float) -> None:
        self.fractions = [*getattr(self, "fractions", []), fraction]

    def markdown(self, name: str, text: str) -> None:
        self.reports = {**getattr(self, "reports", {}), name: text}


def test_the_stages_train_a_tokenizer_with_fixed_specials_and_tokenize_on_workers(corpus, tmp_path):
    preprocess = SimpleNamespace(path=corpus.documents.parent)
    cfg = FactoryConfig().model_copy(update={
        "tokenizer": FactoryConfig().tokenizer.model_copy(update={"vocab_size": 500, "max_train_chars": 20_000}),
        "tokenize": FactoryConfig().tokenize.model_copy(update={"workers": 2, "tokens_per_shard": 1_000}),
    })
    s = FakeStageRun(cfg=cfg, inputs={"preprocess": preprocess}, out=tmp_path / "tokenizer")
    s.out.mkdir()
    trained = train_tokenizer.build(s)
    tok = Tokenizer.from_file(s.out / "tokenizer.json")
    assert [tok.special_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert trained["counts"]["sample_shards"] == trained["counts"]["train_shards"] == 4
    assert 20_000 <= trained["counts"]["sample_chars"] < 21_000
    val_texts = [d["text"] for shard in corpus.val for d in shard]  # bytes per token over the whole val split
    assert trained["counts"]["val_bytes"] == sum(len(t.encode()) for t in val_texts)
    assert trained["counts"]["val_tokens"] == sum(len(tok.encode(t)) for t in val_texts)
    assert trained["metrics"]["bytes_per_token"] == pytest.approx(
        trained["counts"]["val_bytes"] / trained["counts"]["val_tokens"])

    s = FakeStageRun(cfg=cfg, inputs={"preprocess": preprocess, "train_tokenizer": SimpleNamespace(path=s.out)},
                     out=tmp_path / "tokenize")
    built = tokenize.build(s)
    counts = built["counts"]
    assert counts["tokens_train"] == len(load_tokens(s.out / "shards", "train")) == built["metrics"]["tokens_train"]
    assert counts["tokens_val"] == len(load_tokens(s.out / "shards", "val"))
    assert counts["docs_val"] == len(val_texts) and counts["dtype"] == "uint16"
    assert s.fractions[-1] == 1.0
