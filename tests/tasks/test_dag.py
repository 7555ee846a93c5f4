import pytest

from tasks.core.dag import ORDER, WEEKLY, YEARLY, downstream, upstream


def test_weekly_needs_the_yearly_stages():
    assert upstream(WEEKLY) == ORDER


def test_upstream_of_tokenizer_is_only_its_inputs():
    assert upstream(["train_tokenizer"]) == ["crawl", "preprocess", "train_tokenizer"]


def test_downstream_of_pretrain_excludes_everything_before_it():
    after = downstream("pretrain")
    assert "eval_base" in after and "finetune" in after and "deploy" in after
    assert not set(after) & set(YEARLY[: YEARLY.index("pretrain") + 1])


def test_unknown_stage_names_the_known_ones():
    with pytest.raises(KeyError, match="pretrain"):
        upstream(["pretrian"])
