"""map_shards: results in input order on processes, and a failing shard named in the error."""

import math

import pytest

from tasks.core.parallel import map_shards


def test_results_come_back_in_input_order_from_two_processes():
    seen = []
    assert map_shards(math.sqrt, [16, 1, 9, 4], workers=2, on_result=lambda i, r: seen.append(i)) == [4, 1, 3, 2]
    assert sorted(seen) == [0, 1, 2, 3]


def test_a_failing_shard_is_named_in_the_error():
    with pytest.raises(RuntimeError, match=r"shard 1 failed \(-1\): ValueError: math domain error"):
        map_shards(math.sqrt, [4, -1, 9], workers=2)
