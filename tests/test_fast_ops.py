"""common/fast_ops.py: the CPU fast paths change speed only.

For every model kind the project trains or samples (the DDPM UNet2DModel, the SD demo
UNet2DConditionModel, the class_conditional DiT and its exported ppdiffusers Transformer2DModel, the demo
AutoencoderKL, the demo U-ViT): the same
inputs give the same outputs and the same parameter gradients (allclose, rtol 1e-5) with and
without the swaps; the state_dict keys do not change; a save_pretrained folder written by a swapped
model loads in plain ppdiffusers and computes the same; the opt-out (``enable=False``, the scripts'
``--fast_ops False``) changes nothing.  No timings here (bench/bench_ops.py measures them).
"""
import copy
import os
import sys

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
for _folder in ("ddpm_tutorial", "stable_diffusion", "class_conditional"):
    if os.path.join(REPO, _folder) not in sys.path:
        sys.path.insert(0, os.path.join(REPO, _folder))

import paddle  # noqa: E402

from common.fast_ops import (FAST_OPS, add_fast_ops_argument, apply_fast_ops, describe_fast_ops, fast_ops_enabled,  # noqa: E402
                             parse_bool, remove_fast_ops)


@pytest.fixture(autouse=True)
def stock_flags(monkeypatch):
    """Every test starts and ends with paddle's default stride kernels (apply_fast_ops turns them off process-wide).
    The test inputs are small, so linear_bias_grad's size threshold is lowered to 0 to run its PyLayer everywhere
    (test_small_linear_keeps_the_class_forward checks the default threshold)."""
    import common.fast_ops

    monkeypatch.setattr(common.fast_ops, "LINEAR_MIN_OUTPUT", 0)
    paddle.set_flags({"FLAGS_use_stride_kernel": True})
    yield
    paddle.set_flags({"FLAGS_use_stride_kernel": True})


# ---------------------------------------------------------------------------------------------- models
def _randomize(model, seed=1):
    """Non-zero random parameters everywhere (DiT and U-ViT start with zero layers that would hide a wrong path)."""
    gen = np.random.default_rng(seed)
    for p in model.parameters():
        p.set_value(paddle.to_tensor(gen.standard_normal(p.shape).astype("float32") * 0.2))
    return model


def _ddpm(attention):
    from denoising_diffusion import build_unet

    paddle.seed(0)
    unet = build_unet(16, (16, 32), (1,), 1) if attention else build_unet(32, (16, 32, 64), (), 1)  # the demo UNet, and one with attention
    size = 16 if attention else 32
    inputs = (paddle.randn([2, 3, size, size]), paddle.to_tensor([3, 700], dtype="int64"))
    return unet, inputs, lambda m, x, t: m(x, t).sample


def _sd_unet():
    from sd_pipeline_utils import load_unet

    unet = load_unet(os.path.join(REPO, "stable_diffusion", "config", "unet_demo.json"))
    paddle.seed(1)
    inputs = (paddle.randn([2, 4, 8, 8]), paddle.to_tensor([10, 900], dtype="int64"), paddle.randn([2, 16, 64]))
    return unet, inputs, lambda m, x, t, c: m(x, t, encoder_hidden_states=c).sample


def _dit():
    from models import DiT, load_model_config, model_kwargs

    paddle.seed(0)
    model = DiT(**model_kwargs(load_model_config(os.path.join(REPO, "class_conditional", "config", "DiT_demo.json"))))
    inputs = (paddle.randn([2, 4, 8, 8]), paddle.to_tensor([5.0, 800.0]), paddle.to_tensor([3, 7], dtype="int64"))
    return model, inputs, lambda m, x, t, y: m(x, t, y)


def _dit_transformer2d():
    """The ppdiffusers Transformer2DModel (ada_norm_zero blocks) that class_conditional exports for DiTPipeline."""
    from models import DiT, load_model_config, model_kwargs
    from models.export import to_transformer2d

    cfg = load_model_config(os.path.join(REPO, "class_conditional", "config", "DiT_demo.json"))
    paddle.seed(0)
    model = to_transformer2d(DiT(**model_kwargs(cfg)), cfg)
    inputs = (paddle.randn([2, 4, 8, 8]), paddle.to_tensor([5, 800], dtype="int64"), paddle.to_tensor([3, 1000], dtype="int64"))
    return model, inputs, lambda m, x, t, y: m(x, timestep=t, class_labels=y).sample


def _vae():
    from ppdiffusers import AutoencoderKL

    from common.arg_checks import read_json_config

    paddle.seed(0)
    vae = AutoencoderKL.from_config(read_json_config(os.path.join(REPO, "autoencoder", "config", "vae_demo.json"), "vae_demo.json"))
    inputs = (paddle.rand([2, 3, 32, 32]) * 2 - 1,)
    return vae, inputs, lambda m, x: m(x, sample_posterior=False).sample


def _uvit():
    saved = list(sys.path)
    sys.path.insert(0, os.path.join(REPO, "ldm_uvit"))
    try:
        from uvit_trainer import build_unet, load_unet_config
    finally:
        sys.path[:] = saved
    paddle.seed(0)
    unet = build_unet(load_unet_config(os.path.join(REPO, "ldm_uvit", "config", "uvit_t2i_demo.json")))
    inputs = (paddle.randn([2, 4, 8, 8]), paddle.to_tensor([20, 600], dtype="int64"), paddle.randn([2, 8, 64]))
    return unet, inputs, lambda m, x, t, c: m(x, t, c).sample


MODELS = {  # kind: (builder, minimum number of layers each swap must reach)
    "ddpm_unet": (lambda: _ddpm(False), {"conv_bias": 30, "linear_bias_grad": 2}),
    "ddpm_unet_attention": (lambda: _ddpm(True), {"conv_bias": 1, "linear_bias_grad": 4}),
    "sd_unet2dcondition": (_sd_unet, {"conv_bias": 1, "linear_bias_grad": 10}),
    "dit": (_dit, {"project": 5, "conv_bias": 1, "linear_bias_grad": 20}),
    "dit_transformer2d": (_dit_transformer2d, {"ada_norm_zero": 4, "conv_bias": 1, "linear_bias_grad": 20}),
    "vae": (_vae, {"conv_bias": 1, "downsample_pad": 2, "linear_bias_grad": 4}),
    "uvit": (_uvit, {"conv_bias": 2, "linear_bias_grad": 20}),
}


def _swapped(state):
    """Layers swapped according to an apply_fast_ops state."""
    return sum(v for k, v in state.items() if k not in ("enabled", "stride_kernel_off"))


def _run(model, inputs, call):
    """Output and every parameter gradient (numpy) of ``sum(out * w)`` for a fixed weight ``w``."""
    model.clear_gradients()
    out = call(model, *inputs)
    weight = paddle.to_tensor(np.random.default_rng(0).standard_normal(out.shape).astype("float32"))
    (out * weight).sum().backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    model.clear_gradients()
    return out.numpy().copy(), grads


def _assert_close(a, b, what):
    scale = max(float(np.abs(a).max()), 1e-6)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("kind", list(MODELS))
def test_same_outputs_gradients_and_keys(kind):
    build, expected = MODELS[kind]
    model, inputs, call = build()
    _randomize(model)
    model.eval()  # no dropout / label dropout: the two passes must see the same function
    keys = list(model.state_dict().keys())
    out0, grads0 = _run(model, inputs, call)

    state = apply_fast_ops(model, True)
    assert state["enabled"] and state["stride_kernel_off"]
    assert not paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]
    for name, minimum in expected.items():
        assert state[name] >= minimum, (name, state)
    assert list(model.state_dict().keys()) == keys
    out1, grads1 = _run(model, inputs, call)

    _assert_close(out0, out1, f"{kind}: output")
    assert sorted(grads0) == sorted(grads1) and grads0, f"{kind}: the same parameters get gradients"
    for name in grads0:
        _assert_close(grads0[name], grads1[name], f"{kind}: gradient of {name}")

    # undo: the class forwards again, same outputs
    assert remove_fast_ops(model) == _swapped(state)
    assert not any("forward" in vars(layer) for layer in model.sublayers(include_self=True))
    paddle.set_flags({"FLAGS_use_stride_kernel": True})
    out2, _ = _run(model, inputs, call)
    np.testing.assert_array_equal(out0, out2)


@pytest.mark.parametrize("kind", ["ddpm_unet", "sd_unet2dcondition", "dit_transformer2d", "vae", "uvit"])
def test_save_pretrained_folder_loads_in_plain_ppdiffusers(kind, tmp_path):
    build, _ = MODELS[kind]
    model, inputs, call = build()
    _randomize(model)
    model.eval()
    apply_fast_ops(model, True)
    fast_out = call(model, *inputs).numpy()
    model.save_pretrained(str(tmp_path / "fast"))
    remove_fast_ops(model)
    paddle.set_flags({"FLAGS_use_stride_kernel": True})
    model.save_pretrained(str(tmp_path / "stock"))
    assert sorted(os.listdir(tmp_path / "fast")) == sorted(os.listdir(tmp_path / "stock"))
    with open(tmp_path / "fast" / "config.json") as f, open(tmp_path / "stock" / "config.json") as g:
        assert f.read() == g.read()

    loaded = type(model).from_pretrained(str(tmp_path / "fast"))  # plain ppdiffusers, no swaps
    loaded.eval()
    assert not any("forward" in vars(layer) for layer in loaded.sublayers(include_self=True))
    assert list(loaded.state_dict().keys()) == list(model.state_dict().keys())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), value.numpy(), err_msg=name)
    _assert_close(fast_out, call(loaded, *inputs).numpy(), f"{kind}: loaded folder output")


def test_ada_norm_zero_blocks_fall_back_to_the_class_forward(monkeypatch):
    """The fast block runs instead of ppdiffusers' forward; with chunked feed-forward (a branch it does not take) the
    class forward runs again, and both give the stock output."""
    from ppdiffusers.models.attention import BasicTransformerBlock

    model, inputs, call = _dit_transformer2d()
    _randomize(model)
    model.eval()
    calls = []
    stock_forward = BasicTransformerBlock.forward

    def counting_forward(self, *args, **kwargs):
        calls.append(1)
        return stock_forward(self, *args, **kwargs)

    monkeypatch.setattr(BasicTransformerBlock, "forward", counting_forward)
    blocks = len(model.transformer_blocks)
    with paddle.no_grad():
        out0 = call(model, *inputs).numpy()
        assert len(calls) == blocks
        assert apply_fast_ops(model, True)["ada_norm_zero"] == blocks
        _assert_close(out0, call(model, *inputs).numpy(), "fast ada_norm_zero blocks")
        assert len(calls) == blocks, "the swapped blocks must not call the class forward"
        for block in model.transformer_blocks:
            block.set_chunk_feed_forward(8, 1)  # 16 tokens in chunks of 8
        _assert_close(out0, call(model, *inputs).numpy(), "chunked feed-forward (class forward)")
        assert len(calls) == 2 * blocks, "chunked feed-forward goes to the class forward"


def test_gradient_checkpointing_and_frozen_parts():
    """--recompute re-runs the swapped forwards inside paddle's recompute; frozen layers (the SD text encoder /
    VAE) get no gradient and the input gradient is still right."""
    model, inputs, call = _dit()
    _randomize(model)
    model.eval()
    out0, grads0 = _run(model, inputs, call)
    apply_fast_ops(model, True)
    model.train()
    model.class_embedder.dropout_prob = 0.0  # training mode (recompute runs only there) without label dropout
    model.enable_gradient_checkpointing()
    out1, grads1 = _run(model, inputs, call)
    _assert_close(out0, out1, "DiT with recompute: output")
    for name in grads0:
        _assert_close(grads0[name], grads1[name], f"DiT with recompute: gradient of {name}")

    import paddle.nn as nn

    paddle.seed(0)
    frozen = nn.Linear(8, 5)
    for p in frozen.parameters():
        p.stop_gradient = True
    x = paddle.randn([3, 4, 8])
    x.stop_gradient = False
    expected = paddle.grad(nn.functional.linear(x, frozen.weight, frozen.bias).sum(), x)[0].numpy()
    apply_fast_ops(frozen, True)
    y = frozen(x)
    got = paddle.grad(y.sum(), x)[0].numpy()
    _assert_close(expected, got, "input gradient through a frozen Linear")
    assert frozen.weight.grad is None and frozen.bias.grad is None


def test_small_linear_keeps_the_class_forward(monkeypatch):
    """Below LINEAR_MIN_OUTPUT output elements the swapped Linear runs paddle's own path (the PyLayer would cost more)."""
    import paddle.nn as nn

    import common.fast_ops

    monkeypatch.setattr(common.fast_ops, "LINEAR_MIN_OUTPUT", 65536)
    calls = []
    function = common.fast_ops._linear_function()
    monkeypatch.setattr(function, "apply", lambda *a: calls.append(a) or nn.functional.linear(*a))
    layer = nn.Linear(16, 32)
    apply_fast_ops(layer, True)
    layer(paddle.randn([8, 16], dtype="float32").detach()).sum().backward()  # 8 x 32 outputs: class forward
    assert not calls
    layer(paddle.randn([4096, 16])).sum().backward()  # 4096 x 32 = 131072: the PyLayer
    assert len(calls) == 1


def test_dit_checkpoint_round_trip(tmp_path):
    from objective import load_model_folder, save_model_folder

    from models import load_model_config

    model, inputs, call = _dit()
    _randomize(model)
    model.eval()
    apply_fast_ops(model, True)
    cfg = load_model_config(os.path.join(REPO, "class_conditional", "config", "DiT_demo.json"))
    save_model_folder(model, cfg, str(tmp_path))
    loaded, _ = load_model_folder(str(tmp_path))  # a plain DiT: fast_broadcast off
    loaded.eval()
    assert not loaded.fast_broadcast and model.fast_broadcast
    _assert_close(call(model, *inputs).numpy(), call(loaded, *inputs).numpy(), "DiT folder round trip")


def test_opt_out_changes_nothing():
    model, inputs, call = _ddpm(False)
    model.eval()
    before = call(model, *inputs).numpy()
    state = apply_fast_ops(model, False)
    assert state["enabled"] is False and not state["stride_kernel_off"] and not any(state[k] for k in FAST_OPS if k != "stride_kernel_off")
    assert paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]
    assert not any(hasattr(layer, "_fast_ops_swap") or "forward" in vars(layer) for layer in model.sublayers(include_self=True))
    np.testing.assert_array_equal(before, call(model, *inputs).numpy())
    assert describe_fast_ops(state).startswith("fast ops off")


def test_gpu_is_left_alone(monkeypatch):
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:0")
    model, _, _ = _ddpm(False)
    assert not fast_ops_enabled(True)
    state = apply_fast_ops(model, True)
    assert not state["enabled"] and not any("forward" in vars(layer) for layer in model.sublayers(include_self=True))
    assert paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]


def test_apply_twice_pipeline_and_deepcopy(tmp_path):
    from ppdiffusers import DDPMPipeline, DDPMScheduler

    model, inputs, call = _ddpm(False)
    model.eval()
    first = apply_fast_ops(model, True)
    again = apply_fast_ops(model, True)
    assert first["conv_bias"] > 0 and again["conv_bias"] == 0, "a second call swaps nothing more"
    clone = copy.deepcopy(model)  # e.g. an EMA copy: its forwards are bound to the copy's own layers
    for layer in clone.sublayers(include_self=True):
        if "forward" in vars(layer):
            assert layer.forward.__self__ is layer
    np.testing.assert_allclose(call(model, *inputs).numpy(), call(clone, *inputs).numpy(), rtol=1e-6, atol=1e-6)

    pipe = DDPMPipeline(unet=_ddpm(False)[0], scheduler=DDPMScheduler(num_train_timesteps=10))
    state = apply_fast_ops(pipe, True)  # a pipeline: its layer components
    assert state["conv_bias"] > 0 and "forward" in vars(pipe.unet.conv_in)
    assert remove_fast_ops(pipe) == _swapped(state)


def test_lora_conv_falls_back_to_the_class_forward():
    from ppdiffusers.models.lora import LoRACompatibleConv, LoRAConv2dLayer

    paddle.seed(0)
    conv = LoRACompatibleConv(4, 6, 3, padding=1)
    apply_fast_ops(conv, True)
    x = paddle.randn([2, 4, 8, 8])
    plain = LoRACompatibleConv.forward(conv, x)
    _assert_close(plain.numpy(), conv(x).numpy(), "swapped LoRACompatibleConv without LoRA")
    conv.set_lora_layer(LoRAConv2dLayer(4, 6, rank=2, kernel_size=3, padding=1))
    for p in conv.lora_layer.parameters():
        p.set_value(paddle.randn(p.shape) * 0.1)
    np.testing.assert_array_equal(conv(x, 0.5).numpy(), LoRACompatibleConv.forward(conv, x, 0.5).numpy())


def test_bad_arguments_are_named():
    model, _, _ = _ddpm(False)
    with pytest.raises(ValueError, match="unknown op"):
        apply_fast_ops(model, True, ops=("conv_bias", "warp_drive"))
    with pytest.raises(ValueError, match="True or False"):
        apply_fast_ops(model, "maybe")
    with pytest.raises(TypeError, match="paddle.nn.Layer or a ppdiffusers pipeline"):
        apply_fast_ops(object(), True)
    assert parse_bool("False") is False and parse_bool("1") is True and parse_bool(True) is True


def test_scripts_read_the_flag():
    """--fast_ops defaults to True and --fast_ops False opts out, in the argparse and the dataclass scripts."""
    import argparse

    from paddlenlp.trainer import PdArgumentParser

    parser = add_fast_ops_argument(argparse.ArgumentParser())
    assert parser.parse_args([]).fast_ops is True
    assert parser.parse_args(["--fast_ops", "False"]).fast_ops is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--fast_ops", "sometimes"])

    import train_unconditional

    assert train_unconditional.parse_args(["--fast_ops", "false"]).fast_ops is False
    assert train_unconditional.parse_args([]).fast_ops is True
    from objective import ObjectiveArguments
    from sd_args import SDTrainingArguments

    (obj,) = PdArgumentParser((ObjectiveArguments,)).parse_args_into_dataclasses(["--fast_ops", "False"])
    assert obj.fast_ops is False
    (targs,) = PdArgumentParser((SDTrainingArguments,)).parse_args_into_dataclasses(["--output_dir", "/tmp/x"])
    assert targs.fast_ops is True
