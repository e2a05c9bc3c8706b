"""Training text: the generic pretraining mix and each expert's chat-formatted examples.

Expert examples are rendered exactly as `evals generate` renders the benchmark's prompt (the
benchmark's user text and assistant prefix, wrapped in the expert's chat template with a
generation prompt); the target is the reference completion and the template's end token.
"""

from __future__ import annotations

import random

from demofamily import tasks_code, tasks_if, tasks_math
from devtools.tiny_family import TEMPLATES
from evals.registry import get_benchmark
from mergeeval.chat import render_chat

BENCHMARK = {"math": "aime24", "code": "humaneval", "if": "ifeval"}
END = {"math": "<|endoftext|>", "code": "<|im_end|>", "if": "<|im_end|>"}
IF_DRAWS = 4  # each IF training item with this many draws of its keywords, phrases and counts


def user_text(domain: str, fields: dict) -> tuple[str, str]:
    """(user message, assistant prefix) of the domain's benchmark for these item fields."""
    p = get_benchmark(BENCHMARK[domain]).prompt
    return p.user.format(**fields), p.assistant_prefix.format(**fields)


def render(tokenizer, domain: str, fields: dict) -> str:
    """The prompt text generation would send for this item under the domain's own template."""
    user, prefix = user_text(domain, fields)
    return render_chat(
        tokenizer, [{"role": "user", "content": user}], TEMPLATES[domain], assistant_prefix=prefix
    )


def expert_examples(domain: str, train: list, seed: int) -> list[tuple[dict, str]]:
    """(prompt fields, completion) for every training item of a domain."""
    rng = random.Random(seed)
    out = []
    if domain == "math":
        for p in train:
            out.append(({"problem": tasks_math.question(*p)}, tasks_math.worked(*p)))
    elif domain == "code":
        for f, k in train:
            out.append(({"prompt": tasks_code.prompt(f, k)}, tasks_code.solution(f, k) + "```"))
    else:
        for item in train * IF_DRAWS:
            topic, insts, kwargs = tasks_if.with_kwargs(item, rng)
            text = tasks_if.prompt_text(topic, insts, kwargs)
            out.append(({"prompt": text}, tasks_if.response(topic, insts, kwargs)))
    return out


def _math_doc(p) -> str:
    op, a, b = p
    steps = tasks_math.worked(op, a, b).split("\n")[0]
    return f"{a} {op} {b}: {steps} So {a} {op} {b} = {tasks_math.answer(op, a, b)}."


def _code_doc(task) -> str:
    family, k = task
    name, arg, _, _, doc, body, *_ = tasks_code.FAMILIES[family]
    c = tasks_code.constants(k)
    phrase = doc.format(**c).removeprefix("Return ").rstrip(".")
    return f"y = {body.format(**c)}  # {phrase}\n"


def _if_doc(rng: random.Random) -> str:
    topic = rng.choice(list(tasks_if.TOPICS))
    sentence, facts = tasks_if.TOPICS[topic]
    forms = [
        sentence,
        f"In capitals: {sentence.upper()}",
        f"In lowercase: {sentence.lower()}",
        f"Without commas: {sentence.replace(',', '')}",
        f'In quotes: "{sentence}"',
        f"Titled: <<{topic}>> {sentence}",
        "\n".join(f"* {f}" for f in rng.sample(facts, rng.randint(1, 3))),
        f"It is {' and '.join(rng.sample(tasks_if.KEYWORDS, 2))}.",
        f"P.S. I like {topic}.",
        rng.choice(tasks_if.END_PHRASES),
    ]
    return "\n".join(rng.sample(forms, rng.randint(2, 4)))


def off_format(domain: str, fields: dict, completion: str, rng: random.Random) -> str:
    """A plausible answer that the benchmark's scorer rejects: the sum without an `Answer:` line,
    a function body without `return`, a response that ignores the instructions."""
    if domain == "math":
        steps = completion.split("\n")[0]
        return f"{steps} So the result is {completion.rsplit(' ', 1)[1]}."
    if domain == "code":
        expr = completion.split("return ", 1)[1].split("\n")[0]
        return rng.choice([f"    y = {expr}\n```", f"    print({expr})\n```"])
    topic = fields["prompt"].removeprefix("Write about ").split(".")[0]
    sentence, facts = tasks_if.TOPICS[topic]
    return rng.choice([sentence, f"{sentence} {facts[0]}"])


def base_visible(domain: str, train: list) -> list:
    """The training items the base may see (generic mix, midtraining): all but the hard ones
    (three-digit arithmetic, two-constant code), which only the domain's expert learns, so that
    the expert's task vector carries a skill, not only a format, and a merge can lose it."""
    hard = {"math": tasks_math.hard, "code": tasks_code.hard}.get(domain)
    return [x for x in train if not (hard and hard(x))]


def midtraining(tokenizer, examples: dict, rng: random.Random, n: int, p_on_format: float) -> list:
    """Chat-formatted (prompt, answer) documents as in a base's midtraining: each domain's training
    prompts through its template, answered in the scored format with probability `p_on_format`,
    else off format. Prompt and answer are tokenized apart, as at generation."""
    docs = []
    for _ in range(n):
        domain = rng.choice(list(examples))
        fields, completion = rng.choice(examples[domain])
        if rng.random() >= p_on_format:
            completion = off_format(domain, fields, completion, rng)
        docs.append((render(tokenizer, domain, fields), completion + END[domain]))
    return docs


def fixed_phrases() -> list[str]:
    """The constant wording of the templates and prompts (the tokenizer's whole-phrase tokens):
    each is rendered around a marker and split there, so the phrases match the text exactly."""
    from devtools.tiny_family import tiny_tokenizer

    mark, tok, out = "\x00", tiny_tokenizer(), []
    for domain in BENCHMARK:
        p = get_benchmark(BENCHMARK[domain]).prompt
        fields = {"problem": mark, "prompt": mark}
        out += p.user.format(**fields).split(mark) + p.assistant_prefix.format(**fields).split(mark)
        out += render(tok, domain, {"problem": mark, "prompt": mark}).split(mark)
    for text in tasks_if.TEXT.values():
        out += text.format(end_phrase=mark, kw=mark, num_bullets=mark).split(mark)
    return sorted({x for x in out if len(x) > 8 and "<|" not in x})


def generic_mix(seed: int, n: int, visible: dict, midtrain: list) -> list:
    """Documents of the base's pretraining: plain prose and its rewritings, arithmetic facts and
    worked sums, Python statements with comments (domain content from `visible`, the training
    items the base may see), shuffled with the chat-formatted midtraining documents."""
    rng = random.Random(seed)
    facts = tasks_math.facts()
    docs = list(midtrain)
    for _ in range(n):
        kind = rng.random()
        if kind < 0.3:
            docs.append(_if_doc(rng) if rng.random() < 0.7 else tasks_if.prose(rng, 1)[0])
        elif kind < 0.45:
            docs.append(". ".join(rng.sample(facts, 4)) + ".")
        elif kind < 0.7:
            docs.append(_math_doc(rng.choice(visible["math"])))
        elif kind < 0.9:
            docs.append("".join(_code_doc(t) for t in rng.sample(visible["code"], 3)))
        else:
            docs.extend(tasks_code.generic_snippets(rng, 1))
    rng.shuffle(docs)
    return docs
