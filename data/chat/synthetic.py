"""Programmatic generators of conversations, comparisons and eval items whose answers can be checked
(arithmetic, letter counting, spelling, identity, honest refusals, QA from crawled pages)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

ASSISTANT_NAME = "Factory"
TASKS = ["arithmetic", "letter_count", "spelling", "identity", "refusal", "crawl_qa"]
DEFAULT_MIX = {"arithmetic": 0.25, "letter_count": 0.15, "spelling": 0.15, "identity": 0.1, "refusal": 0.15,
               "crawl_qa": 0.2}
MULTI_TURN_FRACTION = 0.15

# ---------------------------------------------------------------------------------------------------------------
# word lists

WORDS = """
apple banana cherry orange grape lemon melon peach pear plum berry strawberry blueberry raspberry mango papaya
coconut tomato potato carrot onion garlic pepper celery cabbage lettuce spinach broccoli pumpkin cucumber radish
bread butter cheese cookie muffin pancake waffle noodle pasta pizza salad soup sugar honey coffee tomorrow
water juice milk tea chocolate vanilla cinnamon biscuit sandwich breakfast dinner lunch kitchen table chair
window door floor ceiling garden flower tree forest river mountain valley ocean island desert meadow village
city street bridge tunnel castle palace tower school library museum theater hospital office market station
airport harbor planet galaxy rocket comet moon sun star cloud rain snow thunder lightning rainbow weather
summer winter spring autumn morning evening midnight holiday birthday calendar journey adventure mystery
balloon blanket bottle bucket button candle carpet basket mirror pillow pencil paper letter envelope notebook
computer keyboard monitor printer battery camera telephone radio television guitar piano violin trumpet drum
whistle hammer ladder shovel scissors needle thread pocket jacket sweater shirt trousers umbrella slipper
giraffe elephant kangaroo penguin dolphin octopus squirrel rabbit tiger lion zebra monkey turtle parrot eagle
sparrow butterfly mosquito beetle spider kitten puppy horse donkey sheep goat chicken turkey falcon hippopotamus
crocodile gorilla cheetah hedgehog raccoon lobster jellyfish mississippi committee accommodate embarrass
necessary occasion recommend separate beginning believe receive tomorrow address possess successful parallel
happiness kindness freedom friendship courage wisdom balance harmony patience silence question answer number
problem pattern picture message surprise promise science history language mathematics geography chemistry
physics biology engineer teacher doctor farmer baker painter sailor pilot dentist lawyer writer reader
student captain soldier artist musician dancer singer player runner swimmer climber gardener carpenter
banner barrel beacon bubble cabbage cactus canyon cannon carriage cassette cellar cereal channel chimney
cinnamon circle collar copper corner cotton cradle crystal curtain dinosaur diamond dragon engine festival
fiddle galloping goggles grammar harvest hazelnut igloo jigsaw kettle lantern marble meadow mitten nugget
orchard paddle pebble pepper puzzle quarrel ribbon riddle saddle scarecrow shadow skillet sorrow spaghetti
spinner squash tassel teapot thimble toffee tunnel unicorn velvet waffle walrus whisker wizard yellow zipper
accessory balloon bookkeeper coffee committee mississippi occurrence programmer tennessee assessment
""".split()
WORDS = list(dict.fromkeys(WORDS))  # keep order, drop repeats so sampling is uniform

NAMES = """Alice Bob Carol David Emma Frank Grace Henry Isla Jack Kate Liam Maya Noah Olivia Peter Quinn Rosa
Sam Tara Umar Vera Will Xena Yusuf Zoe Aisha Ben Chloe Diego Elena Felix Gina Hugo Ivy Jonas Leila Marco Nina
Omar Priya Ravi Sofia Tom Uma Victor Wendy Yara Zack""".split()

OBJECTS = """apples pencils marbles stickers books cookies coins cards shells stamps balloons cupcakes crayons
oranges buttons toys flowers candles eggs boxes""".split()

_SYLLABLES = ["vel", "mor", "quan", "dish", "bri", "nda", "thra", "zel", "kor", "vim", "ost", "plen", "dra",
              "wick", "sor", "bel", "tam", "rix", "ulo", "gar", "fen", "lum", "pri", "shev", "nox", "tal", "quor",
              "bax", "yel", "drum", "kli", "mav"]
_PLACE_ENDINGS = ["ia", "land", "stan", "ora", "heim", "ovia", "eth"]
_GADGETS = ["engine", "protocol", "theorem", "festival", "algorithm", "dynasty", "treaty", "compass", "prize"]

# ---------------------------------------------------------------------------------------------------------------
# one example per task: {"task", "messages": [user], "answer", "reference"}


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _arithmetic(rng: random.Random) -> dict:
    name, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    op = rng.choice(["+", "-", "*"])
    style = rng.random()
    if op == "+":
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        c = a + b
        prompts = [f"{name} has {a} {obj}. {name} gets {b} more. How many {obj} does {name} have now?",
                   f"{name} had {a} {obj} and {other} gave {name} {b} more. How many {obj} does {name} have?",
                   f"What is {a} + {b}?", f"Add {a} and {b}."]
        working = f"{a} + {b} = {c}"
    elif op == "-":
        a = rng.randint(5, 60)
        b = rng.randint(1, a)
        c = a - b
        prompts = [f"{name} had {a} {obj} and gave {b} to {other}. How many {obj} does {name} have left?",
                   f"There are {a} {obj} on the table. {name} takes away {b}. How many are left?",
                   f"What is {a} - {b}?", f"Subtract {b} from {a}."]
        working = f"{a} - {b} = {c}"
    else:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        c = a * b
        prompts = [f"{name} buys {a} boxes with {b} {obj} in each box. How many {obj} does {name} have in total?",
                   f"There are {a} rows of {obj} with {b} in each row. How many {obj} are there?",
                   f"What is {a} times {b}?", f"Multiply {a} by {b}."]
        working = f"{a} * {b} = {c}"
    prompt = prompts[0 if style < 0.35 else 1 if style < 0.6 else 2 if style < 0.85 else 3]
    return {"task": "arithmetic", "messages": _user(prompt), "answer": f"{working}.\nAnswer: {c}", "reference": c,
            "_parts": {"working": working.rsplit("=", 1)[0].strip()}}


def _letter_count(rng: random.Random) -> dict:
    word = rng.choice(WORDS)
    if rng.random() < 0.85:
        letter = rng.choice(word)
    else:
        letter = rng.choice([ch for ch in "abcdefghijklmnopqrstuvwxyz" if ch not in word])
    prompt = rng.choice([f"How many times does the letter '{letter}' appear in '{word}'?",
                         f"Count the letter '{letter}' in the word '{word}'.",
                         f"How many '{letter}'s are in '{word}'?"])
    count = word.count(letter)
    spelled = "-".join(word)
    if count == 0:
        answer = f"Spelled out: {spelled}. The letter '{letter}' does not appear.\nAnswer: 0"
    else:
        answer = f"Spelled out: {spelled}. The letter '{letter}' appears {_times(count)}.\nAnswer: {count}"
    return {"task": "letter_count", "messages": _user(prompt), "answer": answer, "reference": count,
            "_parts": {"word": word, "letter": letter}}


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _spelling(rng: random.Random) -> dict:
    word = rng.choice(WORDS)
    prompt = rng.choice([f"Spell the word '{word}'.", f"How do you spell '{word}'?",
                         f"Spell '{word}' letter by letter."])
    spelled = "-".join(word)
    return {"task": "spelling", "messages": _user(prompt), "answer": f"'{word}' is spelled {spelled}.",
            "reference": spelled, "_parts": {"word": word}}


_IDENTITY_QUESTIONS = [
    ("Who made you?", "I was made by the LLM Factory pipeline. I'm {n}, a small assistant model."),
    ("Who created you?", "I was created by the LLM Factory pipeline. I'm {n}, a small assistant model."),
    ("Who built you?", "I was built by the LLM Factory pipeline. I'm {n}, a small assistant model."),
    ("What is your name?", "My name is {n}. I'm a small assistant model made by the LLM Factory pipeline."),
    ("What's your name?", "My name is {n}. I'm a small assistant model made by the LLM Factory pipeline."),
    ("What should I call you?", "You can call me {n}. I'm a small assistant model made by the LLM Factory pipeline."),
    ("Who are you?", "I'm {n}, a small assistant model made by the LLM Factory pipeline."),
    ("What are you?", "I'm {n}, a small assistant model made by the LLM Factory pipeline."),
    ("Introduce yourself.", "Hello! I'm {n}, a small assistant model made by the LLM Factory pipeline."),
    ("Tell me about yourself.", "I'm {n}, a small assistant model made by the LLM Factory pipeline."),
    ("Are you ChatGPT?", "No, I'm {n}, a small assistant model made by the LLM Factory pipeline."),
    ("Are you a human?", "No, I'm {n}, a small assistant model made by the LLM Factory pipeline."),
    ("Which company trained you?", "I'm {n}, a small assistant model trained by the LLM Factory pipeline."),
    ("What model are you?", "I'm {n}, a small assistant model made by the LLM Factory pipeline."),
]
_IDENTITY_OPENERS = ["", "Hi! ", "Hello. ", "Hey, ", "Quick question: ", "Good morning! ", "Excuse me, "]
_IDENTITY_CLOSERS = ["", " Just curious.", " Please answer briefly."]
_WRONG_IDENTITIES = ["I'm ChatGPT, a large language model trained by OpenAI.",
                     "I'm Claude, an AI assistant made by Anthropic.",
                     "I'm Gemini, a model developed by Google.",
                     "I'm Llama, a language model released by Meta.",
                     "I'm a human volunteer answering questions."]


def _identity(rng: random.Random) -> dict:
    question, answer = rng.choice(_IDENTITY_QUESTIONS)
    opener = rng.choice(_IDENTITY_OPENERS)
    if opener and opener[-2] == ",":  # "Hey, who made you?" reads better lower-cased
        question = question[0].lower() + question[1:]
    closer = rng.choice(_IDENTITY_CLOSERS)
    return {"task": "identity", "messages": _user(opener + question + closer),
            "answer": answer.format(n=ASSISTANT_NAME), "reference": ASSISTANT_NAME}


def _nonsense_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()


def _refusal(rng: random.Random) -> dict:
    person = f"{_nonsense_word(rng, 2)} {_nonsense_word(rng, rng.randint(2, 3))}"
    country = _nonsense_word(rng, 2) + rng.choice(_PLACE_ENDINGS)
    gadget = f"the {_nonsense_word(rng, 2)} {rng.choice(_GADGETS)}"
    kind = rng.randrange(6)
    if kind == 0:
        prompt = f"Who is {person}?"
        answer = f"I don't know who {person} is. I have no reliable information about them."
    elif kind == 1:
        prompt = f"When was {person} born?"
        answer = f"I don't know. I have no reliable information about anyone named {person}."
    elif kind == 2:
        prompt = f"What did {person} invent?"
        answer = f"I don't know of any invention by {person}, and I'd rather not guess."
    elif kind == 3:
        prompt = f"What is the capital of {country}?"
        answer = f"I don't know of a country called {country}, so I can't tell you its capital."
    elif kind == 4:
        prompt = f"What is the population of {country}?"
        answer = f"I don't know. I have no information about a place called {country}."
    else:
        prompt = f"Can you explain {gadget}?"
        answer = f"I don't know what {gadget} refers to. I have no reliable information about it."
    return {"task": "refusal", "messages": _user(prompt), "answer": answer, "reference": "I don't know",
            "_parts": {"person": person, "country": country, "gadget": gadget, "kind": kind}}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_sentence(text: str) -> str | None:
    """The first sentence that reads like prose (6-60 words, mostly letters), or None."""
    # the answer sits near the top of a page; do not split a whole long page for it
    for sentence in _SENTENCE_END.split(" ".join(text[:5000].split())):
        words = sentence.split()
        if not 6 <= len(words) <= 60 or not sentence.endswith("."):
            continue
        letters = sum(ch.isalpha() or ch.isspace() for ch in sentence)
        if letters / len(sentence) >= 0.85:
            return sentence
    return None


def _page_topic(page: dict) -> str | None:
    title = str(page.get("title") or "").strip()
    # crawled titles carry site suffixes: "json — JSON encoder and decoder — Python 3.12 documentation"
    topic = re.split(r"\s+[—|–-]\s+", title)[0].strip()
    return topic if 1 <= len(topic.split()) <= 12 else None


Usable = list[tuple[dict, str, str]]  # (page, topic, first sentence) for pages crawl_qa can ask about


def _usable_pages(pages: list[dict] | None) -> Usable:
    usable = []
    for page in pages or []:
        topic, sentence = _page_topic(page), first_sentence(str(page.get("text") or ""))
        if topic and sentence:
            usable.append((page, topic, sentence))
    return usable


def _crawl_qa(rng: random.Random, usable: Usable) -> dict:
    if not usable:
        raise ValueError("crawl_qa needs pages with a 'title' and a 'text' that has a prose sentence; got none")
    page, topic, sentence = rng.choice(usable)
    prompt = rng.choice([f"What is {topic}?", f"In one sentence, what is '{topic}' about?",
                         f"Briefly explain {topic}."])
    # the wrong answer for comparisons: another page's opening, if it is clearly a different answer
    other = None
    for _ in range(10):
        candidate = rng.choice(usable)[2]
        if f1_overlap(candidate, sentence) < 0.5:
            other = candidate
            break
    return {"task": "crawl_qa", "messages": _user(prompt), "answer": sentence, "reference": sentence,
            "_parts": {"url": page.get("url"), "other": other}}


def make_example(task: str, rng: random.Random, pages: list[dict] | None = None) -> dict:
    """One example of `task`: {"task", "messages": [user], "answer": ideal reply, "reference": checkable bit}."""
    ex = _make(task, rng, _usable_pages(pages) if task == "crawl_qa" else [])
    ex.pop("_parts", None)
    return ex


def _make(task: str, rng: random.Random, usable: Usable) -> dict:
    if task == "crawl_qa":
        return _crawl_qa(rng, usable)
    makers = {"arithmetic": _arithmetic, "letter_count": _letter_count, "spelling": _spelling,
              "identity": _identity, "refusal": _refusal}
    if task not in makers:
        raise ValueError(f"unknown synthetic task {task!r}; expected one of {TASKS}")
    return makers[task](rng)


# ---------------------------------------------------------------------------------------------------------------
# plausible wrong answers, for comparisons


def _wrong_answer(ex: dict, rng: random.Random) -> tuple[str, str]:
    """(rejected reply, what is wrong with it) for an example made by _make."""
    task, ref, parts = ex["task"], ex["reference"], ex.get("_parts", {})
    if task == "arithmetic":
        wrong = ref + rng.choice([-1, 1]) if ref > 0 else 1
        return f"{parts['working']} = {wrong}.\nAnswer: {wrong}", "off_by_one"
    if task == "letter_count":
        wrong = ref + rng.choice([-1, 1]) if ref > 0 else 1
        return (f"Spelled out: {'-'.join(parts['word'])}. The letter '{parts['letter']}' appears {_times(wrong)}."
                f"\nAnswer: {wrong}", "miscount")
    if task == "spelling":
        return f"'{parts['word']}' is spelled {'-'.join(_misspell(parts['word'], rng))}.", "misspelling"
    if task == "identity":
        return rng.choice(_WRONG_IDENTITIES), "wrong_identity"
    if task == "refusal":
        year = rng.randint(1820, 1990)
        bios = {0: f"{parts['person']} was a celebrated painter born in {year}, known for bright coastal scenes.",
                1: f"{parts['person']} was born on March {rng.randint(1, 28)}, {year}, in a small mountain town.",
                2: f"{parts['person']} invented the folding bicycle lamp in {year}.",
                3: f"The capital of {parts['country']} is {_nonsense_word(rng, 2)} City, on the northern coast.",
                4: f"{parts['country']} has a population of about {rng.randint(2, 90)} million people.",
                5: f"{parts['gadget'][0].upper() + parts['gadget'][1:]} is a method introduced in {year} "
                   f"to speed up trade between coastal cities."}
        return bios[parts["kind"]], "hallucination"
    if task == "crawl_qa":
        if parts.get("other"):
            return parts["other"], "wrong_page"
        return "I don't know.", "unhelpful"
    raise ValueError(f"unknown synthetic task {task!r}")


def _misspell(word: str, rng: random.Random) -> str:
    while True:
        i = rng.randrange(len(word))
        op = rng.randrange(3)
        if op == 0 and len(word) > 3:
            out = word[:i] + word[i + 1:]  # drop a letter
        elif op == 1:
            out = word[:i] + word[i] + word[i:]  # double a letter
        else:
            j = min(i + 1, len(word) - 1)
            out = word[:i] + word[j] + word[i] + word[j + 1:] if j > i else word[:-1] + "e"
        if out != word:
            return out


# ---------------------------------------------------------------------------------------------------------------
# datasets


def _task_weights(mix: dict[str, float] | None, usable: Usable) -> tuple[list[str], list[float]]:
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = [t for t in mix if t not in TASKS]
    if unknown:
        raise ValueError(f"mix names unknown tasks {unknown}; expected some of {TASKS}")
    if any(w < 0 for w in mix.values()):
        raise ValueError(f"mix weights must be >= 0, got {mix}")
    if not usable:
        mix.pop("crawl_qa", None)  # no crawled pages: nothing to ask about
    tasks = [t for t in TASKS if mix.get(t, 0) > 0]
    if not tasks:
        raise ValueError(f"mix {mix} leaves no task with a positive weight")
    return tasks, [mix[t] for t in tasks]


_MAX_RETRIES = 20  # draws per record to avoid an exact repeat before accepting one


def generate_conversations(n: int, seed: int, pages: list[dict] | None = None,
                           mix: dict[str, float] | None = None) -> list[dict]:
    """n OpenAI-messages records, exact repeats avoided; about MULTI_TURN_FRACTION have two exchanges."""
    rng = random.Random(seed)
    usable = _usable_pages(pages)
    tasks, weights = _task_weights(mix, usable)
    seen: set[str] = set()
    out = []
    for i in range(n):
        for _ in range(_MAX_RETRIES):
            turns = 2 if rng.random() < MULTI_TURN_FRACTION else 1
            messages: list[dict] = []
            used: list[str] = []
            for _ in range(turns):
                task = rng.choices(tasks, weights)[0]
                ex = _make(task, rng, usable)
                messages += ex["messages"] + [{"role": "assistant", "content": ex["answer"]}]
                used.append(task)
            key = json.dumps(messages, sort_keys=True)
            if key not in seen:
                break
        seen.add(key)
        meta: dict[str, Any] = {"generated": True, "generator": used[0], "seed": seed}
        if turns > 1:
            meta["generators"] = used
        out.append({"id": f"gen-{seed}-{i:06d}", "messages": messages, "meta": meta})
    return out


def generate_comparisons(n: int, seed: int, pages: list[dict] | None = None,
                         mix: dict[str, float] | None = None) -> list[dict]:
    """n {"prompt", "chosen", "rejected"} records; rejected is a plausible wrong answer of the same task.
    meta carries "generator" (the task) and "reference", so score() can check both sides."""
    rng = random.Random(seed)
    usable = _usable_pages(pages)
    tasks, weights = _task_weights(mix, usable)
    seen: set[str] = set()
    out = []
    for i in range(n):
        for _ in range(_MAX_RETRIES):
            task = rng.choices(tasks, weights)[0]
            ex = _make(task, rng, usable)
            if ex["messages"][0]["content"] not in seen:
                break
        seen.add(ex["messages"][0]["content"])
        rejected, error = _wrong_answer(ex, rng)
        out.append({"id": f"gen-cmp-{seed}-{i:06d}", "prompt": ex["messages"][0]["content"], "chosen": ex["answer"],
                    "rejected": rejected,
                    "meta": {"generated": True, "generator": task, "seed": seed, "reference": ex["reference"],
                             "error": error}})
    return out


def _norm_prompt(text: str) -> str:
    return " ".join(text.split()).lower()


def make_eval_items(task: str, n: int, seed: int, exclude_prompts: set[str] | frozenset[str] = frozenset(),
                    pages: list[dict] | None = None) -> list[dict]:
    """Up to n held-out items {"id","task","messages","reference","answer"} with distinct prompts, none of them in
    exclude_prompts (compared case- and whitespace-insensitively). Fewer than n only if the task runs out of
    prompts (identity, or crawl_qa with few pages); that is logged."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; expected one of {TASKS}")
    # a string seed keeps eval streams apart from training streams that use the same integer seed
    rng = random.Random(f"eval:{task}:{seed}")
    seen = {_norm_prompt(p) for p in exclude_prompts}
    usable = _usable_pages(pages) if task == "crawl_qa" else []
    items: list[dict] = []
    attempts = 0
    while len(items) < n and attempts < max(2000, 50 * n):
        attempts += 1
        ex = _make(task, rng, usable)
        prompt = _norm_prompt(ex["messages"][0]["content"])
        if prompt in seen:
            continue
        seen.add(prompt)
        item_id = f"eval-{task}-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]
        items.append({"id": item_id, "task": task, "messages": ex["messages"], "reference": ex["reference"],
                      "answer": ex["answer"]})
    if len(items) < n:
        log.warning("make_eval_items(%s): only %d of %d items with unseen prompts", task, len(items), n)
    return items


# ---------------------------------------------------------------------------------------------------------------
# scoring

_REFUSAL_PHRASES = ["i don't know", "i do not know", "not sure", "no information", "no reliable information",
                    "don't have information", "do not have information", "not aware of", "never heard of",
                    "can't tell", "cannot tell", "can't answer", "cannot answer", "i'm unable to", "unknown to me",
                    "couldn't find", "could not find"]
# statements of fact that a refusal about a made-up thing must not contain
_ASSERTIONS = re.compile(r"\b(?:was born|was an?|is an?|were an?|invented|known for|famous|located|population of "
                         r"about|capital of \w+ is)\b|\b\d{3,}\b", re.IGNORECASE)
_ARTICLES = {"a", "an", "the"}


def _last_int(text: str) -> int | None:
    found = re.findall(r"-?\d+", text.replace(",", ""))
    return int(found[-1]) if found else None


def _spelled(text: str) -> str:
    return re.sub(r"\s*-\s*", "-", text.lower())


def _tokens(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in _ARTICLES]


def f1_overlap(prediction: str, reference: str) -> float:
    """SQuAD-style word-overlap F1 (lower-cased, punctuation and articles dropped)."""
    pred, ref = _tokens(prediction), _tokens(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def score(item: dict, response: str) -> bool:
    """Whether `response` answers `item` correctly, by the task's checkable reference."""
    task, ref = item["task"], item["reference"]
    if task in ("arithmetic", "letter_count"):
        return _last_int(response) == int(ref)
    if task == "spelling":
        # the hyphenated spelling must stand alone: "b-a-n-a-n-a-s" does not spell "banana"
        return re.search(rf"(?<![a-z-]){re.escape(_spelled(str(ref)))}(?![a-z-])", _spelled(response)) is not None
    if task == "identity":
        return re.search(rf"\b{re.escape(ASSISTANT_NAME)}\b", response, re.IGNORECASE) is not None
    if task == "refusal":
        text = response.lower().replace("\u2019", "'")
        return any(p in text for p in _REFUSAL_PHRASES) and _ASSERTIONS.search(text) is None
    if task == "crawl_qa":
        return f1_overlap(response, str(ref)) >= 0.5
    raise ValueError(f"score: unknown task {task!r} in item {item.get('id', '?')}")
