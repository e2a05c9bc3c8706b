"""The family's tokenizer: byte-level BPE trained on the demo's own text, words as pre-tokens,
digits single, and the fixed wording of the chat templates and benchmark prompts as whole tokens.

The fixed wording (the Math template's instructions, the HumanEval and AIME prompt text, IFEval's
instruction sentences) is one token per phrase, so the tiny model trains on short sequences;
content words stay word tokens, so copying a keyword from the prompt is copying a token; every digit
is its own token, so column arithmetic sees digits. Special tokens as OLMo's: <|endoftext|> (EOS),
<|im_start|>, <|im_end|>, <|pad|>.
"""

from __future__ import annotations

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def train_tokenizer(texts: list[str], vocab_size: int, phrases: list[str]):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    from devtools.tiny_family import hf_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    tok.add_tokens([AddedToken(p, normalized=False) for p in sorted(set(phrases))])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return hf_tokenizer(tok)
