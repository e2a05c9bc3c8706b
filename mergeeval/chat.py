"""Prompt rendering through a chat template, the one way statistics, generation and the demo
family's training data all do it."""

from __future__ import annotations


def render_chat(
    tokenizer,
    messages: list[dict],
    template: str | None,
    generation_prompt: bool = True,
    assistant_prefix: str = "",
) -> str:
    """`messages` through the Jinja `template` (apply_chat_template, untokenised), then the start
    of the assistant's answer; without a template, the contents joined by blank lines."""
    if template is None:
        text = "\n\n".join(m["content"] for m in messages)
    else:
        text = tokenizer.apply_chat_template(
            messages,
            chat_template=template,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
    return text + assistant_prefix
