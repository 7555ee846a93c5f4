"""Token shards (flat binary + sidecar, memmap), the worker that writes them from documents, and the trainer's batch
samplers."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from data.tokens.documents import ShardWriter
from data.tokens.shards import (
    TokenBatches,
    TokenizeJob,
    TokenShardWriter,
    load_tokens,
    tokenize_document_shard,
    write_token_shard,
)
from model.tokenizer import train_bpe


@pytest.mark.parametrize("vocab_size, dtype", [(50_000, "uint16"), (65_535, "uint16"), (70_000, "uint32")])
def test_token_shard_round_trips_via_memmap_with_the_smallest_dtype(tmp_path, vocab_size, dtype):
    tokens = np.array([0, 1, vocab_size - 1, 42, 7], dtype=np.int64)
    write_token_shard(tmp_path / "train-00000.bin", tokens, vocab_size)
    sidecar = json.loads((tmp_path / "train-00000.json").read_text())
    assert sidecar == {"dtype": dtype, "num_tokens": 5, "vocab_size": vocab_size}
    assert (tmp_path / "train-00000.bin").stat().st_size == 5 * np.dtype(dtype).itemsize
    loaded = load_tokens(tmp_path, "train")
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.dtype(dtype)
    assert loaded.tolist() == tokens.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000.bin", "train-00000.json"]


def test_out_of_range_token_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        write_token_shard(tmp_path / "x.bin", np.array([5, 100]), vocab_size=100)
    with pytest.raises(ValueError, match="token ids"):
        TokenShardWriter(tmp_path, "train", vocab_size=100).add([-1])


def test_a_shard_without_sidecar_is_incomplete_and_not_loaded(tmp_path):
    write_token_shard(tmp_path / "val-00000.bin", np.arange(10), vocab_size=256)
    (tmp_path / "val-00000.json").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_tokens(tmp_path, "val")


def test_writer_cuts_shards_at_tokens_per_shard_and_load_concatenates_them(tmp_path):
    writer = TokenShardWriter(tmp_path, "train", vocab_size=1000, tokens_per_shard=7)
    docs = [list(range(i, i + 5)) for i in range(6)]  # 30 tokens in pieces that straddle shard boundaries
    for ids in docs:
        writer.add(ids)
    paths = writer.close()
    assert [p.name for p in paths] == [f"train-{i:05d}.bin" for i in range(5)]
    sizes = [json.loads(p.with_suffix(".json").read_text())["num_tokens"] for p in paths]
    assert sizes == [7, 7, 7, 7, 2]
    assert load_tokens(tmp_path, "train").tolist() == [t for ids in docs for t in ids]
    with pytest.raises(FileNotFoundError, match="'val'"):
        load_tokens(tmp_path, "val")


def test_token_batches_are_deterministic_in_the_index():
    tokens = np.arange(10_000, dtype=np.uint16)
    batches = TokenBatches(tokens, batch_size=4, seq_len=16, seed=3)
    x, y, extra = batches(5)
    assert extra is None
    assert x.dtype == torch.long and x.shape == (4, 16) and y.shape == (4, 16)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)  # y is x shifted by one
    again = TokenBatches(tokens, batch_size=4, seq_len=16, seed=3)(5)  # a resumed run, new object
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    assert not torch.equal(x, batches(6)[0])
    assert not torch.equal(x, TokenBatches(tokens, batch_size=4, seq_len=16, seed=4)(5)[0])


def test_sequential_batches_are_non_overlapping_windows_in_order():
    tokens = np.arange(101, dtype=np.uint16)  # 100 targets -> 10 windows of 10
    batches = list(TokenBatches(tokens, batch_size=4, seq_len=10, seed=0).sequential(max_batches=None))
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]
    xs = torch.cat([x for x, _ in batches])
    assert xs[:, 0].tolist() == list(range(0, 100, 10))
    assert torch.equal(torch.cat([y for _, y in batches]).flatten(), torch.arange(1, 101))
    assert len(list(TokenBatches(tokens, batch_size=4, seq_len=10, seed=0).sequential(max_batches=2))) == 2


def test_token_batches_need_more_tokens_than_one_window():
    with pytest.raises(ValueError, match="at least"):
        TokenBatches(np.arange(8), batch_size=1, seq_len=8, seed=0)


def test_sequential_token_batches_walk_every_window_once_per_epoch_then_wrap():
    tokens = np.arange(105, dtype=np.uint16)  # 104 targets -> 10 windows of 10 (the last 4 tokens never start one)
    batches = TokenBatches(tokens, batch_size=4, seq_len=10, seed=0, windows="sequential")
    xs, ys = zip(*(batches(i)[:2] for i in range(5)), strict=True)  # 20 windows: exactly two epochs
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(y, x + 1)  # y is x shifted by one
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(20, 9, dtype=torch.long))  # each row is one window
    starts = x[:, 0].tolist()
    assert starts[:4] == [0, 10, 20, 30] and starts[4:8] == [40, 50, 60, 70]  # batch i holds windows i*B .. i*B+B-1
    assert starts[8:12] == [80, 90, 0, 10]  # batch 2 wraps into the second epoch
    assert starts[:10] == starts[10:] == list(range(0, 100, 10))  # every window once per epoch, in order
    assert torch.equal(batches(7)[0], TokenBatches(tokens, 4, 10, seed=9, windows="sequential")(7)[0])
    assert batches(7)[2] is None


def test_random_token_batches_depend_only_on_seed_and_index():
    tokens = np.arange(10_000, dtype=np.uint16)
    batches = TokenBatches(tokens, batch_size=4, seq_len=16, seed=3, windows="random")
    later = batches(7)[0]
    for i in range(7):  # what ran before does not matter
        batches(i)
    assert torch.equal(batches(7)[0], later)
    assert torch.equal(later, TokenBatches(tokens, batch_size=4, seq_len=16, seed=3)(7)[0])  # "random" is the default
    assert not torch.equal(later, TokenBatches(tokens, batch_size=4, seq_len=16, seed=3, windows="sequential")(7)[0])


def test_an_unknown_windows_mode_is_refused():
    with pytest.raises(ValueError, match="windows must be 'random' or 'sequential', got 'shuffled'"):
        TokenBatches(np.arange(100), batch_size=1, seq_len=8, seed=0, windows="shuffled")


def test_add_documents_puts_bos_before_each_document_in_one_array(tmp_path):
    writer = TokenShardWriter(tmp_path, "train", vocab_size=50, tokens_per_shard=4)
    assert writer.add_documents([[5, 6], [], [7]], bos_id=1) == 6
    paths = writer.close()
    assert load_tokens(tmp_path, "train").tolist() == [1, 5, 6, 1, 1, 7]
    assert len(paths) == 2 and writer.num_tokens == 6


def test_add_documents_takes_arrays_as_well_as_lists(tmp_path):
    arrays = TokenShardWriter(tmp_path / "a", "train", vocab_size=50)
    lists = TokenShardWriter(tmp_path / "l", "train", vocab_size=50)
    docs = [[5, 6], [], [7, 49]]
    assert arrays.add_documents([np.array(d, dtype=np.uint32) for d in docs], bos_id=1) == 7
    assert lists.add_documents(docs, bos_id=1) == 7
    arrays.close(), lists.close()
    assert load_tokens(tmp_path / "a", "train").tolist() == load_tokens(tmp_path / "l", "train").tolist()
    assert (tmp_path / "a" / "train-00000.bin").read_bytes() == (tmp_path / "l" / "train-00000.bin").read_bytes()


def test_add_documents_refuses_ids_outside_the_vocab(tmp_path):
    writer = TokenShardWriter(tmp_path, "train", vocab_size=300)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 300\)"):
        writer.add_documents([[5, 300]], bos_id=0)
    with pytest.raises(ValueError, match="token ids"):
        writer.add_documents([[70_000]], bos_id=0)  # does not even fit the uint16 buffer
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 300\)"):
        writer.add_documents([np.array([1, 300], dtype=np.uint32)], bos_id=0)
    with pytest.raises(ValueError, match="bos id 300"):
        writer.add_documents([[1]], bos_id=300)


def test_a_worker_tokenizes_one_document_shard_into_token_shards_named_after_it(tmp_path):
    texts = [f"Document {i}: the tokenizer reads every word of it, twice over." * (1 + i % 3) for i in range(50)]
    tok = train_bpe(texts, vocab_size=400)
    tok.save(tmp_path / "tokenizer.json")
    with ShardWriter(tmp_path / "documents", "train-00007", row_group_size=16) as writer:
        for i, text in enumerate(texts):
            writer.write({"id": str(i), "text": text})
    (path,) = writer.paths
    job = TokenizeJob(path, tmp_path / "tokenizer.json", tmp_path / "shards", "train-00007", tokens_per_shard=1000)
    result = tokenize_document_shard(job)
    expected = [t for text in texts for t in [tok.bos_id, *tok.encode(text)]]
    assert result["docs"] == 50 and result["tokens"] == len(expected) and result["dtype"] == "uint16"
    assert result["shards"] == [f"train-00007-{j:05d}.bin" for j in range(-(-len(expected) // 1000))]
    assert load_tokens(tmp_path / "shards", "train").tolist() == expected
    assert tokenize_document_shard(dataclasses.replace(job, num_threads=2)) == result  # threads change nothing
    assert load_tokens(tmp_path / "shards", "train").tolist() == expected


def test_a_document_shard_without_text_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "body": ["no text column"]}), tmp_path / "train-00000.parquet")
    tok = train_bpe(["some text to learn from"] * 5, vocab_size=300)
    tok.save(tmp_path / "tokenizer.json")
    job = TokenizeJob(tmp_path / "train-00000.parquet", tmp_path / "tokenizer.json", tmp_path / "shards", "train-00000")
    with pytest.raises(ValueError, match=r"train-00000.parquet: missing column\(s\) \['text'\]"):
        tokenize_document_shard(job)


def test_a_token_stream_slices_across_shards_like_one_array():
    from data.tokens.shards import TokenStream

    parts = [np.arange(0, 5, dtype=np.uint16), np.arange(5, 6, dtype=np.uint16), np.arange(6, 20, dtype=np.uint16)]
    stream, whole = TokenStream(parts), np.arange(20, dtype=np.uint16)
    assert len(stream) == 20 and stream.ndim == 1
    for start, stop in [(0, 5), (3, 9), (4, 7), (5, 6), (0, 20), (19, 25), (10, 10)]:
        assert stream[start:stop].tolist() == whole[start:stop].tolist()
    assert np.asarray(stream).tolist() == whole.tolist()
