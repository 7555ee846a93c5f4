"""`factory simulate`: generated users stand in for people, so the whole feedback loop runs, and is measured, without
anyone chatting.

Each round: users (every request says `user="simulated-<n>"`, which the server records as `meta.simulated`) ask the
served `assistant@production` checkable prompts of the chat skills at temperature 0, flag the wrong answers through
`POST /v1/feedback` and thumb up the right ones; `collect_misbehaviors` turns the flags into the labeling queue; a
generator that knows the right answers answers the queue items it asked (answers marked simulated); the next weekly
cycle trains on them. Then it measures how often the new model (the weekly cycle's trained artifact just built,
whether or not deploy moved production) still fails the flagged prompts, and how often the old and the new model fail
a fixed set of held-out items that neither the training data, the evals nor the users hold. The report goes to
`<workdir>/simulate/report.json`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import chain, zip_longest
from pathlib import Path

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import SKILLS, Example, build_skill, normalize_prompt, user_turns
from model.files import atomic_write_json

ANSWERS_PREFIX = "simulated-round-"
USER_PREFIX = "simulated-"  # serve/app.py marks a request `meta.simulated` when its user starts with this


@dataclass
class Settings:
    """How many users ask how much, for how many rounds, against which server."""

    users: int = 8
    rounds: int = 1
    prompts_per_user: int = 10
    seed: int = 0
    url: str | None = None  # a running server (writing to the store collect_misbehaviors reads); None: start one
    held_out_per_skill: int = 20
    time_limit_s: float = 600.0  # each round's traffic; prompts not asked by then are counted as unsent
    request_timeout_s: float = 120.0
    poll_s: float = 1.0  # how often the started server looks where the alias points


@dataclass
class Exchange:
    """One simulated user's prompt, the server's answer, the check and the feedback given."""

    user: str
    item: dict  # the skill example as an eval item: id, skill, messages, reference, answer
    response_id: str | None = None
    answer: str | None = None
    model_version: str | None = None
    correct: bool | None = None
    rating: int | None = None
    reason: str | None = None
    error: str | None = None


class CannotSimulate(ValueError):
    """The workdir lacks what a simulation needs (a production model, its training data), or the server does not
    write where collect_misbehaviors reads."""


# ---------------------------------------------------------------------------------------------------------------
# what must exist first, and what is already there


def check_ready(cfg, wd: Path, hint: str) -> None:
    """Raise CannotSimulate naming the command to run when the yearly or weekly cycle has not run for this config."""
    from tasks.core.model_registry import alias_version
    from tasks.core.tracking import client, tracking_uri

    def run_first(missing: str, cycle: str) -> CannotSimulate:
        return CannotSimulate(f"{missing} in {wd}: run the {cycle} cycle first "
                              f"(`factory run {cycle} --workdir {wd}{hint}`)")

    uri = tracking_uri(wd)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise CannotSimulate(f"no MLflow store in {wd}: run the cycles first (`factory run all --workdir {wd}{hint}`)")
    c = client(wd)
    base, prod = cfg.register_base, cfg.deploy
    if alias_version(c, base.model_name, base.alias) is None:
        raise run_first(f"no {base.model_name}@{base.alias}", "yearly")
    if alias_version(c, prod.model_name, prod.alias) is None:
        raise run_first(f"no {prod.model_name}@{prod.alias}", "weekly")
    if not labels_of(cfg, wd):
        raise run_first(f"no training data of {prod.model_name}@{prod.alias} (its trained or ingest_labels artifact "
                        "is gone)", "weekly")


def answers_dir(cfg, wd: Path) -> Path:
    from tasks.ingest_labels import answers_dir as labels_answers

    return labels_answers(cfg.labels, wd)


def next_round(folder: Path) -> int:
    """The first round number not yet answered in `folder`: a second simulation adds to the first one's answers."""
    done = [int(m.group(1)) for p in folder.glob(f"{ANSWERS_PREFIX}*.jsonl")
            if (m := re.fullmatch(rf"{ANSWERS_PREFIX}(\d+)\.jsonl", p.name))] if folder.is_dir() else []
    return max(done, default=0) + 1


def labels_of(cfg, wd: Path) -> list[Path]:
    """The ingest_labels artifacts that matter for what is held out: the one production was trained on (found
    through its trained artifact, so a code edit since does not lose it) and the one this config resolves to now."""
    from tasks.core.model_registry import alias_version
    from tasks.core.stage import Context, resolve
    from tasks.core.tracking import client

    found = []
    version = alias_version(client(wd), cfg.deploy.model_name, cfg.deploy.alias)
    trained = Path(version.tags.get("artifact_path", "")) if version is not None else None
    if trained and (trained / "manifest.json").exists():
        key = _manifest(trained)["inputs"].get("ingest_labels", {}).get("key")
        path = trained.parents[1] / "ingest_labels" / str(key)
        if key and (path / "manifest.json").exists():
            found.append(path)
    current = resolve("ingest_labels", Context(str(wd), cfg))
    if current is not None and current.path not in found:
        found.append(current.path)
    return found


def training_prompts(cfg, wd: Path) -> tuple[set[str], set[str]]:
    """(user turns of the train splits, of train and val) of the training data (see labels_of), the problems the
    `rl` stage may train on counted as train."""
    from tasks.rl import problems

    train, val = [], []
    for labels in labels_of(cfg, wd):
        train += [*read_jsonl(labels / "conversations_train.jsonl"), *read_jsonl(labels / "comparisons_train.jsonl")]
        val += [*read_jsonl(labels / "conversations_val.jsonl"), *read_jsonl(labels / "comparisons_val.jsonl")]
        if cfg.rl.enabled:
            train += problems(cfg.rl, cfg.evals, labels)[0]
    return user_turns(train), user_turns(train) | user_turns(val)


# ---------------------------------------------------------------------------------------------------------------
# prompts


def user_skills(cfg) -> list[str]:
    """The evaluated skills a generated user can ask about without crawled pages."""
    return [s for s in cfg.evals.skills if not SKILLS[s].uses_pages]


def draw(skills: list[str], n: int, seed: int, exclude: set[str]) -> list[Example]:
    """n examples with distinct prompts outside `exclude`, the skills taking turns (a skill that runs out of new
    prompts, as identity does, leaves its turns to the others)."""
    def take(per: int) -> list[Example]:  # a skill's examples for a larger `per` begin with those for a smaller one
        lists = [build_skill(s).examples(per, seed, exclude_prompts=exclude) for s in skills]
        return [ex for ex in chain.from_iterable(zip_longest(*lists)) if ex is not None][:n]

    found = take(-(-n // len(skills)))
    return found if len(found) == n else take(n)


def eval_prompts(cfg, skills: list[str], train: set[str], added: int) -> set[str]:
    """Every prompt the evals may ask after up to `added` new training prompts: the evals take each skill's first
    items_per_task examples of their seed that no training prompt holds, so each new training prompt can push at
    most one later example of that stream in."""
    n = cfg.evals.items_per_task + added
    return {ex.prompt for s in skills for ex in build_skill(s).examples(n, cfg.evals.seed, train)}


def flag_reason(item: dict) -> str:
    """What a person would write when flagging a wrong answer to `item`."""
    ref = item["reference"]
    return {
        "arithmetic": f"wrong: the answer is {ref}",
        "letter_count": f"wrong count, it's {ref}",
        "spelling": f"misspelled: it's {ref}",
        "identity": f"that's not who you are: you are {ref}",
        "refusal": "made that up: it should say it doesn't know",
    }.get(item["skill"], f"wrong: the answer is {ref}")


# ---------------------------------------------------------------------------------------------------------------
# the server and the users


@contextmanager
def local_server(wd: Path, ref: str, store_url: str, poll_s: float, users: int, tools=None) -> Iterator[str]:
    """`factory serve` for `ref` in a thread, on a free 127.0.0.1 port, writing to `store_url`; yields its URL."""
    from flows.serving import build_app, running
    from serve.app import ServeSettings

    settings = ServeSettings(max_queue=max(64, users), **({"tools": tools} if tools else {}))
    with running(build_app(wd, ref, settings, store_url, poll_s)) as url:
        yield url


def served(url: str, timeout: float = 10.0) -> dict:
    """The server's /health: the model name and the version it serves now."""
    import httpx

    response = httpx.get(f"{url}/health", timeout=timeout)
    response.raise_for_status()
    return response.json()


def wait_for_version(url: str, version: str, timeout_s: float) -> str:
    """Wait until the server serves `version` (it follows the alias every poll); returns the version it serves."""
    deadline = time.monotonic() + timeout_s
    while (now := str(served(url)["version"])) != version and time.monotonic() < deadline:
        time.sleep(0.25)
    return now


def ask(client, model: str, user: str, item: dict, max_tokens: int) -> Exchange:
    """One chat request at temperature 0, the answer checked by its skill, and the feedback a user would give."""
    from data.chat.skills import check

    ex = Exchange(user, item)
    try:
        response = client.post("/v1/chat/completions", json={
            "model": model, "messages": item["messages"], "temperature": 0, "max_tokens": max_tokens, "user": user})
        if response.status_code != 200:  # e.g. a prompt longer than the model's context: the user sees an error
            ex.error = f"HTTP {response.status_code}: {_error_message(response)}"
            return ex
        body = response.json()
        ex.response_id, ex.model_version = body["id"], str(body.get("model_version"))
        ex.answer = body["choices"][0]["message"]["content"]
        ex.correct = check(item, ex.answer)
        rating, reason = (1, None) if ex.correct else (-1, flag_reason(item))
        feedback = client.post("/v1/feedback", json={"response_id": ex.response_id, "rating": rating,
                                                     "reason": reason})
        if feedback.status_code != 200:
            ex.error = f"feedback not recorded: HTTP {feedback.status_code}: {_error_message(feedback)}"
            return ex
        ex.rating, ex.reason = rating, reason
    except Exception as exc:  # a failed request is counted and reported, never fatal for the other users
        ex.error = f"{type(exc).__name__}: {exc}"
    return ex


def _error_message(response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def run_users(url: str, model: str, prompts: list[list[Example]], first_user: int, max_tokens: int,
              settings: Settings) -> list[Exchange]:
    """Each user (a thread) asks its prompts one after another until the round's time limit."""
    import httpx

    deadline = time.monotonic() + settings.time_limit_s

    def user(n: int, examples: list[Example]) -> list[Exchange]:
        name = f"{USER_PREFIX}{first_user + n}"
        done = []
        with httpx.Client(base_url=url, timeout=settings.request_timeout_s) as client:
            for example in examples:
                if time.monotonic() > deadline:
                    done.append(Exchange(name, example.as_item(), error="unsent: the round's time limit passed"))
                    continue
                done.append(ask(client, model, name, example.as_item(), max_tokens))
        return done

    with ThreadPoolExecutor(max(1, len(prompts)), thread_name_prefix="simulated-user") as pool:
        return [ex for found in pool.map(user, range(len(prompts)), prompts) for ex in found]


# ---------------------------------------------------------------------------------------------------------------
# labeling and measuring


def label(queue: list[dict], exchanges: list[Exchange], number: int) -> list[dict]:
    """The generator's answers: for each queue item that is one of this round's simulated exchanges (its prompt, and
    one of its response ids), the skill example's ideal answer, marked as generated."""
    asked = {_prompt(ex.item): ex for ex in exchanges if ex.response_id}
    ours = {ex.response_id for ex in exchanges if ex.response_id}
    answers, seen = [], set()
    for item in queue:
        messages = item.get("messages") or []
        if len(messages) != 1 or messages[0].get("role") != "user" or item["id"] in seen:
            continue
        ex = asked.get(normalize_prompt(str(messages[0].get("content") or "")))
        if ex is None or not ours & set(item.get("response_ids") or []):
            continue
        seen.add(item["id"])
        answers.append({"queue_id": item["id"], "answer": ex.item["answer"],
                        "meta": {"simulated": True, "generator": "factory simulate", "round": number,
                                 "skill": ex.item["skill"], "item_id": ex.item["id"]}})
    return answers


def wrong_answers(model_dir: Path, items: list[dict], cfg) -> set[str]:
    """The ids of the `items` the model in `model_dir` answers wrong (greedy, checked by each item's skill), answered
    as the evals stage answers: with the calculator and the model's system message (the users ask nothing that needs
    search)."""
    from tasks.evals import answer_items

    if not items:
        return set()
    results, _ = answer_items(model_dir, items, cfg, None)
    return {r["id"] for r in results if not r["correct"]}


def rates(items: list[dict], wrong: set[str]) -> dict:
    """How many of `items` are in `wrong`: overall and per skill."""
    def rate(some: list[dict]) -> dict:
        failed = sum(i["id"] in wrong for i in some)
        return {"items": len(some), "failed": failed, "failure_rate": round(failed / len(some), 4) if some else None}

    skills = dict.fromkeys(i["skill"] for i in items)
    return {**rate(items), "per_skill": {s: rate([i for i in items if i["skill"] == s]) for s in skills}}


def change(before: dict, after: dict) -> float | None:
    if before["failure_rate"] is None or after["failure_rate"] is None:
        return None
    return round(after["failure_rate"] - before["failure_rate"], 4)


# ---------------------------------------------------------------------------------------------------------------
# the loop


def simulate(preset: str, wd: Path, overrides: list[str], settings: Settings,
             say: Callable[[object], None] | None = None) -> dict:
    """Run `settings.rounds` rounds of traffic -> collect -> label -> weekly cycle -> measure; returns the report
    (also written, after each round, to <workdir>/simulate/report.json)."""
    from tasks.core.config import load_config

    cfg = load_config(preset, overrides)
    check_ready(cfg, wd, f" --preset {preset}" + "".join(f" --set {o}" for o in overrides))
    sim = Simulation(preset, wd, overrides, cfg, settings, say)
    return sim.run()


class Simulation:
    """The rounds of one `factory simulate`: the prompts of every round and the held-out items are drawn up front,
    so that none of them is another's."""

    def __init__(self, preset: str, wd: Path, overrides: list[str], cfg, settings: Settings,
                 say: Callable[[object], None] | None = None):
        from rich.console import Console

        from tasks.collect_misbehaviors import store_url
        from tasks.core.tracking import client

        self.preset, self.wd, self.overrides, self.cfg, self.settings = preset, wd, overrides, cfg, settings
        self.say = say or Console().print
        self.client = client(wd)
        self.ref = f"{cfg.deploy.model_name}@{cfg.deploy.alias}"
        self.store = store_url(cfg, wd)
        self.first = next_round(answers_dir(cfg, wd))
        self.skills = user_skills(cfg)
        self.per_round = settings.users * settings.prompts_per_user
        train, trained = training_prompts(cfg, wd)
        # Users ask nothing the model was trained on (so a flagged prompt's answer is a new correction, never a
        # duplicate of a training conversation that ingest_labels would drop, and earlier rounds' prompts are not asked
        # again) and nothing the evals may ask once these rounds' answers are trained on; the held-out items are none
        # of those either, nor any prompt the users ask.
        seen = trained | eval_prompts(cfg, self.skills, train, self.per_round * settings.rounds)
        self.asked = draw(self.skills, self.per_round * settings.rounds, 1_000_000 + 1000 * settings.seed + self.first,
                          seen)
        self.held_out = [ex.as_item() for ex in draw(self.skills, settings.held_out_per_skill * len(self.skills),
                                                     2_000_000 + settings.seed, seen | {e.prompt for e in self.asked})]

    def run(self) -> dict:
        s = self.settings
        report = {"settings": {**asdict(s), "preset": self.preset, "overrides": self.overrides,
                               "skills": self.skills, "store": _shown(self.store)},
                  "held_out_items": len(self.held_out), "rounds": []}
        path = self.wd / "simulate" / "report.json"
        with self.server() as url:
            self.say(f"chat server {url} ({self.ref}); {s.users} simulated users x {s.prompts_per_user} prompts "
                     f"({', '.join(self.skills)}), {s.rounds} round(s) from round {self.first}; "
                     f"{len(self.held_out)} held-out items")
            for i in range(s.rounds):
                report["rounds"].append(self.round(url, self.first + i,
                                                   self.asked[i * self.per_round:(i + 1) * self.per_round]))
                atomic_write_json(path, report)
                self.say(round_table(report["rounds"][-1]))
                self.say(f"report: {path}")
        return report

    @contextmanager
    def server(self) -> Iterator[str]:
        if self.settings.url:
            yield self.settings.url.rstrip("/")
            return
        with local_server(self.wd, self.ref, self.store, self.settings.poll_s, self.settings.users,
                          self.cfg.tools) as url:
            yield url

    def production(self):
        from tasks.core.model_registry import alias_version

        return alias_version(self.client, self.cfg.deploy.model_name, self.cfg.deploy.alias)

    def round(self, url: str, number: int, prompts: list[Example]) -> dict:
        from flows.cycles import weekly_cycle
        from tasks.core.model_registry import model_dir

        timings: dict[str, float] = {}
        t = time.perf_counter()
        production = self.production()
        exchanges, serving = self.traffic(url, number, prompts)
        timings["traffic"] = time.perf_counter() - t
        answered = [e for e in exchanges if e.response_id]
        wrong = [e for e in answered if e.rating == -1]  # flagged (a wrong answer whose flag did not land is an error)

        t = time.perf_counter()
        collected, queue, rebuilt = self.collect()
        answers = label(queue, answered, number)
        answers_file = answers_dir(self.cfg, self.wd) / f"{ANSWERS_PREFIX}{number}.jsonl"
        if answers:
            write_jsonl(answers_file, answers)
        timings["collect_and_label"] = time.perf_counter() - t
        queue_file = _manifest(collected)["info"]["queue"]
        self.say(f"collect_misbehaviors: {len(queue)} queue items in {queue_file}, "
                 f"{sum(bool(it['meta'].get('simulated')) for it in queue)} of them simulated traffic; "
                 f"{len(answers)} answered by the generator -> {answers_file if answers else '(nothing to answer)'}")

        t = time.perf_counter()
        built = weekly_cycle(preset=self.preset, workdir=str(self.wd), overrides=self.overrides, force=[])
        timings["weekly_cycle"] = time.perf_counter() - t
        ingest = _manifest(built["ingest_labels"])["counts"]
        decision = json.loads((Path(built["deploy"]) / "decision.json").read_text())
        after = str(self.production().version)
        self.say(f"weekly cycle: ingest_labels read {ingest.get('answers_read', 0)} answers, kept "
                 f"{ingest.get('answers_kept', 0)} ({ingest.get('answers_train', 0)} train, "
                 f"{ingest.get('answers_val', 0)} val); deploy: {decision['verdict']}")

        t = time.perf_counter()
        new_model, old_model = Path(built["rl"]) / "model", model_dir(production)
        measured = self.measure(old_model, new_model, [e.item for e in wrong],
                                trained_prompts(Path(built["ingest_labels"])))
        timings["measure"] = time.perf_counter() - t
        return {
            "round": number,
            "traffic": {"prompts": len(exchanges), "answered": len(answered), "wrong": len(wrong),
                        "right": sum(e.rating == 1 for e in answered), "errors": sum(bool(e.error) for e in exchanges),
                        "served_version": serving,
                        "failure_rate": rates([e.item for e in answered],
                                              {e.item["id"] for e in answered if not e.correct})["failure_rate"]},
            "collect": {"artifact": str(collected), "queue": queue_file, "queue_items": len(queue),
                        "simulated_items": sum(bool(it["meta"].get("simulated")) for it in queue),
                        "rebuilt_first": rebuilt},
            "labeled": {"answers": len(answers), "file": str(answers_file) if answers else None},
            "ingest_labels": {k: v for k, v in ingest.items() if k.startswith("answers_")},
            "trained": {"artifact": built["rl"], "model": str(new_model)},
            "deploy": {"production_before": str(production.version), "production_after": after,
                       "moved": after != str(production.version), "passed": decision["passed"],
                       "verdict": decision["verdict"]},
            **measured,
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "exchanges": [asdict(e) for e in exchanges],
        }

    def traffic(self, url: str, number: int, prompts: list[Example]) -> tuple[list[Exchange], str]:
        """The users' requests and feedback against the server once it serves production; checks that they reached
        the store collect_misbehaviors reads."""
        import httpx

        from serve.store import Store

        s = self.settings
        version = str(self.production().version)
        try:
            serving = wait_for_version(url, version, max(10.0, 10 * s.poll_s))
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise CannotSimulate(f"no chat server answers GET {url}/health ({exc}): start `factory serve` there, "
                                 "or leave out --url to start one") from None
        if serving != version:
            self.say(f"[yellow]warning:[/] {url} serves v{serving}, not {self.ref} = v{version}")
        by_user = [prompts[u * s.prompts_per_user:(u + 1) * s.prompts_per_user] for u in range(s.users)]
        t = time.perf_counter()
        exchanges = run_users(url, served(url)["model"], by_user, (number - 1) * s.users + 1,
                              self.cfg.evals.max_new_tokens, s)
        answered = [e for e in exchanges if e.response_id]
        flagged, liked = sum(e.rating == -1 for e in answered), sum(e.rating == 1 for e in answered)
        errors = [e for e in exchanges if e.error]
        self.say(f"round {number}: {len(answered)} of {len(exchanges)} prompts answered by v{serving} in "
                 f"{time.perf_counter() - t:.1f}s: {flagged} wrong (flagged), {liked} right (thumbs up), "
                 f"{len(errors)} errors" + "".join(f"\n  {e.user}: {e.error}" for e in errors[:3]))
        with Store(self.store) as store:
            missing = [e.response_id for e in answered if store.get(e.response_id) is None]
        if missing:
            raise CannotSimulate(f"{len(missing)} simulated responses (e.g. {missing[0]}) are not in the store "
                               f"{_shown(self.store)} that collect_misbehaviors reads: the server at {url} writes "
                               "elsewhere (point collect.store or FACTORY_STORE_URL at its store)")
        return exchanges, serving

    def collect(self) -> tuple[Path, list[dict], list[str]]:
        """collect_misbehaviors over the new traffic (its key holds the store's window, so it is a new artifact);
        returns the artifact, its queue, and the inputs it had to rebuild first."""
        from flows.cycles import stage

        start = time.time()
        built = stage(name="collect_misbehaviors", preset=self.preset, workdir=str(self.wd),
                      overrides=self.overrides, with_downstream=False)
        path = Path(built["collect_misbehaviors"])
        rebuilt = [name for name, p in built.items() if name != "collect_misbehaviors" and _built_since(p, start)]
        if rebuilt:  # the stage builds its missing inputs first: the code or config changed since the weekly cycle
            self.say(f"[yellow]note:[/] collect_misbehaviors first rebuilt {', '.join(rebuilt)} (the code or config "
                     "changed since the last weekly cycle)")
        return path, read_jsonl(path / "queue.jsonl"), rebuilt

    def measure(self, old_model: Path, new_model: Path, flagged: list[dict], trained: set[str]) -> dict:
        """Failure rates on the flagged prompts (when asked, production offline, the new model; and the new model on
        those whose answer it was trained on, not held for validation) and on the held-out items (production, the new
        model), and whether they meet the goals."""
        old = wrong_answers(old_model, [*flagged, *self.held_out], self.cfg)
        new = wrong_answers(new_model, [*flagged, *self.held_out], self.cfg)
        collected = {
            "before": rates(flagged, {i["id"] for i in flagged}),  # flagged: wrong when asked
            "before_offline": rates(flagged, old),
            "after": rates(flagged, new),
            "after_trained": rates([i for i in flagged if _prompt(i) in trained], new),
        }
        held = {"before": rates(self.held_out, old), "after": rates(self.held_out, new)}
        collected["change"], held["change"] = change(collected["before"], collected["after"]), \
            change(held["before"], held["after"])
        held["tolerance"] = tolerance = self.cfg.deploy.tolerance.get("default", 0.0)
        goal = {
            "collected_failure_halved": None if collected["after"]["failure_rate"] is None
            else collected["after"]["failure_rate"] <= collected["before"]["failure_rate"] / 2,
            "held_out_within_tolerance": None if held["change"] is None else held["change"] <= tolerance,
        }
        return {"collected": collected, "held_out": held, "goal": goal}


def _prompt(item: dict) -> str:
    return normalize_prompt(str(item["messages"][-1].get("content") or ""))


def trained_prompts(labels: Path) -> set[str]:
    """The prompts of the labeling-queue answers in an ingest_labels artifact's train split."""
    rows = read_jsonl(labels / "conversations_train.jsonl")
    return {normalize_prompt(str(m["content"])) for r in rows if (r.get("meta") or {}).get("source") == "labeling_queue"
            for m in r["messages"] if m.get("role") == "user"}


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _manifest(path: str | Path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def _built_since(path: str | Path, start: float) -> bool:
    from datetime import datetime

    return datetime.fromisoformat(_manifest(path)["created"]).timestamp() >= int(start)


def round_table(row: dict):
    """The round's headline: failure rates before and after on the collected set and the held-out items."""
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    goal = row["goal"]
    table = Table(title=f"round {row['round']}: {row['deploy']['verdict']}")
    for col in ("set", "items", "failure before", "failure after (new model)", "change", "goal"):
        table.add_column(col)
    c, h = row["collected"], row["held_out"]
    table.add_row("collected (flagged prompts)", str(c["after"]["items"]), pct(c["before"]["failure_rate"]),
                  pct(c["after"]["failure_rate"]), pct(c["change"]),
                  {True: "[green]halved", False: "[red]not halved", None: "-"}[goal["collected_failure_halved"]])
    table.add_row("  production asked offline", str(c["before_offline"]["items"]),
                  pct(c["before_offline"]["failure_rate"]), "", "", "")
    table.add_row("  answers in the train split", str(c["after_trained"]["items"]), "",
                  pct(c["after_trained"]["failure_rate"]), "", "")
    table.add_row("held-out items", str(h["after"]["items"]), pct(h["before"]["failure_rate"]),
                  pct(h["after"]["failure_rate"]), pct(h["change"]),
                  {True: f"[green]within {h['tolerance']}", False: f"[red]worse than {h['tolerance']}",
                   None: "-"}[goal["held_out_within_tolerance"]])
    for skill, after in h["after"]["per_skill"].items():
        b = h["before"]["per_skill"].get(skill, {})
        table.add_row(f"  {skill}", str(after["items"]), pct(b.get("failure_rate")), pct(after["failure_rate"]),
                      "", "")
    return table
