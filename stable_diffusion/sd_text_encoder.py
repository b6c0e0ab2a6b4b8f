"""The offline text side of the demo: a CLIP byte-level BPE tokenizer trained on the training
captions and a small ``CLIPTextModel`` built from a JSON config.

Nothing here downloads.  The tokenizer is trained with the Hugging Face ``tokenizers`` library
(the same pre-tokenisation as OpenAI CLIP: lower-case, whitespace-normalised text split by CLIP's
regex, bytes mapped to printable unicode, ``</w>`` marking the end of a word) and written in the
two standard CLIP files, ``vocab.json`` and ``merges.txt``, plus ``tokenizer_config.json`` and
``special_tokens_map.json``, so that ``ppdiffusers.transformers.CLIPTokenizer.from_pretrained(dir)``
(the class ``StableDiffusionPipeline`` expects; it subclasses paddlenlp's ``CLIPTokenizer``)
loads it.  The vocabulary is laid out like CLIP's: the 256 byte symbols, the same 256 with
``</w>``, one entry per merge in merge order, then ``<|startoftext|>`` and ``<|endoftext|>``.
"""
import json
import os

__all__ = ["CLIP_SPLIT_PATTERN", "train_clip_bpe_tokenizer", "load_clip_tokenizer", "build_text_encoder_from_config"]

# CLIP's word split (OpenAI CLIP simple_tokenizer): specials, contractions, letter runs, single digits, other runs
CLIP_SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode():
    # the printable-unicode alphabet for the 256 byte values used by GPT-2 / CLIP byte-level BPE
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    if len(alphabet) != 256:  # pragma: no cover - library invariant
        raise RuntimeError(f"tokenizers ByteLevel alphabet has {len(alphabet)} symbols, expected 256")
    return sorted(alphabet)


def train_clip_bpe_tokenizer(captions, output_dir, vocab_size=1024, model_max_length=77):
    """Train a CLIP-style byte-level BPE tokenizer on ``captions`` and save it to ``output_dir``.

    Args:
        captions: iterable of caption strings (the training captions).
        output_dir: folder to write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and
            ``special_tokens_map.json`` into (created if missing).
        vocab_size: upper bound of the vocabulary (at least 514 = 512 byte symbols + 2 specials);
            a small caption set stops earlier, when no pair is left to merge.
        model_max_length: padding/truncation length stored in ``tokenizer_config.json``.

    Returns:
        the vocabulary size actually written (int).

    Raises:
        ValueError: no non-empty caption, or ``vocab_size`` < 514.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    captions = [c for c in captions if c and c.strip()]
    if not captions:
        raise ValueError("cannot train a tokenizer: no non-empty caption was given")
    if vocab_size < 514:
        raise ValueError(f"vocab_size must be >= 514 (512 byte symbols + 2 special tokens), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    alphabet = _bytes_to_unicode()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,
        min_frequency=1,
        special_tokens=[],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(captions, trainer=trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]

    # CLIP layout: bytes, bytes + "</w>", merge results in merge order, then the two specials
    vocab_list = list(alphabet) + [a + "</w>" for a in alphabet]
    seen = set(vocab_list)
    kept_merges = []
    for a, b in merges:
        merged = a + b
        kept_merges.append((a, b))
        if merged not in seen:
            vocab_list.append(merged)
            seen.add(merged)
        if len(vocab_list) >= vocab_size - 2:
            break
    vocab_list += [BOS, EOS]
    vocab = {token: i for i, token in enumerate(vocab_list)}

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(output_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2 - trained on the training captions with huggingface tokenizers\n")
        f.write("".join(f"{a} {b}\n" for a, b in kept_merges))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    with open(os.path.join(output_dir, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    config = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=model_max_length, max_len=model_max_length, do_lower_case=True)
    with open(os.path.join(output_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return len(vocab)


def load_clip_tokenizer(name_or_path, subfolder=None, model_max_length=None):
    """``CLIPTokenizer.from_pretrained`` (the ppdiffusers class the pipelines use), with
    ``model_max_length`` overridden when given.

    Raises:
        FileNotFoundError: a local-looking path (starts with ``.`` or ``/``) that does not exist.
    """
    from ppdiffusers.transformers import CLIPTokenizer

    if str(name_or_path).startswith((".", "/")) and not os.path.exists(name_or_path):
        raise FileNotFoundError(f"tokenizer {name_or_path!r} does not exist")
    kwargs = {"subfolder": subfolder} if subfolder else {}
    tokenizer = CLIPTokenizer.from_pretrained(name_or_path, **kwargs)
    if model_max_length:
        tokenizer.model_max_length = int(model_max_length)
    return tokenizer


def build_text_encoder_from_config(config_path, tokenizer, seed=0):
    """A randomly initialised ``CLIPTextModel`` from a JSON config, sized to ``tokenizer``.

    ``vocab_size``, ``bos/eos/pad_token_id`` come from the tokenizer (so the config need not
    know the vocabulary) and ``max_position_embeddings`` is at least ``tokenizer.model_max_length``.

    Raises:
        FileNotFoundError: ``config_path`` does not exist.
        ValueError: the file is not valid JSON or not a JSON object (file, line and column named,
            :func:`common.arg_checks.read_json_config`).
    """
    import paddle
    from ppdiffusers.transformers import CLIPTextConfig, CLIPTextModel

    from common.arg_checks import read_json_config

    config = read_json_config(config_path, "--text_encoder_name_or_path")
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    vocab = tokenizer.get_vocab()
    config.update(
        vocab_size=len(vocab),
        bos_token_id=vocab[BOS] if BOS in vocab else tokenizer.bos_token_id,
        eos_token_id=vocab[EOS] if EOS in vocab else tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=max(int(config.get("max_position_embeddings", 77)), int(tokenizer.model_max_length)),
    )
    state = paddle.get_rng_state()
    paddle.seed(seed)
    model = CLIPTextModel(CLIPTextConfig(**config))
    paddle.set_rng_state(state)
    return model
