"""Two `factory serve` replicas on one PostgreSQL store, as behind a load balancer: a request answered by either is
kept once, feedback on an answer from one replica is taken by the other, and the pipeline reads it all back."""

from concurrent.futures import ThreadPoolExecutor

import httpx

from serve.store import Store
from tests.pg import postgres
from tests.serve.test_durability import factory_serve

REQUESTS = 16


def test_two_replicas_share_one_postgres_store_of_requests_and_feedback(tmp_path, model_dirs):
    model = model_dirs[0]
    with (postgres(tmp_path) as url,
          factory_serve(model, tmp_path / "a", "--db", url) as a,
          factory_serve(model, tmp_path / "b", "--db", url) as b,
          httpx.Client(timeout=60) as client):

        def ask(i: int) -> tuple[str, dict]:
            replica = (a, b)[i % 2]  # round robin, as a load balancer would
            body = {"model": model.name, "messages": [{"role": "user", "content": f"Question {i}?"}],
                    "max_tokens": 8, "user": f"user-{i}"}
            response = client.post(f"{replica.url}/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return replica.url, response.json()

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(REQUESTS)))
        from_a = [r for where, r in answers if where == a.url]
        from_b = [r for where, r in answers if where == b.url]
        assert len(from_a) == len(from_b) == REQUESTS // 2

        # A user flags, through replica B, the answer replica A gave; and likes one of B's through A.
        flagged, liked = from_a[0]["id"], from_b[0]["id"]
        response = client.post(f"{b.url}/v1/feedback",
                               json={"response_id": flagged, "rating": -1, "reason": "made things up"})
        assert response.status_code == 200, response.text
        response = client.post(f"{a.url}/v1/feedback", json={"response_id": liked, "rating": 1})
        assert response.status_code == 200, response.text
        response = client.get(f"{a.url}/v1/feedback", params={"response_id": [flagged, liked]})
        assert {f["response_id"]: f["rating"] for f in response.json()["data"]} == {flagged: -1, liked: 1}

        with Store(url) as store:
            rows = store.requests()
            by_id = {r["id"]: r for r in rows}
            assert len(by_id) == len(rows) == REQUESTS
            assert by_id.keys() == {r["id"] for _, r in answers}
            assert [r["seq"] for r in rows] == sorted({r["seq"] for r in rows})
            assert all(by_id[r["id"]]["answer"] == r["choices"][0]["message"]["content"] for _, r in answers)
            assert [(f["rating"], f["reason"]) for f in by_id[flagged]["feedback"]] == [(-1, "made things up")]
            assert [f["rating"] for f in by_id[liked]["feedback"]] == [1]
            assert not list(tmp_path.glob("*/serving/requests.db"))  # nothing kept apart from the shared store

            # What collect_misbehaviors reads: each feedback with the request it rates.
            feedback = store.feedback_since(0)
            assert [(f["response_id"], f["rating"]) for f in feedback] == [(flagged, -1), (liked, 1)]
            request = feedback[0]["request"]
            assert request["answer"] == from_a[0]["choices"][0]["message"]["content"]
            assert request["messages"] == [{"role": "user", "content": "Question 0?"}]
