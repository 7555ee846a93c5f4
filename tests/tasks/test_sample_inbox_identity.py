"""The built-in labeling inbox generated for an identity: its conversations name the configured assistant, a share
start with its system message and pass ingestion's checks, and the inbox folder changes with what they depend on."""

from collections import Counter

from data.chat.labels import LabelsConfig, read_inbox
from data.samples.labels import build_label_inbox
from data.sources.quarantine import Quarantine
from model.identity import IdentityConfig
from tasks.core.samples import inbox_dir, sample_inbox

ADA = IdentityConfig(name="Ada", maker="Acme Labs", train_fraction=0.5)
PAGES = 5  # of the sample crawl, whose pages crawl_qa asks about (fewer: faster to build)


def test_an_identitys_inbox_has_its_system_message_in_a_share_and_reads_back_whole(tmp_path):
    counts = build_label_inbox(tmp_path / "inbox", None, n_conversations=200, n_comparisons=40, seed=2, identity=ADA)
    stats: Counter = Counter()
    with Quarantine(tmp_path / "q.jsonl") as q:
        out = list(read_inbox(tmp_path / "inbox", q, stats, LabelsConfig()))
    assert stats["quarantined"] == counts["invalid"]  # only the injected mistakes: system messages are valid labels
    conversations = {r["id"]: r for kind, r in out if kind == "conversation"}
    assert len(conversations) == 200
    first = [r["messages"][0] for r in conversations.values()]
    assert sum(m["role"] == "system" for m in first) == 100
    assert {m["content"] for m in first if m["role"] == "system"} == {ADA.system_text()}
    identity_answers = [r["messages"][-1]["content"] for r in conversations.values()
                        if r["meta"]["generator"] == "identity" and len(r["messages"]) <= 3]
    assert identity_answers and all("Ada" in a and "Acme Labs" in a for a in identity_answers)


def test_the_sample_inbox_folder_follows_the_identitys_training_data(tmp_path):
    cfg = LabelsConfig(sample_conversations=40, sample_comparisons=8)
    ada = sample_inbox(tmp_path, cfg, PAGES, ADA)
    assert inbox_dir(cfg, tmp_path, PAGES, ADA) == ada  # the same folder through inbox_dir
    assert sample_inbox(tmp_path, cfg, PAGES, ADA.model_copy(update={"at_inference": False})) == ada
    bea = sample_inbox(tmp_path, cfg, PAGES, ADA.model_copy(update={"name": "Bea"}))
    plain = sample_inbox(tmp_path, cfg, PAGES)
    assert len({ada, bea, plain}) == 3

    def says(folder, words: str) -> bool:
        return any(words in p.read_text(errors="replace") for p in folder.glob("conversations-*.jsonl"))

    assert says(ada, ADA.system_text()) and not says(plain, ADA.system_text())
    assert says(bea, "You are Bea") and not says(bea, "You are Ada")
