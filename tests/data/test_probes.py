"""The multiple-choice continuation probe built from crawl documents."""

from data.evals.probes import build_mc_probe, few_shot_prefix

TOPICS = ["rivers", "bridges", "violins", "comets", "gardens", "bakeries", "glaciers", "printers"]


def make_docs(n_docs: int = 8, sentences: int = 12) -> list[dict]:
    docs = []
    for d in range(n_docs):
        topic = TOPICS[d % len(TOPICS)]
        text = " ".join(f"Sentence {s} of document {d} talks about {topic} and the many things people say "
                        f"when they visit {topic} number {s * 7 + d}." for s in range(sentences))
        docs.append({"id": f"doc{d}", "text": text})
    return docs


def test_answer_is_the_true_continuation_among_distinct_choices():
    docs = make_docs()
    texts = {d["id"]: " ".join(d["text"].split()) for d in docs}
    items = build_mc_probe(docs, n=30, seed=0)
    assert len(items) == 30 and len({it["id"] for it in items}) == 30
    for it in items:
        assert len(it["choices"]) == 4 and len(set(it["choices"])) == 4
        assert 0 <= it["answer"] < 4 and it["choices"][it["answer"]] == it["answer_text"]
        assert len(it["context"].split()) == 24
        assert all(len(c.split()) == 8 for c in it["choices"])
        assert f"{it['context']} {it['answer_text']}" in texts[it["doc_id"]]
        for i, choice in enumerate(it["choices"]):
            if i != it["answer"]:  # distractors come from other documents
                assert any(choice in t for doc_id, t in texts.items() if doc_id != it["doc_id"])


def test_contexts_start_at_sentence_starts():
    for it in build_mc_probe(make_docs(), n=20, seed=1):
        assert it["context"].startswith("Sentence ")


def test_probe_is_deterministic_and_seed_dependent():
    docs = make_docs()
    assert build_mc_probe(docs, 20, seed=3) == build_mc_probe(iter(docs), 20, seed=3)
    assert build_mc_probe(docs, 20, seed=3) != build_mc_probe(docs, 20, seed=4)


def test_custom_sizes_and_answer_positions_vary():
    items = build_mc_probe(make_docs(), n=40, seed=0, n_choices=3, context_words=10, continuation_words=5)
    assert all(len(it["choices"]) == 3 and len(it["context"].split()) == 10 for it in items)
    assert len({it["answer"] for it in items}) == 3


def test_too_few_or_too_short_documents_give_no_items():
    assert build_mc_probe(make_docs(n_docs=3), n=5, seed=0) == []  # distractors need 3 other documents
    short = [{"text": "just a few words here"} for _ in range(10)]
    assert build_mc_probe(short, n=5, seed=0) == []


def test_few_shot_prefix_renders_solved_examples():
    items = build_mc_probe(make_docs(), n=5, seed=0)
    prefix = few_shot_prefix(items, k=2)
    blocks = prefix.split("\n\n")
    assert blocks[-1] == "" and len(blocks) == 3
    assert blocks[0] == f"{items[0]['context']} {items[0]['answer_text']}"
    assert few_shot_prefix(items, k=0) == ""
