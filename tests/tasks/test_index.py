"""Stage `index` under Prefect on the micro crawl (crawl -> preprocess -> index): the search index over every kept
document, which the search tool loads, and its retrieval measure."""

import pytest

from data.search import SearchIndex, title_from_url
from data.tokens.documents import read_documents
from flows.cycles import stage
from model.tools import SEARCH_K
from tasks.core.artifacts import ArtifactStore
from tasks.core.config import ConfigError, load_config
from tests.micro import MICRO


@pytest.fixture(scope="module")
def built(tmp_path_factory, prefect_server):
    workdir = tmp_path_factory.mktemp("work")
    stage(name="index", workdir=str(workdir), overrides=MICRO)
    store = ArtifactStore(workdir / "artifacts")
    (index_key,), (pre_key,) = store.list_keys("index"), store.list_keys("preprocess")
    return store.load("index", index_key), store.load("preprocess", pre_key)


def test_every_kept_document_is_indexed_in_passages(built):
    artifact, preprocess = built
    docs = list(read_documents(sorted((preprocess.path / "documents").glob("*.parquet")), columns=["url", "text"]))
    index = SearchIndex.load(artifact.path / "index")
    assert artifact.counts["documents"] == index.documents == len(docs) == preprocess.counts["kept"]
    assert artifact.counts["passages"] == len(index) > index.documents  # pages are longer than one passage
    page = max(docs, key=lambda d: len(d["text"]))
    assert page["url"] in [p.url for p in index.search(title_from_url(page["url"]), k=5)]


def test_retrieval_is_measured_on_the_sampled_pages(built):
    artifact, _ = built
    m, c = artifact.metrics, artifact.counts
    assert c["eval_queries"] == min(200, c["documents"]) and c["eval_k"] == SEARCH_K  # what the tool returns
    assert 0.5 <= m["title_recall_at_k"] <= 1 and 0 < m["snippet_recall_at_k"] <= 1
    assert m["seconds"] > 0 and artifact.manifest["main_metric"] == "title_recall_at_k"


def test_an_overlap_as_long_as_a_passage_is_refused_by_name():
    with pytest.raises(ConfigError, match="index.*overlap_words"):
        load_config("tiny", ["index.passage_words=20", "index.overlap_words=20"])
