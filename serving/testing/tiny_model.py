"""Build a tiny random-weight Llama model and a locally trained BPE tokenizer, saved like any hub model.

Tests and benchmarks use it so that nothing is ever downloaded: the result loads through the same
`from_pretrained` path as a real model. `python -m serving.testing.tiny_model OUT_DIR` builds one by hand.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
_WORDS = (
    "the a an of to and in is was for on that with as by at from it this be are or have not but what all were "
    "when we there can more if no out so said up its about into than them only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under never day same "
    "another know while last might us great old year off come since against go came right used take three model "
    "learning deep neural network data token server request stream batch engine python coffee sun water bicycle "
    "café naïve résumé 日本 🙂 über straße"
).split()


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the model to build; the defaults make a ~0.1M-parameter model that loads in well under a second.

    `weight_std` redraws every matrix with a wide spread: with transformers' default initialisation a tiny model
    just repeats its last token, which would make any comparison of greedy outputs pass trivially.
    """

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    chat_template: bool | str = True  # True: the built-in template; a string: that template
    added_tokens: tuple[tuple[str, bool], ...] = ()  # (text, special) tokens added after training (tool markers)
    seed: int = 0
    weight_std: float = 0.25
    synthetic_words: int = 0
    """Extra made-up words in the tokenizer's training text: the word list alone gives fewer than 1,000 tokens,
    so a larger `vocab_size` (benchmarks use 8192) needs these to be reached."""


def _corpus(seed: int, lines: int = 2000, synthetic_words: int = 0) -> list[str]:
    """Random sentences over a fixed word list, with some punctuation, digits and non-ASCII text; then, when
    `synthetic_words` is set, as many sentences again over that many made-up words built from syllables."""
    rng = random.Random(seed)
    corpus = []
    for _ in range(lines):
        words = rng.choices(_WORDS, k=rng.randint(3, 14))
        corpus.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ",", ": 42.", " (1, 2, 3)."]))
    if synthetic_words:
        syllables = [c + v for c in "b c d f g h j k l m n p r s t v w z ch sh th st tr".split()
                     for v in "a e i o u ai ea ou".split()]
        made_up = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(synthetic_words)]
        corpus += [" ".join(rng.choices(made_up, k=rng.randint(3, 14))) + "." for _ in range(synthetic_words)]
    return corpus


def build_tokenizer(spec: TinyModelSpec):
    """Train a byte-level BPE tokenizer and wrap it as a fast transformers tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(spec.seed, synthetic_words=spec.synthetic_words), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=spec.max_position_embeddings,
    )
    if spec.added_tokens:
        from tokenizers import AddedToken

        fast.add_tokens([AddedToken(text, special=special, normalized=False) for text, special in spec.added_tokens])
    if spec.chat_template:
        fast.chat_template = spec.chat_template if isinstance(spec.chat_template, str) else CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Write config, random safetensors weights and the tokenizer to `out_dir`; returns the directory."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(spec.seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, spec.weight_std, generator=generator)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    """Command line: build a tiny model into a directory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--hidden-size", type=int, default=TinyModelSpec.hidden_size)
    parser.add_argument("--intermediate-size", type=int, default=TinyModelSpec.intermediate_size)
    parser.add_argument("--layers", type=int, default=TinyModelSpec.num_hidden_layers)
    parser.add_argument("--heads", type=int, default=TinyModelSpec.num_attention_heads)
    parser.add_argument("--kv-heads", type=int, default=TinyModelSpec.num_key_value_heads)
    parser.add_argument("--vocab-size", type=int, default=TinyModelSpec.vocab_size)
    parser.add_argument("--max-positions", type=int, default=TinyModelSpec.max_position_embeddings)
    parser.add_argument("--synthetic-words", type=int, default=TinyModelSpec.synthetic_words,
                        help="made-up words in the tokenizer's corpus, so that a large --vocab-size is reached")
    parser.add_argument("--no-chat-template", action="store_true")
    args = parser.parse_args()
    spec = TinyModelSpec(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_positions,
        chat_template=not args.no_chat_template,
        synthetic_words=args.synthetic_words,
    )
    print(build_tiny_model(args.out_dir, spec))


if __name__ == "__main__":
    main()
