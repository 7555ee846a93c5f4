"""The run order, cycles and closures come from the stage modules' declarations."""

import pytest

from tasks.core import registry


def test_the_order_puts_every_input_before_its_reader():
    order = registry.order()
    for name, spec in registry.stages().items():
        assert all(order.index(dep) < order.index(name) for dep in spec.inputs), name


def test_the_cycles_are_the_yearly_then_the_weekly_stages():
    assert registry.cycle("yearly") == ["crawl", "preprocess", "index", "train_tokenizer", "tokenize", "pretrain",
                                        "eval_base", "register_base"]
    assert registry.cycle("weekly") == ["ingest_labels", "finetune", "reward_model", "preference", "rl",
                                        "interrogate", "evals", "deploy", "collect_misbehaviors"]
    assert registry.order() == registry.cycle("yearly") + registry.cycle("weekly")


def test_weekly_needs_the_base_model_but_not_its_registration():
    needed = registry.upstream(registry.cycle("weekly"))
    assert "pretrain" in needed and "crawl" in needed
    # finetuning reads the pretrain artifact; which MLflow server holds `base` must not retrain the assistant
    assert "register_base" not in needed


def test_upstream_of_tokenizer_is_only_its_inputs():
    assert registry.upstream(["train_tokenizer"]) == ["crawl", "preprocess", "train_tokenizer"]


def test_downstream_of_pretrain_excludes_everything_before_it():
    after = registry.downstream("pretrain")
    assert "eval_base" in after and "finetune" in after and "deploy" in after
    yearly = registry.cycle("yearly")
    assert not set(after) & set(yearly[: yearly.index("pretrain") + 1])


def test_unknown_stage_names_the_known_ones():
    with pytest.raises(KeyError, match="pretrain"):
        registry.upstream(["pretrian"])


def test_an_input_cycle_is_refused():
    from tasks.core.stage import StageSpec

    def spec(name, inputs):
        return StageSpec(name, "yearly", inputs, {}, lambda s: {}, "m")

    with pytest.raises(ValueError, match="cycle"):
        registry._topological({"a": spec("a", ("b",)), "b": spec("b", ("a",))})
    with pytest.raises(ValueError, match="unknown input"):
        registry._topological({"a": spec("a", ("nope",))})
