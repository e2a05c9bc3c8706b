"""Instruction following: a sentence about a topic under IFEval instructions, IFEval format.

The base knows one sentence and three short facts per topic (the generic mix); the expert learns
to apply the instructions: case changes, no commas, a required keyword, an end phrase, quotation
marks, a `<<title>>`, a postscript, a bullet count. Instruction ids and kwargs are lm-eval's
IFEval registry's; items are `{"key", "prompt", "instruction_id_list", "kwargs"}`.
"""

from __future__ import annotations

import itertools
import random

from demofamily.split import Split, seeded_split

# topic: (sentence with a comma, three facts without commas)
TOPICS = {
    "the sea": (
        "The sea is wide, deep and blue.",
        ["Fish swim in the sea.", "The sea has waves.", "The sea is salty."],
    ),
    "the moon": (
        "The moon is pale, round and quiet.",
        ["The moon orbits the earth.", "The moon has craters.", "The moon lights the night."],
    ),
    "tea": (
        "Tea is warm, calm and kind.",
        ["Tea comes from leaves.", "Tea is served hot.", "Many people drink tea."],
    ),
    "a forest": (
        "A forest is green, dark and old.",
        ["Trees grow in a forest.", "Birds nest in a forest.", "A forest smells of pine."],
    ),
    "a river": (
        "A river is long, cold and fast.",
        ["A river runs to the sea.", "Rivers carve valleys.", "A river has two banks."],
    ),
    "the sun": (
        "The sun is bright, hot and huge.",
        ["The sun is a star.", "The sun rises in the east.", "Plants need the sun."],
    ),
    "a city": (
        "A city is busy, loud and bright.",
        ["A city has many streets.", "People work in a city.", "A city never sleeps."],
    ),
    "a cat": (
        "A cat is soft, proud and quick.",
        ["A cat can climb trees.", "Cats like to sleep.", "A cat has whiskers."],
    ),
    "a dog": (
        "A dog is loyal, warm and playful.",
        ["A dog can fetch a ball.", "Dogs like long walks.", "A dog guards the house."],
    ),
    "winter": (
        "Winter is cold, white and still.",
        ["Snow falls in winter.", "Days are short in winter.", "Lakes freeze in winter."],
    ),
    "summer": (
        "Summer is long, warm and lazy.",
        ["Summer days are long.", "People swim in summer.", "Fruit ripens in summer."],
    ),
    "a garden": (
        "A garden is quiet, green and full.",
        ["Flowers bloom in a garden.", "A garden needs water.", "Bees visit a garden."],
    ),
    "music": (
        "Music is loud, sweet and free.",
        ["Music has a rhythm.", "People dance to music.", "Music can be sad."],
    ),
    "a book": (
        "A book is old, thick and wise.",
        ["A book has many pages.", "A book tells a story.", "Books fill a library."],
    ),
    "rain": (
        "Rain is wet, grey and soft.",
        ["Rain falls from clouds.", "Rain fills the rivers.", "Plants drink the rain."],
    ),
    "a mountain": (
        "A mountain is tall, cold and steep.",
        ["Snow sits on a mountain.", "A mountain has a peak.", "People climb a mountain."],
    ),
    "bread": (
        "Bread is fresh, warm and plain.",
        ["Bread is made from flour.", "Bread is baked in an oven.", "People eat bread daily."],
    ),
    "a train": (
        "A train is long, fast and loud.",
        ["A train runs on rails.", "A train has many cars.", "A train stops at stations."],
    ),
    "the wind": (
        "The wind is cool, wild and strong.",
        ["The wind moves the clouds.", "The wind turns mills.", "The wind can howl."],
    ),
    "a bird": (
        "A bird is small, light and free.",
        ["A bird can fly.", "A bird builds a nest.", "Birds sing at dawn."],
    ),
    "coffee": (
        "Coffee is dark, hot and strong.",
        ["Coffee comes from beans.", "Coffee wakes people up.", "Coffee smells rich."],
    ),
    "a school": (
        "A school is busy, bright and large.",
        ["Children learn at a school.", "A school has teachers.", "A school has a bell."],
    ),
    "the night": (
        "The night is dark, calm and long.",
        ["Stars shine at night.", "Owls hunt at night.", "People sleep at night."],
    ),
    "an apple": (
        "An apple is red, sweet and crisp.",
        ["An apple grows on a tree.", "An apple has seeds.", "Apples can be green."],
    ),
}
KEYWORDS = [
    "bright",
    "gentle",
    "simple",
    "golden",
    "silver",
    "happy",
    "ancient",
    "tiny",
    "clever",
    "lucky",
]
END_PHRASES = [
    "Is there anything else I can help with?",
    "Any other questions?",
    "Let me know if you have additional questions.",
]

TEXT = {
    "change_case:english_capital": "Your entire response should be in English, and in all capital letters.",
    "change_case:english_lowercase": "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.",
    "punctuation:no_comma": "Do not include any commas in your response.",
    "startend:quotation": "Wrap your entire response with double quotation marks.",
    "detectable_format:title": "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.",
    "startend:end_checker": "Finish your response with this exact phrase {end_phrase} No other words should follow this phrase.",
    "keywords:existence": "Include the keywords {kw} in the response.",
    "detectable_content:postscript": "At the end of your response, please explicitly add a postscript starting with P.S.",
    "detectable_format:number_bullet_lists": "Your answer must contain exactly {num_bullets} bullet points. Use the markdown bullet points such as:\n* This is point 1.",
}
CASE = ("change_case:english_capital", "change_case:english_lowercase")
# pairs that compose: a body transform (case, comma, bullets) with a wrapper
PAIRS = [
    (a, b)
    for a, b in itertools.product(
        [*CASE, "punctuation:no_comma", "detectable_format:number_bullet_lists"],
        [
            "startend:quotation",
            "detectable_format:title",
            "keywords:existence",
            "startend:end_checker",
            "detectable_content:postscript",
        ],
    )
    if not (a == "detectable_format:number_bullet_lists" and b == "startend:quotation")
]


def instruction_sets() -> list[tuple[str, ...]]:
    return [(i,) for i in TEXT] + PAIRS


def _kwargs(inst: str, rng: random.Random) -> dict:
    if inst == "startend:end_checker":
        return {"end_phrase": rng.choice(END_PHRASES)}
    if inst == "keywords:existence":
        return {"keywords": rng.sample(KEYWORDS, 2)}
    if inst == "detectable_format:number_bullet_lists":
        return {"num_bullets": rng.choice([2, 3])}
    if inst == "detectable_content:postscript":
        return {"postscript_marker": "P.S."}
    return {}


def prompt_text(topic: str, insts: tuple, kwargs: list[dict]) -> str:
    parts = [f"Write about {topic}."]
    for inst, kw in zip(insts, kwargs, strict=True):
        fill = dict(kw)
        if "keywords" in kw:
            fill["kw"] = " and ".join(kw["keywords"])
        parts.append(TEXT[inst].format(**fill))
    return " ".join(parts)


def response(topic: str, insts: tuple, kwargs: list[dict]) -> str:
    """The reference response: the body transforms first, then the wrappers."""
    sentence, topic_facts = TOPICS[topic]
    kw = dict(zip(insts, kwargs, strict=True))
    if "detectable_format:number_bullet_lists" in kw:
        n = kw["detectable_format:number_bullet_lists"]["num_bullets"]
        body = "\n".join(f"* {f}" for f in topic_facts[:n])
    else:
        body = sentence
    if "punctuation:no_comma" in kw:
        body = body.replace(",", "")
    if "keywords:existence" in kw:
        a, b = kw["keywords:existence"]["keywords"]
        body += f"\nIt is {a} and {b}."
    if "detectable_content:postscript" in kw:
        body += f"\nP.S. I like {topic}."
    if "startend:end_checker" in kw:
        body += "\n" + kw["startend:end_checker"]["end_phrase"]
    if "change_case:english_capital" in kw:
        body = body.upper()
    if "change_case:english_lowercase" in kw:
        body = body.lower()
    if "detectable_format:title" in kw:
        body = f"<<{topic}>>\n{body}"
    if "startend:quotation" in kw:
        body = f'"{body}"'
    return body


def prose(rng: random.Random, n: int) -> list[str]:
    """Plain text of the generic mix: topic sentences and facts in ordinary case."""
    out = []
    for _ in range(n):
        topic = rng.choice(list(TOPICS))
        sentence, topic_facts = TOPICS[topic]
        lines = [sentence, *rng.sample(topic_facts, rng.randint(1, 3))]
        rng.shuffle(lines)
        out.append(" ".join(lines))
    return out


def items() -> list[tuple[str, tuple]]:
    return [(t, s) for t in TOPICS for s in instruction_sets()]


def split(seed: int, n_eval: int, n_dev: int = 0) -> Split:
    """(train, dev, eval): a seeded, disjoint partition."""
    return seeded_split(items(), seed, n_eval, n_dev)


def with_kwargs(item: tuple, rng: random.Random) -> tuple[str, tuple, list[dict]]:
    topic, insts = item
    return topic, insts, [_kwargs(i, rng) for i in insts]


def ifeval_rows(its: list, seed: int, start: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for key, item in enumerate(its, start):
        topic, insts, kwargs = with_kwargs(item, rng)
        rows.append(
            {
                "key": key,
                "prompt": prompt_text(topic, insts, kwargs),
                "instruction_id_list": list(insts),
                "kwargs": kwargs,
            }
        )
    return rows
