"""The arena: models compared two at a time on the same prompts, and rated from all their matches.

A match is one prompt answered by two players. It is judged by the prompt's exact check where it has one (the chat
skills': right beats wrong, two rights or two wrongs tie), otherwise by the reward model (the higher reward wins;
equal rewards tie). Ratings are Bradley-Terry strengths fitted by Hunter's MM algorithm (Annals of Statistics 32,
2004), a tie counting half a win for each side, shown on the Elo scale (400 points: 10-to-1 odds) with the first
player of the leaderboard's history at 1000. Every pair of players that met also gets one virtual tie, so a player
that won every match still gets a finite rating (a weak prior toward equal strength). Intervals come from a seeded
bootstrap that resamples each pair's matches and refits."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

A_WINS, B_WINS, TIE = "a", "b", "tie"


def check_matches(a: str, b: str, results_a: list[dict], results_b: list[dict]) -> list[dict]:
    """Matches on the items both players answered (paired by skill and id), judged by the items' checks."""
    theirs = {(r["skill"], str(r["id"])): bool(r["correct"]) for r in results_b}
    out = []
    for r in results_a:
        key = (r["skill"], str(r["id"]))
        if key not in theirs:
            continue
        mine, other = bool(r["correct"]), theirs[key]
        winner = TIE if mine == other else (A_WINS if mine else B_WINS)
        out.append({"a": a, "b": b, "item": f"{key[0]}/{key[1]}", "winner": winner, "judge": "check"})
    return out


def reward_matches(a: str, b: str, items: Sequence[tuple[str, str, str, str]],
                   reward: Callable[[list[str], list[str]], list[float]]) -> list[dict]:
    """Matches on open prompts judged by a reward model: `items` are (item id, prompt, a's answer, b's answer);
    `reward(prompts, answers)` scores answers."""
    if not items:
        return []
    prompts = [p for _, p, _, _ in items]
    ra = reward(prompts, [x for _, _, x, _ in items])
    rb = reward(prompts, [y for _, _, _, y in items])
    return [{"a": a, "b": b, "item": item, "winner": TIE if x == y else (A_WINS if x > y else B_WINS),
             "judge": "reward_model", "margin": round(x - y, 4)}
            for (item, _, _, _), x, y in zip(items, ra, rb, strict=True)]


def _counts(matches: Sequence[dict]) -> tuple[list[str], np.ndarray]:
    """(players in the order met, a P x P x 2 array: [i, j, 0] the wins of i over j, [i, j, 1] their ties (stored
    both ways))."""
    players = list(dict.fromkeys(p for m in matches for p in (m["a"], m["b"])))
    at = {p: i for i, p in enumerate(players)}
    out = np.zeros((len(players), len(players), 2))
    for m in matches:
        a, b = at[m["a"]], at[m["b"]]
        if m["winner"] == TIE:
            out[a, b, 1] += 1
            out[b, a, 1] += 1
        elif m["winner"] == A_WINS:
            out[a, b, 0] += 1
        else:
            out[b, a, 0] += 1
    return players, out


def _fit(outcomes: np.ndarray, iterations: int = 500, tolerance: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths (geometric mean 1) by MM updates; a tie is half a win each, and every pair that met
    gets one virtual tie."""
    met = (outcomes.sum(axis=2) + outcomes.sum(axis=2).T) > 0
    wins = outcomes[:, :, 0] + 0.5 * outcomes[:, :, 1] + 0.5 * met
    games = wins + wins.T
    total = wins.sum(axis=1)
    strength = np.ones(len(wins))
    for _ in range(iterations):
        denominator = (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        new = np.where(total > 0, total / np.maximum(denominator, 1e-300), strength)
        new /= np.exp(np.log(new).mean())
        done = np.max(np.abs(np.log(new / strength))) < tolerance
        strength = new
        if done:
            break
    return strength


def bradley_terry(matches: Sequence[dict], iterations: int = 500, tolerance: float = 1e-10) -> dict[str, float]:
    """Strengths (geometric mean 1) maximising the Bradley-Terry likelihood of the matches."""
    players, outcomes = _counts(matches)
    return dict(zip(players, _fit(outcomes, iterations, tolerance).tolist(), strict=True))


def elo(strength: dict[str, float], anchor: str) -> dict[str, float]:
    """Strengths on the Elo scale, `anchor` at 1000."""
    return {p: 1000 + 400 * math.log10(s / strength[anchor]) for p, s in strength.items()}


def leaderboard(matches: Sequence[dict], anchor: str | None = None, samples: int = 500, seed: int = 0,
                alpha: float = 0.05) -> list[dict]:
    """One row per player, best first: rating (Elo scale, `anchor` or the first player met at 1000) with a bootstrap
    interval (each pair's matches resampled, so every pair keeps its number of games), and its wins, losses, ties."""
    if not matches:
        return []
    players, outcomes = _counts(matches)
    anchor_at = players.index(anchor or players[0])
    to_elo = lambda s: 1000 + 400 * np.log10(s / s[anchor_at])
    rating = to_elo(_fit(outcomes))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        resampled = np.zeros_like(outcomes)
        for i in range(len(players)):
            for j in range(i + 1, len(players)):
                won, lost, tied = outcomes[i, j, 0], outcomes[j, i, 0], outcomes[i, j, 1]
                n = int(won + lost + tied)
                if n:
                    wins, losses, ties = rng.multinomial(n, np.array([won, lost, tied]) / n)
                    resampled[i, j] = (wins, ties)
                    resampled[j, i] = (losses, ties)
        draws.append(to_elo(_fit(resampled, iterations=200, tolerance=1e-6)))
    low, high = np.quantile(np.array(draws), [alpha / 2, 1 - alpha / 2], axis=0)
    rows = []
    for i, p in enumerate(players):
        won, lost, tied = int(outcomes[i, :, 0].sum()), int(outcomes[:, i, 0].sum()), int(outcomes[i, :, 1].sum())
        rows.append({"player": p, "rating": round(float(rating[i]), 1), "rating_low": round(float(low[i]), 1),
                     "rating_high": round(float(high[i]), 1), "matches": won + lost + tied, "wins": won,
                     "losses": lost, "ties": tied})
    return sorted(rows, key=lambda r: -r["rating"])


