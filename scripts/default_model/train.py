"""Train the tokenizer and the tiny Llama chat model shipped as the server's default model.

It learns chat conversations (through the chat template) and plain-text prompts with their completions (as
`/generate` and `/v1/completions` send a prompt: no special tokens), so a raw question gets the same answer.
Seeded and reproducible: results are bit-identical for the same seed and thread count.
With --threads 1 it takes about 24 minutes on a shared 2-core machine (the committed model: 24.0 minutes).

    python scripts/default_model/make_corpus.py
    python scripts/default_model/train.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE / "corpus.jsonl"
DEFAULT_OUTPUT = HERE.parents[1] / "serving" / "default_model"

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [BOS, EOS, UNK, PAD, *ROLE_TOKENS.values()]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
MAX_REPLY_TOKENS = 60
IGNORE = -100

SAMPLE_PROMPTS = [
    "What is deep learning?",
    "Tell me about the moon.",
    "Question: What is Python?\nAnswer:",
    "Hello",
]

SAMPLE_QUESTIONS = [
    "What is deep learning?",
    "Can you tell me what photosynthesis is?",
    "Please explain machine learning.",
    "I want to learn about bicycles.",
    "Hello",
    "Who are you?",
    "What is a florptang?",
    "Thanks!",
]


@dataclass(frozen=True)
class Example:
    """One tokenized conversation with its training labels."""

    input_ids: list[int]
    labels: list[int]


def load_corpus(path: Path) -> list[dict]:
    """Read the JSON-lines corpus: chat records ({"messages"}) and plain-text records ({"prompt", "completion"})."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def record_texts(record: dict) -> list[str]:
    """The texts of one corpus record, for the tokenizer."""
    if "messages" in record:
        return [m["content"] for m in record["messages"]]
    return [record["prompt"], record["completion"]]


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the texts and wrap it for transformers."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=1024,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def check_round_trip(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> None:
    """Fail unless every text decodes back to itself after encoding."""
    for text in texts:
        decoded = tokenizer.decode(tokenizer.encode(text, add_special_tokens=False))
        if decoded != text:
            raise ValueError(f"tokenizer does not round-trip {text!r}: got {decoded!r}")


def encode_conversation(tokenizer: PreTrainedTokenizerFast, messages: list[dict[str, str]]) -> Example:
    """Tokenize a conversation as the chat template does, labelling only assistant replies and their EOS."""
    newline = tokenizer.encode("\n", add_special_tokens=False)
    ids, labels = [tokenizer.bos_token_id], [IGNORE]
    for message in messages:
        prompt = [tokenizer.convert_tokens_to_ids(ROLE_TOKENS[message["role"]]), *newline]
        reply = [*tokenizer.encode(message["content"], add_special_tokens=False), tokenizer.eos_token_id]
        ids += prompt + reply + newline
        if message["role"] == "assistant":
            if len(reply) > MAX_REPLY_TOKENS:
                raise ValueError(f"reply too long ({len(reply)} tokens): {message['content']!r}")
            labels += [IGNORE] * len(prompt) + reply + [IGNORE] * len(newline)
        else:
            labels += [IGNORE] * (len(prompt) + len(reply) + len(newline))
    return Example(ids, labels)


def encode_plain(tokenizer: PreTrainedTokenizerFast, prompt: str, completion: str) -> Example:
    """Tokenize a plain-text prompt as the server does (no special tokens), labelling only its completion and EOS."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    reply = [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]
    if len(reply) > MAX_REPLY_TOKENS + 2:
        raise ValueError(f"completion too long ({len(reply)} tokens): {completion!r}")
    return Example(prompt_ids + reply, [IGNORE] * len(prompt_ids) + reply)


def encode_record(tokenizer: PreTrainedTokenizerFast, record: dict) -> Example:
    """Tokenize one corpus record, chat or plain text."""
    if "messages" in record:
        return encode_conversation(tokenizer, record["messages"])
    return encode_plain(tokenizer, record["prompt"], record["completion"])


def check_matches_template(tokenizer: PreTrainedTokenizerFast, messages: list[dict[str, str]], ids: list[int]) -> None:
    """Fail unless the training ids equal the chat template's, and the generation prompt is a prefix."""
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    if tokenizer.encode(rendered, add_special_tokens=False) != ids:
        raise ValueError(f"training ids differ from chat template for {messages!r}")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(f"generation prompt is not a prefix of the training ids for {messages!r}")


def make_batches(examples: list[Example], max_tokens: int, rng: random.Random) -> list[list[Example]]:
    """Group examples of similar length into padded batches of at most max_tokens tokens, in random order."""
    shuffled = examples[:]
    rng.shuffle(shuffled)
    ordered = sorted(shuffled, key=lambda e: len(e.input_ids))
    batches, current = [], []
    for example in ordered:
        if current and (len(current) + 1) * len(example.input_ids) > max_tokens:
            batches.append(current)
            current = []
        current.append(example)
    batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into input, mask and label tensors."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def build_model(tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace) -> LlamaForCausalLM:
    """Create a freshly initialized small Llama model sized for the tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup followed by cosine decay to a tenth of the peak learning rate."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: LlamaForCausalLM, examples: list[Example], pad_id: int, args: argparse.Namespace) -> float:
    """Train with AdamW and a cosine schedule; return the mean loss of the last epoch."""
    rng = random.Random(args.seed)
    epochs = [make_batches(examples, args.batch_tokens, rng) for _ in range(args.epochs)]
    total = sum(len(batches) for batches in epochs)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    model.train()
    step, start, last_epoch_loss = 0, time.time(), float("nan")
    for epoch, batches in enumerate(epochs):
        losses = []
        for batch in batches:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, args.warmup, args.lr)
            loss = model(**collate(batch, pad_id)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if step % args.log_every == 0 or step == total:
                elapsed = time.time() - start
                print(
                    f"epoch {epoch + 1}/{args.epochs} step {step}/{total} loss {loss.item():.4f} "
                    f"lr {optimizer.param_groups[0]['lr']:.2e} elapsed {elapsed:.0f}s "
                    f"eta {elapsed / step * (total - step):.0f}s",
                    flush=True,
                )
        last_epoch_loss = sum(losses) / len(losses)
        print(f"epoch {epoch + 1} mean loss {last_epoch_loss:.4f}", flush=True)
    return last_epoch_loss


@torch.no_grad()
def complete(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, prompt: str) -> str:
    """Continue a plain-text prompt greedily, as /generate and /v1/completions do."""
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@torch.no_grad()
def reply(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, question: str) -> str:
    """Answer one question greedily through the chat template."""
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def write_model_card(path: Path, stats: dict[str, str]) -> None:
    """Write the README model card with the numbers of this training run."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in stats.items())
    path.write_text(
        f"""# Default model

A tiny Llama-architecture chat model that the server loads when no model is configured.
It gives short English answers (one to three sentences, always ending with `</s>`) about a
few hundred everyday and technical topics, replies to greetings, and says so when it does
not know something. It answers a plain question without the chat template too (as `/generate`
and `/v1/completions` send it), continuing the prompt with the same answer. It is a fallback so
the server works out of the box, not a useful assistant: configure a real model for real work.

## How it was built

- Corpus: `scripts/default_model/corpus.jsonl`, generated by
  `scripts/default_model/make_corpus.py` from question/answer facts written by the project:
  chat conversations, and plain-text prompts (`What is X?`, `Question: ...\\nAnswer:`) with
  their completions.
- Tokenizer: byte-level BPE trained with `tokenizers` on the corpus, special tokens
  `<s>`, `</s>`, `<unk>`, `<pad>`, `<|system|>`, `<|user|>`, `<|assistant|>`.
- Chat template (in `tokenizer_config.json`): `<s><|user|>\\n...</s>\\n<|assistant|>\\n`.
- Model: `LlamaForCausalLM` trained from scratch with PyTorch AdamW and a cosine schedule,
  loss on assistant replies, plain-text completions and their end-of-sequence token only.

Regenerate (CPU only, seeded and reproducible for the same thread count):

```
python scripts/default_model/make_corpus.py
python scripts/default_model/train.py --threads {stats["Threads"]}
```

| Property | Value |
|---|---|
{rows}

## License

The corpus was written by the project for this model, and the model was trained only on it;
model, tokenizer and corpus are distributed under the project's license.
""",
        encoding="utf-8",
    )


def make_tokenizer_config_portable(output: Path) -> None:
    """Name the generic fast-tokenizer class in tokenizer_config.json so transformers 4.x can load it too."""
    path = output / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def parse_args() -> argparse.Namespace:
    """Parse command-line options."""
    parser = argparse.ArgumentParser(description="Train the embedded default model.")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--vocab-size", type=int, default=3000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=688)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-tokens", type=int, default=2048, help="max padded tokens per batch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=50)
    return parser.parse_args()


def main() -> None:
    """Train tokenizer and model, check them, and save them with a model card."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    started = time.time()

    records = load_corpus(args.corpus)
    texts = sorted({text for record in records for text in record_texts(record)})
    tokenizer = train_tokenizer(texts, args.vocab_size)
    check_round_trip(tokenizer, texts)
    examples = [encode_record(tokenizer, record) for record in records]
    for record, example in zip(records, examples):
        if "messages" in record:
            check_matches_template(tokenizer, record["messages"], example.input_ids)
    n_tokens = sum(len(e.input_ids) for e in examples)
    n_plain = sum("prompt" in record for record in records)
    print(f"{len(examples) - n_plain} conversations, {n_plain} plain-text prompts, {n_tokens} tokens, "
          f"vocab {len(tokenizer)}", flush=True)

    model = build_model(tokenizer, args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model parameters: {n_params}", flush=True)
    train_started = time.time()
    final_loss = train(model, examples, tokenizer.pad_token_id, args)
    train_seconds = time.time() - train_started

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=64,
        do_sample=False,
    )
    for question in SAMPLE_QUESTIONS:
        print(f"Q: {question}\nA: {reply(model, tokenizer, question)}", flush=True)
    for prompt in SAMPLE_PROMPTS:
        print(f"Plain: {prompt!r}\nCompletion: {complete(model, tokenizer, prompt)!r}", flush=True)

    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output, save_jinja_files=False)
    make_tokenizer_config_portable(args.output)
    size = sum(f.stat().st_size for f in args.output.iterdir() if f.name != "README.md")
    total_minutes = (time.time() - started) / 60
    write_model_card(
        args.output / "README.md",
        {
            "Architecture": (
                f"LlamaForCausalLM, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
                f"{args.kv_heads} KV heads, intermediate {args.intermediate}, tied embeddings"
            ),
            "Parameters": f"{n_params:,}",
            "Vocabulary": f"{len(tokenizer)} tokens",
            "Weights": "float32 safetensors",
            "Size on disk": f"{size / 2**20:.1f} MiB",
            "Training data": f"{len(examples) - n_plain} conversations, {n_plain} plain-text prompts, {n_tokens:,} tokens",
            "Training": f"{args.epochs} epochs, AdamW, peak lr {args.lr}, seed {args.seed}",
            "Final loss": f"{final_loss:.4f} (mean over the last epoch, assistant tokens)",
            "Training time": f"{train_seconds / 60:.1f} min ({total_minutes:.1f} min in all)",
            "Threads": str(args.threads),
        },
    )
    print(
        f"final loss {final_loss:.4f}; training {train_seconds:.0f}s on {args.threads} thread(s); "
        f"{n_params} parameters; {size / 2**20:.1f} MiB saved to {args.output}",
        flush=True,
    )


if __name__ == "__main__":
    main()
