import pytest

from tasks.core.config import ConfigError, load_config


def test_presets_load_and_differ():
    tiny, small = load_config("tiny"), load_config("small")
    assert tiny.preset == "tiny" and small.preset == "small"
    assert small.model.depth > tiny.model.depth


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("tiny", ["pretrain.steps=7", 'crawl.sources=["/data/cc/*.warc.gz"]', "labels.inbox=/data/inbox"])
    assert cfg.pretrain.steps == 7
    assert cfg.crawl.sources == ["/data/cc/*.warc.gz"]
    assert cfg.labels.inbox == "/data/inbox"


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match=r"pretrain\.stepz: Extra inputs are not permitted"):
        load_config("tiny", ["pretrain.stepz=7"])


def test_malformed_override_says_what_is_expected():
    with pytest.raises(ValueError, match="section.key=VALUE"):
        load_config("tiny", ["pretrain.steps"])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="preset 'nope'.*tiny"):
        load_config("nope")


def test_a_gate_task_with_dots_is_one_key_and_the_default_tolerance_stays():
    cfg = load_config("tiny", ["deploy.tolerance.redteam.direct.resisted=0.1", "deploy.min_score.refusal=0.5"])
    assert cfg.deploy.tolerance == {"default": 0.05, "redteam.direct.resisted": 0.1}
    assert cfg.deploy.min_score == {"refusal": 0.5}
    # a whole mapping given at once replaces the default, as written
    assert load_config("tiny", ["deploy.tolerance={refusal: 0.3}"]).deploy.tolerance == {"refusal": 0.3}
    with pytest.raises(ConfigError, match="'steps' is not a section"):
        load_config("tiny", ["pretrain.steps.x=1"])
