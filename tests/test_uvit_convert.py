"""ldm_uvit/convert_official_uvit.py: official U-ViT (baofff/U-ViT ``libs/uvit_t2i.py``) state dicts
-> the ldm_uvit model folder -> generate_pipelines.py -> LDMTextToImagePipeline / infer.py.

No torch here: the official-layout state dicts are built with numpy under the official names and
shapes (the converter's table, which is pinned against the official model below) and saved as
.npz / .safetensors.  ``OFFICIAL_TINY_*`` are outputs of the official ``UViT.forward`` itself.
"""
import importlib.util
import json
import os
import sys
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LDM_UVIT = os.path.join(REPO_ROOT, "ldm_uvit")

# ppdiffusers config of a tiny U-ViT; the official equivalent is UViT(img_size=8, patch_size=2, in_chans=4,
# embed_dim=32, depth=4, num_heads=2, mlp_ratio=4, qkv_bias=False, mlp_time_embed=False, clip_dim=64,
# num_clip_token=8, conv=True).  clip_dim 64 / 8 tokens / 4 channels fit the demo text encoder and VAE.
TINY = dict(sample_size=8, in_channels=4, out_channels=4, patch_size=2, num_layers=4, num_attention_heads=2, attention_head_dim=16,
            mlp_ratio=4.0, qkv_bias=False, qk_scale=None, clip_dim=64, num_text_tokens=8, conv=True)

# Official forward of that tiny UViT with random_official_state(seed 0) on official_inputs(batch 3):
# baofff/U-ViT libs/uvit_t2i.py (HEAD ce55170), torch 2.13 CPU float32 ('flash' attention mode),
# y.reshape(-1)[::37]; the official float64 forward differs from these by at most 1.4e-6.
OFFICIAL_TINY_STRIDED = [
    0.4544433355331421, 2.0089032649993896, -0.21594847738742828, -0.6121482253074646, -0.7478337287902832,
    -0.8176566958427429, 1.4952820539474487, 0.7170056104660034, -0.6273908019065857, -0.5738293528556824,
    -0.4659474194049835, -0.8460404872894287, 0.029177621006965637, -0.032923623919487, 0.05579427629709244,
    1.2027677297592163, 0.6432265043258667, 0.32316720485687256, -0.48984047770500183, -0.34553754329681396,
    0.8351545333862305,
]
OFFICIAL_TINY_SUM, OFFICIAL_TINY_ABSMEAN = 1.249267214909196, 0.7815362811088562


def random_official_state(shapes, seed=0):
    """Reproducible random weights under the official names: each tensor from its own seeded stream."""
    out = {}
    for name, shape in shapes.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        x = rng.standard_normal(shape)
        if name == "pos_embed":
            x = 0.5 * x
        elif len(shape) == 1:
            x = 1.0 + 0.1 * x if name.endswith(".weight") else 0.1 * x
        else:
            x = x / np.sqrt(np.prod(shape[1:]))
        out[name] = x.astype(np.float32)
    return out


def official_inputs(config, batch=3, seed=1234):
    """(latents, official timesteps n, text features) as float32 / int64 numpy arrays."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, config["in_channels"], config["sample_size"], config["sample_size"])).astype(np.float32)
    ctx = rng.standard_normal((batch, config["num_text_tokens"], config["clip_dim"])).astype(np.float32)
    return x, np.array([1, 500, 999, 250][:batch], dtype=np.int64), ctx


def _import(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mods():
    saved = list(sys.path)
    sys.path.insert(0, LDM_UVIT)
    try:
        conv = _import("ldm_uvit_convert_official_uvit", os.path.join(LDM_UVIT, "convert_official_uvit.py"))
        generate = _import("ldm_uvit_generate_pipelines", os.path.join(LDM_UVIT, "generate_pipelines.py"))
        infer = _import("ldm_uvit_infer", os.path.join(LDM_UVIT, "infer.py"))
        import uvit_ldm_unet
        import uvit_text_encoder
        import uvit_trainer
    finally:
        sys.path[:] = saved
    return SimpleNamespace(conv=conv, generate=generate, infer=infer, unet=uvit_ldm_unet, text=uvit_text_encoder, trainer=uvit_trainer)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, mods):
    """The tiny official state dict as .npz and .safetensors, plus the config file."""
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("uvit_official")
    state = random_official_state(mods.conv.official_shapes(TINY))
    np.savez(root / "nnet.npz", **state)
    save_file(state, str(root / "nnet.safetensors"))
    (root / "tiny.json").write_text(json.dumps({"_class_name": "UViTT2IModel", **TINY}))
    return SimpleNamespace(root=root, state=state, config=str(root / "tiny.json"))


def test_official_table_is_the_official_layout(mods):
    """Key counts, parameter counts and shapes of the official models (measured on libs/uvit_t2i.UViT)."""
    conv = mods.conv
    tiny = conv.official_shapes(TINY)
    assert len(tiny) == 70 and sum(int(np.prod(s)) for s in tiny.values()) == 71364
    assert tiny["pos_embed"] == (1, 1 + 8 + 16, 32) and tiny["patch_embed.proj.weight"] == (32, 4, 2, 2)
    assert tiny["in_blocks.1.attn.qkv.weight"] == (96, 32) and "in_blocks.1.attn.qkv.bias" not in tiny
    assert tiny["out_blocks.1.skip_linear.weight"] == (32, 64) and "in_blocks.0.skip_linear.weight" not in tiny
    assert tiny["decoder_pred.weight"] == (16, 32) and tiny["final_layer.weight"] == (4, 4, 3, 3)
    assert not any(k.startswith("time_embed") for k in tiny)  # mlp_time_embed=False: an nn.Identity
    # the default config is the official MS-COCO U-ViT-S/2 deep (configs/mscoco_uvit_small.py, depth=16)
    deep = mods.trainer.load_unet_config(conv.DEFAULT_UNET_CONFIG)
    shapes = conv.official_shapes(deep)
    assert len(shapes) == 214 and sum(int(np.prod(s)) for s in shapes.values()) == 58345636
    assert shapes["pos_embed"] == (1, 1 + 77 + 256, 512) and shapes["context_embed.weight"] == (512, 768)
    small = conv.official_shapes(dict(deep, num_layers=12))  # mscoco_uvit_small.pth
    assert len(small) == 166 and sum(int(np.prod(s)) for s in small.values()) == 44692644
    assert conv.ppdiffusers_name("mid_block.mlp.fc1.weight", 2) == ("mid_block.mlp.fc1.weight", True)
    assert conv.ppdiffusers_name("patch_embed.proj.weight", 4)[1] is False and conv.ppdiffusers_name("norm.weight", 1)[1] is False


@pytest.mark.parametrize("ext", ["npz", "safetensors"])
def test_round_trip_lands_every_tensor(tmp_path, mods, tiny_files, ext):
    import paddle

    out = tmp_path / "model"
    mods.conv.main(["--model_weights", str(tiny_files.root / f"nnet.{ext}"), "--output_dir", str(out), "--unet_config_file", tiny_files.config])
    saved = paddle.load(str(out / "model_state.pdparams"))
    assert sorted(saved) == sorted(f"unet.{k}" for k in tiny_files.state)
    transposed = 0
    for name, value in tiny_files.state.items():
        got = saved[f"unet.{name}"].numpy()
        if value.ndim == 2:  # every 2-D official tensor is an nn.Linear weight: (out, in) -> (in, out)
            assert name.endswith(".weight")
            np.testing.assert_array_equal(got, value.T, err_msg=name)
            transposed += 1
        else:
            np.testing.assert_array_equal(got, value, err_msg=name)
    assert transposed == 1 + 4 * 5 + 2 + 1  # context_embed, (qkv, proj, fc1, fc2) x 5 blocks, 2 skip_linear, decoder_pred
    config = json.loads((out / "unet_config.json").read_text())
    assert config["_class_name"] == "UViTT2IModel" and {k: config[k] for k in TINY} == TINY and config["timestep_offset"] == 1
    run = json.loads((out / "ldm_uvit_args.json").read_text())
    assert run["scaling_factor"] == pytest.approx(0.23010) and run["model_max_length"] == 8
    assert run["vae_name_or_path"] == "runwayml/stable-diffusion-v1-5/vae" and run["converted_from"].endswith(f"nnet.{ext}")


def test_converted_model_computes_the_official_function(tmp_path, mods, tiny_files):
    import paddle
    from ppdiffusers import UViTT2IModel

    out = tmp_path / "model"
    mods.conv.convert(str(tiny_files.root / "nnet.npz"), str(out), unet_config_file=tiny_files.config)
    config = mods.trainer.load_unet_config(str(out / "unet_config.json"))
    unet = mods.generate.load_unet(str(out / "model_state.pdparams"), config, use_ema=False)  # what the export loads
    x, t, ctx = official_inputs(TINY)
    with paddle.no_grad():
        # the pipeline's step t is official U-ViT's noise level n = t + 1 (timestep_offset 1 in the written config)
        assert unet.config.timestep_offset == 1
        y = unet(paddle.to_tensor(x), paddle.to_tensor(t) - 1, encoder_hidden_states=paddle.to_tensor(ctx)).sample.numpy()
        # reference: the numpy arrays straight into ppdiffusers' UViTT2IModel (Linear weights transposed by hand)
        ref = UViTT2IModel(**TINY)
        ref.set_state_dict({k: paddle.to_tensor(v.T if v.ndim == 2 else v) for k, v in tiny_files.state.items()})
        ref.eval()
        y_ref = ref(paddle.to_tensor(x), paddle.to_tensor(t), paddle.to_tensor(ctx)).sample.numpy()
    np.testing.assert_array_equal(y, y_ref)
    # the official libs/uvit_t2i.UViT forward on the same weights and inputs (pinned above)
    np.testing.assert_allclose(y.reshape(-1)[::37], OFFICIAL_TINY_STRIDED, rtol=0, atol=2e-5)
    assert float(y.astype(np.float64).sum()) == pytest.approx(OFFICIAL_TINY_SUM, abs=2e-4)
    assert float(np.abs(y).mean()) == pytest.approx(OFFICIAL_TINY_ABSMEAN, abs=1e-6)


def test_bad_files_fail_naming_the_keys(tmp_path, mods, tiny_files):
    conv = mods.conv
    config = mods.trainer.load_unet_config(tiny_files.config)
    state = dict(tiny_files.state)
    bad = dict(state)
    bad.pop("mid_block.attn.proj.bias")
    bad["extra.weight"] = np.zeros((2, 2), np.float32)
    bad["norm.weight"] = np.zeros(31, np.float32)
    with pytest.raises(ValueError, match=r"x.npz.*1 missing \['mid_block.attn.proj.bias'\], 1 unexpected \['extra.weight'\], "
                                         r"1 wrong shapes \['norm.weight: \(31,\) vs \(32,\)'\]"):
        conv.convert_state_dict(bad, config, "x.npz")
    with pytest.raises(ValueError, match=r"time_embed.0.weight.*mlp_time_embed=True"):
        conv.convert_state_dict(dict(state, **{"time_embed.0.weight": np.zeros((128, 32), np.float32)}), config, "t.npz")
    no_skip = {k: v for k, v in state.items() if ".skip_linear." not in k}
    with pytest.raises(ValueError, match="skip=False"):
        conv.convert_state_dict(no_skip, config, "s.npz")
    assert sorted(conv.convert_state_dict({f"module.{k}": v for k, v in state.items()}, config)) == sorted(state)  # DataParallel prefix

    # sizes: the default (small-deep) config against the tiny weights lists every differing field ...
    npz = str(tiny_files.root / "nnet.npz")
    with pytest.raises(ValueError, match=r"nnet.npz' does not fit --unet_config_file: embed_dim: config 512, weights 32, .*"
                                         r"clip_dim: config 768, weights 64, num_layers: config 16, weights 4.*--fit_config_to_weights"):
        conv.convert(npz, str(tmp_path / "a"))
    # ... and fitting cannot guess the text length: pos_embed's 25 positions are not 1 + 77 + a square
    with pytest.raises(ValueError, match=r"pos_embed has 25 positions.*num_text_tokens \(77"):
        conv.convert(npz, str(tmp_path / "a"), fit_config_to_weights=True)
    # a config that differs only in depth converts with --fit_config_to_weights (mscoco_uvit_small.pth vs the deep config)
    deeper = tmp_path / "deeper.json"
    deeper.write_text(json.dumps(dict(TINY, num_layers=8)))
    with pytest.raises(ValueError, match="num_layers: config 8, weights 4"):
        conv.convert(npz, str(tmp_path / "b"), unet_config_file=str(deeper))
    conv.convert(npz, str(tmp_path / "b"), unet_config_file=str(deeper), fit_config_to_weights=True)
    assert json.loads((tmp_path / "b" / "unet_config.json").read_text())["num_layers"] == 4
    with pytest.raises(FileExistsError, match="--overwrite"):
        conv.convert(npz, str(tmp_path / "b"), unet_config_file=tiny_files.config)
    with pytest.raises(FileNotFoundError, match=r"--model_weights 'missing.pth' does not exist"):
        conv.convert("missing.pth", str(tmp_path / "c"), unet_config_file=tiny_files.config)
    with pytest.raises(FileNotFoundError, match="--unet_config_file 'nope.json' not found"):
        conv.convert(npz, str(tmp_path / "c"), unet_config_file="nope.json")


def test_generate_pipelines_and_infer_take_the_converted_folder(tmp_path, monkeypatch, mods, tiny_files):
    import paddle
    from ppdiffusers import LDMTextToImagePipeline

    monkeypatch.setenv("PPDIFFUSERS_MODULES_CACHE", str(tmp_path / "modules"))
    model = tmp_path / "model"
    mods.conv.convert(str(tiny_files.root / "nnet.safetensors"), str(model), unet_config_file=tiny_files.config, vae_name_or_path="random")
    mods.text.build_demo_text_encoder(["a handwritten digit seven", "the number 7 written by hand"], str(tmp_path / "te"), 8)
    pipe_dir = tmp_path / "pipeline"
    monkeypatch.setattr(sys, "argv", ["generate_pipelines.py", "--model_file", str(model / "model_state.pdparams"), "--use_ema", "False",
                                      "--output_path", str(pipe_dir), "--text_encoder_name_or_path", str(tmp_path / "te"),
                                      "--tokenizer_name_or_path", str(tmp_path / "te")])
    mods.generate.main()  # the VAE (random) and the scale factor come from ldm_uvit_args.json
    pipe = LDMTextToImagePipeline.from_pretrained(str(pipe_dir))
    assert type(pipe.unet).__name__ == "LDMUViTT2IModel" and pipe.unet.config.timestep_offset == 1
    assert pipe.vqvae.config.scaling_factor == pytest.approx(0.23010)  # U-ViT's COCO latent scale, not the VAE's 0.18215
    x, t, ctx = official_inputs(TINY)
    with paddle.no_grad():
        y = pipe.unet(paddle.to_tensor(x), paddle.to_tensor(t) - 1, encoder_hidden_states=paddle.to_tensor(ctx)).sample.numpy()  # step t = official n - 1
    np.testing.assert_allclose(y.reshape(-1)[::37], OFFICIAL_TINY_STRIDED, rtol=0, atol=2e-5)

    png = tmp_path / "sample.png"
    monkeypatch.setattr(sys, "argv", ["infer.py", "--model_name_or_path", str(pipe_dir), "--prompt", "a handwritten digit seven",
                                      "--num_inference_steps", "2", "--output", str(png)])
    mods.infer.main()
    from PIL import Image

    assert Image.open(png).size == (32, 32)  # 8x8 latents through the f4 demo VAE
