"""GPU figures on paper for the real configs: parameters, training FLOPs per image, the images/s an
A100-80G / H100-SXM would reach at 40% MFU in bf16, and activation memory at the documented batch.

    python bench/gpu_paper.py                      # every config, markdown table (a few minutes on CPU)
    python bench/gpu_paper.py --configs dit_s2     # one config
    python bench/gpu_paper.py --mfu 0.5            # another utilisation

How each column is obtained (all on CPU, fp32, random weights; nothing is timed):

* **forward FLOPs / image**: a batch-1 forward with paddle.flops' per-layer counters
  (``paddle.hapi.dynamic_flops.count_convNd`` / ``count_linear``) hooked on every ``Conv2D`` and
  ``Linear`` (ppdiffusers' subclasses too; ``paddle.flops`` itself is not called: it skips subclasses
  and its summary fails with numpy >= 2.3), plus the matmuls that are functions, not layers
  (attention ``Q K^T`` and ``P V`` through ``paddle.matmul`` / ``paddle.bmm`` / ``Tensor.__matmul__`` /
  ``scaled_dot_product_attention``), counted by wrapping those functions during the same forward.
  The counters give multiply-accumulates; FLOPs = 2 x MACs.  Norms, activations and softmax are
  left out (MFU counts matmul FLOPs).
* **training FLOPs / image** = 3 x forward of every trained network (forward + backward for inputs
  + backward for weights) + 1 x forward of every frozen network that runs in the step (SD: VAE
  encoder and CLIP text encoder; VAE: the warm-started frozen encoder), + the frozen LPIPS VGG16
  (forward on target and reconstruction, backward to the reconstruction only: 3 x one forward) and
  the PatchGAN discriminator (generator step 3x + 1x for the adaptive weight's gradient, discriminator
  step 2 images x 3x: 10 x one forward) for the VAE.  DiT and U-ViT train on pre-extracted
  latent / text features (their extract_features.py), so no encoder runs in their step.
* **6 N T check** (transformers): the usual estimate 6 x N x T, T = tokens per image, N = the
  weights applied to every token (found by the counters: a weight's MACs / its size = positions
  it was applied to).  It leaves out attention's ``Q K^T`` / ``P V`` and the per-image layers
  (adaLN modulation, time / class / text embeddings), so our count is a bit above it; the notes
  also give 6 x (all Linear/Conv weights) x T, which overshoots for DiT (adaLN is a third of its weights).
* **images/s per GPU** = MFU x peak bf16 dense FLOP/s / training FLOPs per image, with the peak
  of the NVIDIA data sheets: A100 312 TFLOP/s, H100 SXM 989 TFLOP/s.  A paper figure, not a
  measurement; the data pipeline and the optimizer step are assumed not to limit it.
* **activation memory**: the tensors autograd saves for backward during one training-mode
  forward at batch 1 (``paddle.autograd.saved_tensors_hooks``; parameters and buffers excluded,
  one count per storage), times the documented per-GPU batch.  With ``--recompute`` (the trainers'
  ``apply_model_toggles``): what is still saved with checkpointing on, plus the largest single
  recomputed unit's own saved tensors (it is rebuilt during backward, one at a time).  Measured in
  fp32; with bf16 AMP most saved matmul inputs are bf16, so expect roughly half (not measured).
  Gradients, optimizer state, the allocator's slack and temporaries of the backward pass are not
  in this column (weights + grads + AdamW moments in fp32 = 16 bytes x trained parameters, listed
  separately).
"""
import os, sys; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # noqa: E401,E702 -- repo root, for common/
import common.bootstrap  # noqa: F401 -- CPU threads before paddle loads

import argparse
import contextlib
import io
import json

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEAK_TFLOPS = {"A100-80G": 312.0, "H100-SXM": 989.0}  # bf16 dense, NVIDIA data sheets


# ---------------------------------------------------------------- FLOP counting
def _matmul_macs(x, y, transpose_x=False, transpose_y=False):
    k = x.shape[-2] if transpose_x else x.shape[-1]
    m = x.shape[-1] if transpose_x else x.shape[-2]
    n = y.shape[-2] if transpose_y else y.shape[-1]
    batch = 1
    for d in (x.shape[:-2] if len(x.shape) >= len(y.shape) else y.shape[:-2]):
        batch *= d
    return batch * m * n * k


@contextlib.contextmanager
def count_functional_matmuls(tally):
    """Add the multiply-accumulates of ``paddle.matmul`` / ``paddle.bmm`` / ``Tensor.__matmul__`` /
    ``F.scaled_dot_product_attention(_)`` calls made inside the block to ``tally["attn_macs"]``
    (layers' own matmuls go through ``_C_ops`` and are not seen here).  ``scaled_dot_product_attention``
    takes ``(batch, seq, heads, head_dim)`` tensors: ``2 * B * H * Lq * Lk * D``."""
    depth = [0]
    originals = {}

    def wrap(owner, name, macs_fn):
        orig = getattr(owner, name)
        originals[(owner, name)] = orig

        def wrapped(*args, **kwargs):
            if depth[0] == 0:
                tally["attn_macs"] = tally.get("attn_macs", 0) + int(macs_fn(*args, **kwargs))
            depth[0] += 1
            try:
                return orig(*args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(owner, name, wrapped)

    def mm(x, y, transpose_x=False, transpose_y=False, name=None):
        return _matmul_macs(x, y, transpose_x, transpose_y)

    def sdpa(query, key, value, *args, **kwargs):
        b, lq, h, d = query.shape
        return 2 * b * h * lq * key.shape[1] * d

    wrap(paddle, "matmul", mm)
    wrap(paddle, "bmm", lambda x, y, name=None: _matmul_macs(x, y))
    wrap(paddle.Tensor, "__matmul__", lambda x, y: _matmul_macs(x, y))
    for name in ("scaled_dot_product_attention", "scaled_dot_product_attention_"):
        if hasattr(F, name):
            wrap(F, name, sdpa)
    try:
        yield tally
    finally:
        for (owner, name), orig in originals.items():
            setattr(owner, name, orig)


def forward_flops(model, x, fn):
    """Forward FLOPs of ``fn(model, x)`` (``x`` a batch-1 tensor), counted as described in the module docstring.

    The per-layer counts are paddle.flops' own counting functions (``paddle.hapi.dynamic_flops``
    ``count_convNd`` / ``count_linear``: multiply-accumulates incl. the bias add), hooked on every
    ``Conv2D`` / ``Linear`` (subclasses included) here, because ``paddle.flops`` itself fails with
    numpy >= 2.3 (its summary table calls ``int()`` on 1-element tensors) and skips subclasses.

    Returns:
        dict ``flops`` (2 x (layer MACs + functional matmul MACs)), ``layer_macs``, ``attn_macs`` and
        ``params_by_rows`` (``{positions: weight parameters}``: how many weights were applied to how
        many positions, e.g. the 6 N T check's N is the entry at T).
    """
    from paddle.hapi.dynamic_flops import count_convNd, count_linear

    hooks, layers = [], []
    for layer in model.sublayers(include_self=True):
        count = count_convNd if isinstance(layer, nn.Conv2D) else count_linear if isinstance(layer, nn.Linear) else None
        if count is not None:
            layer.register_buffer("total_ops", paddle.zeros([1], dtype="int64"), persistable=False)
            hooks.append(layer.register_forward_post_hook(count))
            layers.append(layer)
    tally = {}
    training = model.training
    model.eval()
    try:
        with count_functional_matmuls(tally), paddle.no_grad():
            fn(model, x)
    finally:
        for h in hooks:
            h.remove()
        if training:
            model.train()
    layer_macs, rows = 0, {}
    for layer in layers:
        macs = int(layer._buffers.pop("total_ops").item())
        layer_macs += macs
        if macs:  # rows = how many positions the weight was applied to (tokens for a per-token layer)
            r = int(round(macs / int(layer.weight.numel())))
            rows[r] = rows.get(r, 0) + int(layer.weight.numel())
    attn = tally.get("attn_macs", 0)
    return {"flops": 2 * (layer_macs + attn), "layer_macs": layer_macs, "attn_macs": attn, "params_by_rows": rows}


# ---------------------------------------------------------------- activation memory
def _storage_key(t):
    try:
        return t.data_ptr()
    except Exception:  # noqa: BLE001 -- tensors without storage yet
        return id(t)


@contextlib.contextmanager
def saved_tensor_bytes(exclude_layers):
    """Record the bytes of every tensor autograd saves for backward inside the block.

    Yields a dict ``{"stack": [dict], "units": [int]}``: ``stack[0]`` maps storage -> bytes of the
    tensors saved by the forward; ``units`` the saved bytes of each recomputed unit (see
    :func:`recompute_units`).  Parameters and buffers of ``exclude_layers`` are not counted.
    """
    skip = set()
    for layer in exclude_layers:
        skip.update(_storage_key(p) for p in layer.parameters())
        skip.update(_storage_key(b) for b in layer.buffers())
    state = {"stack": [{}], "units": []}

    def pack(t):
        key = _storage_key(t)
        if key not in skip:
            state["stack"][-1][key] = int(t.numel()) * t.element_size()
        return t

    with paddle.autograd.saved_tensors_hooks(pack, lambda t: t):
        yield state


@contextlib.contextmanager
def recompute_units(state):
    """While active, every ``recompute(function, *args)`` (paddle.distributed.fleet.utils, also as
    imported by ppdiffusers modules) first runs ``function`` once with gradients on to record the
    bytes that unit saves (appended to ``state["units"]``), then does the real recompute call
    (always the reentrant variant, see below)."""
    import paddle.distributed.fleet.utils as fleet_utils

    orig = fleet_utils.recompute

    def measured(function, *args, **kwargs):
        state["stack"].append({})
        try:
            with paddle.set_grad_enabled(True):
                function(*args, **{k: v for k, v in kwargs.items() if k not in ("use_reentrant", "preserve_rng_state")})
        finally:
            state["units"].append(sum(state["stack"].pop().values()))
        # the non-reentrant variant (ppdiffusers' default) registers saved-tensor hooks of its own, which
        # paddle does not nest; the reentrant one saves the same (the unit's inputs), so count with that
        kwargs.pop("use_reentrant", None)
        return orig(function, *args, **kwargs)

    patched = [(fleet_utils, "recompute")]
    for mod in list(sys.modules.values()):
        if mod is not None and getattr(mod, "recompute", None) is orig:
            patched.append((mod, "recompute"))
    for mod, name in patched:
        setattr(mod, name, measured)
    try:
        yield
    finally:
        for mod, name in patched:
            setattr(mod, name, orig)


def activation_bytes(trained, x, fn, recompute=False, others=()):
    """Saved-for-backward bytes of one training-mode forward ``fn(trained, x)`` at the batch of ``x``.

    Returns ``(saved, largest_unit)``; with ``recompute`` the trainers' toggle is switched on first
    and ``largest_unit`` is the biggest recomputed unit (0 without).  ``others``: further layers
    the forward calls whose weights must not count as activations.
    """
    from common.model_toggles import apply_model_toggles

    trained.train()
    if recompute:
        with contextlib.redirect_stderr(io.StringIO()):
            if not apply_model_toggles(trained, recompute=True, name="paper")["recompute"]:
                raise RuntimeError(f"{type(trained).__name__}: recompute could not be switched on")
    with saved_tensor_bytes([trained, *others]) as state:
        with recompute_units(state) if recompute else contextlib.nullcontext():
            out = fn(trained, x)
    del out
    if recompute:
        trained.gradient_checkpointing = False  # every model here uses this attribute
        for layer in trained.sublayers(include_self=True):
            if hasattr(layer, "gradient_checkpointing"):
                layer.gradient_checkpointing = False
    return sum(state["stack"][0].values()), max(state["units"], default=0)


# ---------------------------------------------------------------- the configs
def _nparams(layer, trainable_only=True):
    return int(sum(int(p.numel()) for p in layer.parameters() if not (trainable_only and p.stop_gradient)))


def _matmul_params(layer):
    """Parameters of the Linear / Conv2D weights (what 6 N T counts; embeddings tables, norms and biases excluded)."""
    return int(sum(int(m.weight.numel()) for m in layer.sublayers(include_self=True) if isinstance(m, (nn.Linear, nn.Conv2D))))


def cfg_ddpm128():
    sys.path.insert(0, os.path.join(REPO, "ddpm_tutorial"))
    from denoising_diffusion import build_unet

    unet = build_unet(128, (128, 128, 256, 256, 512, 512), (4,), 2)
    x = paddle.randn([1, 3, 128, 128])

    def fwd(m, inp):
        return m(inp, paddle.to_tensor([500] * inp.shape[0], dtype="int64")).sample

    return dict(name="DDPM tutorial UNet, 128 px", batch=16, batch_source="ddpm_tutorial/README.md GPU recipe (--train_batch_size 16)",
                trained=[(unet, x, fwd)], frozen=[], recompute=False, tokens=None)


def _dit(config_file, label):
    sys.path.insert(1, os.path.join(REPO, "class_conditional"))
    from models import DiT, load_model_config, model_kwargs

    cfg = load_model_config(os.path.join(REPO, "class_conditional", "config", config_file))
    model = DiT(**model_kwargs(cfg))
    x = paddle.randn([1, cfg["in_channels"], cfg["input_size"], cfg["input_size"]])

    def fwd(m, inp):
        n = inp.shape[0]
        return m(inp, paddle.to_tensor([500.0] * n), paddle.to_tensor([1] * n, dtype="int64"))

    return dict(name=label, batch=32, batch_source="class_conditional/0_/1_run_train_dit_*.sh (BATCH_SIZE=32 per process)",
                trained=[(model, x, fwd)], frozen=[], recompute=True, tokens=(cfg["input_size"] // cfg["patch_size"]) ** 2)


def cfg_dit_s2():
    return _dit("DiT_S_patch2.json", "DiT-S/2, latent 4x32x32")


def cfg_dit_xl2():
    return _dit("DiT_XL_patch2.json", "DiT-XL/2, latent 4x32x32")


def cfg_sd_v1():
    from ppdiffusers import AutoencoderKL, UNet2DConditionModel
    from ppdiffusers.transformers import CLIPTextConfig, CLIPTextModel

    from bench_stable_diffusion import CLIP_L14_TEXT, SD_VAE
    from common.arg_checks import read_json_config

    unet = UNet2DConditionModel.from_config(read_json_config(os.path.join(REPO, "stable_diffusion", "config", "unet_config.json"), "unet_config.json"))
    vae = AutoencoderKL.from_config(SD_VAE)
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L14_TEXT))
    for p in list(vae.parameters()) + list(text.parameters()):
        p.stop_gradient = True
    states = paddle.randn([1, 77, 768])

    def unet_fwd(m, inp):
        n = inp.shape[0]
        return m(inp, paddle.to_tensor([500] * n, dtype="int64"), encoder_hidden_states=states.expand([n, 77, 768])).sample

    return dict(name="SD v1 UNet, 256 px (latent 4x32x32, text 77x768)", batch=32,
                batch_source="stable_diffusion/run_train_laion400m.sh (BATCH_SIZE=32, --recompute True)",
                trained=[(unet, paddle.randn([1, 4, 32, 32]), unet_fwd)],
                frozen=[("VAE f8 encoder, 256 px", vae, paddle.randn([1, 3, 256, 256]), lambda m, inp: m.encode(inp).latent_dist.mean),
                        ("CLIP ViT-L/14 text encoder, 77 tokens", text, paddle.randint(0, 49408, [1, 77]), lambda m, inp: m(inp)[0])],
                recompute=True, tokens=None)


def cfg_uvit():
    sys.path.insert(0, os.path.join(REPO, "ldm_uvit"))
    from uvit_trainer import build_unet, load_unet_config

    config = load_unet_config("config/uvit_t2i_small_deep.json")
    unet = build_unet(config)
    context = paddle.randn([1, config["num_text_tokens"], config["clip_dim"]])

    def fwd(m, inp):
        n = inp.shape[0]
        return m(inp, paddle.to_tensor([500.0] * n), context.expand([n] + context.shape[1:])).sample

    tokens = (config["sample_size"] // config["patch_size"]) ** 2 + config["num_text_tokens"] + 1
    return dict(name="U-ViT-S/2-deep, latent 4x32x32 + 77 text tokens", batch=32,
                batch_source="ldm_uvit/run_train_ldm_uvit_small_deep.sh (32 per device, --recompute True)",
                trained=[(unet, paddle.randn([1, 4, 32, 32]), fwd)], frozen=[], recompute=True, tokens=tokens)


def cfg_vae():
    sys.path.insert(0, os.path.join(REPO, "autoencoder"))
    from paddle.vision.models import vgg16
    from ppdiffusers import AutoencoderKL

    from vae_losses import NLayerDiscriminator
    from vae_model import read_vae_config

    vae = AutoencoderKL.from_config(read_vae_config(os.path.join(REPO, "autoencoder", "config", "vae.json")))
    for p in vae.encoder.parameters():
        p.stop_gradient = True
    for p in vae.quant_conv.parameters():
        p.stop_gradient = True
    vgg = vgg16(pretrained=False, with_pool=False, num_classes=0).features[:30]  # LPIPS taps relu1_2 .. relu5_3
    for p in vgg.parameters():
        p.stop_gradient = True
    disc = NLayerDiscriminator(3, 64, 3)
    z = paddle.randn([1, 4, 32, 32])  # 256 px through the f8 encoder -> decoded by the f16 decoder to 512 px

    def decode(m, inp):
        return m.decode(inp).sample

    def enc(m, inp):
        return m.encode(inp).latent_dist.mean

    return dict(name="VAE f8 encoder / f16 decoder, 256 -> 512 px, LPIPS + PatchGAN", batch=4,
                batch_source="autoencoder/run_train_vae.sh (BATCH_SIZE=4, encoder warm-started and frozen)",
                trained=[(vae, z, decode)],
                frozen=[("f8 encoder (frozen), 256 px", vae, paddle.randn([1, 3, 256, 256]), enc)],
                extra=[("LPIPS VGG16 at 512 px (fwd target + fwd/bwd-to-input reconstruction)", vgg, paddle.randn([1, 3, 512, 512]), lambda m, inp: m(inp), 3),
                       ("PatchGAN at 512 px (gen. step 3x + adaptive weight 1x + disc. step 2x3x)", disc, paddle.randn([1, 3, 512, 512]), lambda m, inp: m(inp), 10)],
                memory_extra=[(vgg, lambda m, inp: m(inp)), (disc, lambda m, inp: m(inp))],
                recompute=False, tokens=None)


CONFIGS = {"ddpm128": cfg_ddpm128, "dit_s2": cfg_dit_s2, "dit_xl2": cfg_dit_xl2, "sd_v1": cfg_sd_v1, "uvit_s2_deep": cfg_uvit, "vae_f8f16": cfg_vae}


def measure(name):
    """All paper numbers of one config (see the module docstring); returns a JSON-able dict."""
    paddle.seed(0)
    c = CONFIGS[name]()
    parts, train_flops, trained_params, mm_params = [], 0, 0, 0
    for model, x, fn in c["trained"]:
        f = forward_flops(model, x, fn)
        train_flops += 3 * f["flops"]
        trained_params += _nparams(model)
        mm_params += _matmul_params(model)
        parts.append({"part": f"{type(model).__name__} (trained, 3x)", **f})
    for label, model, x, fn in c["frozen"]:
        f = forward_flops(model, x, fn)
        train_flops += f["flops"]
        parts.append({"part": f"{label} (1x)", **f})
    for label, model, x, fn, mult in c.get("extra", []):
        f = forward_flops(model, x, fn)
        train_flops += mult * f["flops"]
        parts.append({"part": f"{label} ({mult}x)", **f})
        if isinstance(model, nn.Layer) and any(not p.stop_gradient for p in model.parameters()):
            trained_params += _nparams(model)
    out = {"config": name, "name": c["name"], "batch": c["batch"], "batch_source": c["batch_source"], "trained_params": trained_params,
           "train_flops_per_image": train_flops, "parts": parts}
    if c["tokens"]:
        by_rows = parts[0]["params_by_rows"]
        t = c["tokens"]
        n_tok = sum(n for r, n in by_rows.items() if abs(r - t) <= 0.01 * t)  # weights applied to every token (conv bias adds ~1%)
        out.update(tokens=t, six_nt=6 * n_tok * t, six_nt_params=n_tok, six_nt_all=6 * mm_params * t, matmul_params=mm_params)
    # activation memory at batch 1, scaled to the documented batch
    model, x, fn = c["trained"][0]
    x_act = paddle.randn(x.shape)
    if name == "vae_f8f16":  # decoder + LPIPS on the reconstruction + discriminator on it, one graph
        vgg, disc = c["memory_extra"][0][0], c["memory_extra"][1][0]

        def gen_step(m, inp):
            rec = m.decode(inp).sample
            return vgg(rec), disc(rec)

        saved, _ = activation_bytes(model, x_act, gen_step, others=(vgg, disc))
        saved_rc = unit = None
    else:
        saved, _ = activation_bytes(model, x_act, fn)
        saved_rc, unit = activation_bytes(model, x_act, fn, recompute=True) if c["recompute"] else (None, None)
    out["act_bytes_per_image"] = saved
    out["act_bytes_recompute"] = None if saved_rc is None else {"saved_per_image": saved_rc, "largest_unit_per_image": unit}
    return out


def gib(x):
    return x / 2**30


def print_table(results, mfu):
    print(f"| config | trained params (M) | training GFLOPs / image | 6NT check | img/s A100 @ {mfu:.0%} MFU | img/s H100 @ {mfu:.0%} MFU "
          "| batch / GPU | activations GiB (no recompute) | activations GiB (--recompute) | weights+grads+AdamW fp32 GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        tf = r["train_flops_per_image"]
        ips = {k: mfu * v * 1e12 / tf for k, v in PEAK_TFLOPS.items()}
        check = f"{r['six_nt'] / 1e9:.1f} G (ours {tf / r['six_nt']:.2f}x)" if r.get("six_nt") else "-"
        act = gib(r["act_bytes_per_image"] * r["batch"])
        rc = r["act_bytes_recompute"]
        rc_txt = "n/a (no --recompute)" if rc is None else f"{gib(rc['saved_per_image'] * r['batch'] + rc['largest_unit_per_image'] * r['batch']):.1f}"
        print(f"| {r['name']} | {r['trained_params'] / 1e6:.1f} | {tf / 1e9:.1f} | {check} | {ips['A100-80G']:.0f} | {ips['H100-SXM']:.0f} "
              f"| {r['batch']} | {act:.1f} | {rc_txt} | {gib(16 * r['trained_params']):.1f} |")
    print("\nper part (forward, batch 1; GFLOPs = 2 x MACs; 'attention matmuls' = the functional Q K^T / P V share):")
    for r in results:
        for p in r["parts"]:
            share = p["attn_macs"] / max(1, p["layer_macs"] + p["attn_macs"])
            print(f"- {r['name']}: {p['part']}: {p['flops'] / 1e9:.2f} GFLOPs fwd ({(p['layer_macs'] + p['attn_macs']) / 1e9:.2f} GMACs; attention matmuls {share:.1%})")
    for r in results:
        if r.get("six_nt"):
            print(f"- {r['name']}: 6 N T with N = {r['six_nt_params'] / 1e6:.1f}M weights applied to all T = {r['tokens']} tokens; "
                  f"with N = all {r['matmul_params'] / 1e6:.1f}M Linear/Conv weights it would be {r['six_nt_all'] / 1e9:.1f} G "
                  f"(ours {r['train_flops_per_image'] / r['six_nt_all']:.2f}x; weights that act once per image, such as adaLN and the embeddings, are counted per token there)")
    print("\nbatch sources: " + "; ".join(f"{r['name']}: {r['batch_source']}" for r in results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation assumed for the images/s columns")
    parser.add_argument("--json", default=None, help="also write the raw numbers to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.mfu <= 1:
        parser.error(f"--mfu must be in (0, 1], got {args.mfu}")
    if args.child:
        print("PAPER " + json.dumps(measure(args.child)), flush=True)
        return
    import subprocess

    results = []
    for name in args.configs:  # one process per config: the big models do not pile up in memory
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name], capture_output=True, text=True, cwd=REPO)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("PAPER ")]
        if proc.returncode or not lines:
            print(f"{name}: failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}", file=sys.stderr)
            continue
        results.append(json.loads(lines[-1][6:]))
    print_table(results, args.mfu)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
