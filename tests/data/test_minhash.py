"""MinHash LSH: near-duplicates share a band, unrelated texts don't, clusters keep their smallest id."""

import random
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from data.cleaning.minhash import MinHashConfig, MinHasher, duplicates_by_key, near_duplicates


def _text(seed: int, n: int = 400) -> str:
    rng = random.Random(seed)
    return " ".join(f"w{rng.randint(0, 5000)}" for _ in range(n))


def test_a_lightly_edited_copy_shares_bands_and_an_unrelated_text_shares_none():
    hasher = MinHasher(MinHashConfig())
    base = _text(1)
    words = base.split()
    edited = " ".join(words[:390] + ["changed"] * 10)  # ~95% of the 5-grams kept
    assert (hasher.band_keys(base) == hasher.band_keys(edited)).sum() >= 1
    assert (hasher.band_keys(base) == hasher.band_keys(_text(2))).sum() == 0


def test_case_and_punctuation_do_not_matter():
    hasher = MinHasher(MinHashConfig())
    text = _text(3)
    assert (hasher.band_keys(text) == hasher.band_keys(text.upper().replace(" ", ", "))).all()


def test_buckets_and_hashes_are_configurable():
    keys = MinHasher(MinHashConfig(ngram=3, buckets=5, hashes_per_bucket=2)).band_keys(_text(4))
    assert keys.shape == (5,) and keys.dtype == np.uint64


@pytest.mark.parametrize("field", ["ngram", "buckets", "hashes_per_bucket"])
def test_sizes_below_one_are_refused_when_the_config_is_read(field):
    with pytest.raises(ValidationError, match=field):
        MinHashConfig(**{field: 0})


def test_band_keys_are_the_same_in_another_process():
    code = ("from data.cleaning.minhash import MinHasher, MinHashConfig; "
            "print(MinHasher(MinHashConfig()).band_keys('one two three four five six seven').tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == MinHasher(MinHashConfig()).band_keys("one two three four five six seven").tolist()


def test_exact_duplicates_keep_the_first_id():
    keys = np.array([7, 3, 7, 9, 3, 7], dtype=np.uint64)
    ids = np.array([10, 11, 12, 13, 14, 15], dtype=np.int64)
    assert duplicates_by_key(keys, ids).tolist() == [12, 14, 15]


def test_near_duplicate_clusters_are_transitive_and_keep_the_smallest_id():
    # bucket 0 joins 5-3, bucket 1 joins 3-9: one cluster {3, 5, 9}; 7 stands alone
    buckets = [(np.array([1, 2, 1, 4], np.uint64), np.array([5, 7, 3, 9], np.int64)),
               (np.array([8, 6, 5, 5], np.uint64), np.array([5, 7, 9, 3], np.int64))]
    assert near_duplicates(iter(buckets)).tolist() == [5, 9]


def test_no_duplicates_nothing_dropped():
    keys = np.array([1, 2, 3], np.uint64)
    assert near_duplicates(iter([(keys, np.array([0, 1, 2], np.int64))])).tolist() == []
