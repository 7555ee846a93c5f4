"""The arena's ratings on crafted match sets: the two-player Bradley-Terry fit is the log-odds of the (smoothed) win
share, three players come out in the order their results imply, a player that won everything stays finite, and
matches are judged by the items' checks or by a reward."""

import math

import pytest

from model import arena


def matches(a, b, wins, losses, ties):
    out = [{"a": a, "b": b, "item": f"w{i}", "winner": "a"} for i in range(wins)]
    out += [{"a": a, "b": b, "item": f"l{i}", "winner": "b"} for i in range(losses)]
    return out + [{"a": a, "b": b, "item": f"t{i}", "winner": "tie"} for i in range(ties)]


def test_two_players_are_rated_by_the_log_odds_of_their_smoothed_win_share():
    board = arena.leaderboard(matches("v2", "v1", 30, 10, 10), anchor="v1", samples=200)
    by = {r["player"]: r for r in board}
    # ties are half a win each, plus one virtual tie: 35.5 against 15.5
    assert by["v2"]["rating"] == pytest.approx(1000 + 400 * math.log10(35.5 / 15.5), abs=0.1)
    assert by["v1"]["rating"] == 1000.0
    assert (by["v2"]["wins"], by["v2"]["losses"], by["v2"]["ties"], by["v2"]["matches"]) == (30, 10, 10, 50)
    assert by["v2"]["rating_low"] < by["v2"]["rating"] < by["v2"]["rating_high"]
    assert by["v2"]["rating_low"] > 1000  # 30 to 10 is no accident
    assert [r["player"] for r in board] == ["v2", "v1"]


def test_three_players_are_ranked_as_their_results_say():
    history = matches("v2", "v1", 20, 10, 5) + matches("v3", "v2", 25, 5, 5)
    board = arena.leaderboard(history, samples=100)
    assert [r["player"] for r in board] == ["v3", "v2", "v1"]
    assert {r["player"]: r["rating"] for r in board}["v2"] == 1000.0  # the first player met is the anchor


def test_a_player_that_won_every_match_gets_a_finite_rating():
    strength = arena.bradley_terry(matches("v2", "v1", 20, 0, 0))
    assert math.isfinite(strength["v2"]) and strength["v2"] / strength["v1"] == pytest.approx(20.5 / 0.5)


def test_check_matches_pair_items_by_skill_and_id_and_judge_by_correctness():
    a = [{"skill": "arithmetic", "id": 1, "correct": True}, {"skill": "arithmetic", "id": 2, "correct": False},
         {"skill": "spelling", "id": 1, "correct": True}, {"skill": "spelling", "id": 9, "correct": True}]
    b = [{"skill": "arithmetic", "id": 1, "correct": False}, {"skill": "arithmetic", "id": 2, "correct": False},
         {"skill": "spelling", "id": 1, "correct": True}]
    found = arena.check_matches("new", "old", a, b)
    assert [(m["item"], m["winner"]) for m in found] == [("arithmetic/1", "a"), ("arithmetic/2", "tie"),
                                                         ("spelling/1", "tie")]


def test_reward_matches_go_to_the_higher_reward():
    def reward(prompts, answers):  # a stand-in judge: longer answers score higher
        return [float(len(x)) for x in answers]

    found = arena.reward_matches("new", "old", [("p1", "q", "long answer", "short"), ("p2", "q", "same", "same")],
                                 reward)
    assert [(m["winner"], m["judge"]) for m in found] == [("a", "reward_model"), ("tie", "reward_model")]
    assert arena.reward_matches("new", "old", [], reward) == []
