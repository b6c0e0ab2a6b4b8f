"""Text encoder + tokenizer for the U-ViT LDM: loading, the small offline demo encoder, encoding.

The exported ``LDMTextToImagePipeline`` keeps its text encoder in ``bert/`` and its tokenizer in
``tokenizer/`` and computes prompt features as ``bert(tokenizer(prompt, padding="max_length",
max_length=model_max_length, truncation=True).input_ids)[0]`` (no attention mask).
:func:`encode_text` does exactly that, so the features extracted for training are the ones the
pipeline produces at inference.

Two kinds of encoder work:

* ``LDMBertModel`` (ppdiffusers' ``latent_diffusion`` text transformer) with a ``BertTokenizer``:
  the class the pipeline is written for, used by the offline demo.  :func:`build_demo_text_encoder`
  builds a small one: a word-level WordPiece vocabulary made from the training captions
  (``vocab.txt``) and a randomly initialised, frozen LDMBert from ``config/ldmbert_demo.json``.
  A frozen random transformer still maps different captions to different features, which is
  all the diffusion model needs to learn caption-conditional generation on the demo.
* ``CLIPTextModel`` + ``CLIPTokenizer`` (what upstream and U-ViT use: CLIP ViT-L/14, 768-d, 77
  tokens), e.g. ``runwayml/stable-diffusion-v1-5/text_encoder`` for users with a network.
"""
import json
import os

import numpy as np

__all__ = [
    "SPECIAL_TOKENS",
    "DEMO_TEXT_ENCODER_CONFIG",
    "build_vocab",
    "build_demo_text_encoder",
    "load_text_encoder",
    "load_tokenizer",
    "encode_text",
]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] = id 0 = LDMBert's pad_token_id
DEMO_TEXT_ENCODER_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config", "ldmbert_demo.json")


def build_vocab(captions):
    """Word-level vocabulary for ``BertTokenizer`` from ``captions`` (list of str).

    Words come from BERT's basic tokenizer (lower-cased, punctuation split off), so every word
    of every caption is a whole-word token.  Returns ``SPECIAL_TOKENS + sorted(words)``.

    Raises:
        ValueError: no caption contains a word.
    """
    from ppdiffusers.transformers import BasicTokenizer

    basic = BasicTokenizer(do_lower_case=True)
    words = sorted({w for c in captions for w in basic.tokenize(c)} - set(SPECIAL_TOKENS))
    if not words:
        raise ValueError("cannot build a vocabulary: the captions contain no words")
    return SPECIAL_TOKENS + words


def build_demo_text_encoder(captions, output_dir, model_max_length, config_file=DEMO_TEXT_ENCODER_CONFIG, seed=0):
    """Build and save the small demo text encoder: ``output_dir/tokenizer`` and ``output_dir/bert``.

    Args:
        captions: captions to build the vocabulary from (see :func:`build_vocab`).
        output_dir: folder to write (created); loadable afterwards with :func:`load_text_encoder`
            and :func:`load_tokenizer`, and usable as ``--text_encoder_name_or_path`` /
            ``--tokenizer_name_or_path`` of ``generate_pipelines.py``.
        model_max_length: tokens per caption (also LDMBert's ``max_position_embeddings``).
        config_file: LDMBert size (layers, width, heads); vocabulary size and length are set here.
        seed: paddle seed for the random initialisation (the global RNG state is restored).

    Returns:
        ``(bert, tokenizer)``: eval-mode ``LDMBertModel`` with gradients off, ``BertTokenizer``.
    """
    import paddle
    from ppdiffusers.pipelines.latent_diffusion import LDMBertConfig, LDMBertModel
    from ppdiffusers.transformers import BertTokenizer

    vocab = build_vocab(captions)
    tok_dir = os.path.join(output_dir, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    vocab_file = os.path.join(tok_dir, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab_file, do_lower_case=True, model_max_length=model_max_length)
    tokenizer.save_pretrained(tok_dir)

    with open(config_file) as f:
        config = json.load(f)
    config.update(vocab_size=len(vocab), max_position_embeddings=model_max_length, pad_token_id=0)
    state = paddle.get_rng_state()
    paddle.seed(seed)
    bert = LDMBertModel(LDMBertConfig(**config))
    paddle.set_rng_state(state)
    bert.save_pretrained(os.path.join(output_dir, "bert"))
    return _freeze(bert), tokenizer


def _freeze(model):
    model.eval()
    for p in model.parameters():
        p.stop_gradient = True
    return model


def _local_subfolder(path, names):
    """For a local folder: the first of ``names`` that is a subfolder, else ``None`` (use ``path``)."""
    for name in names:
        if os.path.isdir(os.path.join(path, name)):
            return name
    return None


def load_text_encoder(name_or_path):
    """Load a frozen text encoder (eval mode, gradients off).

    ``name_or_path`` may be a ``bert/`` or ``text_encoder/`` folder, a folder holding one of them
    (a pipeline or :func:`build_demo_text_encoder` output), or a hub id.  ``model_type``
    ``"ldmbert"`` in the folder's config loads ``LDMBertModel``, anything else ``CLIPTextModel``;
    hub ids ending in ``/bert`` load LDMBert, others CLIP (e.g.
    ``runwayml/stable-diffusion-v1-5/text_encoder``, needs a network).

    Raises:
        FileNotFoundError: a local-looking path (starts with ``.`` or ``/``) that does not exist,
            or a folder without a config file.
    """
    from ppdiffusers.pipelines.latent_diffusion import LDMBertModel
    from ppdiffusers.transformers import CLIPTextModel

    if os.path.isdir(name_or_path):
        sub = _local_subfolder(name_or_path, ["bert", "text_encoder"])
        folder = os.path.join(name_or_path, sub) if sub else name_or_path
        config_file = next((os.path.join(folder, n) for n in ("config.json", "model_config.json") if os.path.isfile(os.path.join(folder, n))), None)
        if config_file is None:
            raise FileNotFoundError(f"--text_encoder_name_or_path {name_or_path!r}: no config.json in {folder!r}")
        with open(config_file) as f:
            model_type = json.load(f).get("model_type", "")
        cls = LDMBertModel if model_type == "ldmbert" else CLIPTextModel
        return _freeze(cls.from_pretrained(folder))
    if name_or_path.startswith((".", "/")):
        raise FileNotFoundError(f"--text_encoder_name_or_path {name_or_path!r} does not exist")
    cls = LDMBertModel if name_or_path.rstrip("/").endswith("/bert") else CLIPTextModel
    return _freeze(cls.from_pretrained(name_or_path))


def load_tokenizer(name_or_path, model_max_length):
    """Load the tokenizer that goes with :func:`load_text_encoder`, truncating/padding to ``model_max_length``.

    A local folder (or its ``tokenizer/`` subfolder) with ``vocab.txt`` gives a ``BertTokenizer``,
    one with ``vocab.json`` + ``merges.txt`` a ``CLIPTokenizer``.  Hub ids: ``BertTokenizer`` when
    the id contains ``ldm`` or ``bert``, else ``CLIPTokenizer``.

    Raises:
        FileNotFoundError: a local-looking path that does not exist or holds no vocabulary file.
    """
    from ppdiffusers.transformers import BertTokenizer, CLIPTokenizer

    if os.path.isdir(name_or_path):
        sub = _local_subfolder(name_or_path, ["tokenizer"])
        folder = os.path.join(name_or_path, sub) if sub else name_or_path
        if os.path.isfile(os.path.join(folder, "vocab.txt")):
            return BertTokenizer.from_pretrained(folder, model_max_length=model_max_length)
        if os.path.isfile(os.path.join(folder, "vocab.json")):
            return CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)
        raise FileNotFoundError(f"--tokenizer_name_or_path {name_or_path!r}: no vocab.txt or vocab.json in {folder!r}")
    if name_or_path.startswith((".", "/")):
        raise FileNotFoundError(f"--tokenizer_name_or_path {name_or_path!r} does not exist")
    cls = BertTokenizer if ("ldm" in name_or_path.lower() or "bert" in name_or_path.lower()) else CLIPTokenizer
    return cls.from_pretrained(name_or_path, model_max_length=model_max_length)


def encode_text(text_encoder, tokenizer, texts, batch_size=64):
    """Features of ``texts`` exactly as ``LDMTextToImagePipeline`` computes prompt embeddings.

    Returns float32 numpy ``(len(texts), tokenizer.model_max_length, hidden_size)``.
    The empty string ``""`` gives the unconditional ("empty context") features.
    """
    import paddle

    out = []
    with paddle.no_grad():
        for i in range(0, len(texts), batch_size):
            ids = tokenizer(
                list(texts[i : i + batch_size]),
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pd",
            ).input_ids
            out.append(text_encoder(ids)[0].astype("float32").numpy())
    return np.concatenate(out, axis=0)
