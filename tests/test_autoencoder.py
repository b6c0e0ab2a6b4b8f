"""Tests for autoencoder/: VAE training (from scratch, warm start, frozen encoder, f8/f16,
GAN schedule, resume), the LPIPS loss, the CompVis converter and the demo launcher."""
import glob
import importlib.util
import json
import os
import shutil
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
AE_DIR = os.path.join(REPO_ROOT, "autoencoder")
sys.path.insert(0, AE_DIR)

import paddle  # noqa: E402

DEMO_CONFIG = os.path.join(AE_DIR, "config", "vae_demo.json")
F8F16_CONFIG = os.path.join(AE_DIR, "config", "vae.json")


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_vae = _load_module("train_vae", os.path.join(AE_DIR, "train_vae.py"))
convert_kl = _load_module("convert_kl_8_to_ppdiffusers", os.path.join(AE_DIR, "scripts", "convert_kl_8_to_ppdiffusers.py"))
import vae_losses  # noqa: E402
import vae_model  # noqa: E402


def _psnr(a, b):
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = float(np.mean((np.clip(a, -1, 1) - np.clip(b, -1, 1)) ** 2))
    return 10 * np.log10(4.0 / mse)


def _photo_tree(demo_root, root, held_out=2):
    """ImageNet-style tree ILSVRC2012_train/data/<class>/*.png from the bundled photos; the
    last ``held_out`` photos are kept out and returned."""
    photos = sorted(glob.glob(os.path.join(demo_root, "photos", "*.png")))
    data = os.path.join(root, "ILSVRC2012_train", "data")
    for i, path in enumerate(photos[:-held_out]):
        cls = os.path.join(data, f"n{i % 3:08d}")
        os.makedirs(cls, exist_ok=True)
        shutil.copy(path, cls)
    return photos[-held_out:]


def _train(out, *extra, dataset_root=None, steps=4, config=DEMO_CONFIG, resolution=32):
    args = ["--from_scratch", "--vae_config_file", config, "--dataset_type", "imagenet", "--imagenet_root", str(dataset_root),
            "--resolution", resolution, "--batch_size", 2, "--num_workers", 0, "--max_train_steps", steps, "--logging_steps", 1,
            "--image_logging_steps", 2, "--save_steps", 100, "--perceptual_weight", 0, "--disc_start", 1000, "--learning_rate", 1e-3,
            "--output_dir", str(out), "--seed", 3, *extra]
    return train_vae.main([str(a) for a in args])


def _state(folder):
    from ppdiffusers import AutoencoderKL

    return {k: v.numpy() for k, v in AutoencoderKL.from_pretrained(folder).state_dict().items()}


def _tiny_f8f16_config(tmp_path):
    """config/vae.json's block structure (4 down = f8, 5 up = f16) with tiny channels."""
    config = json.load(open(F8F16_CONFIG))
    config.update(block_out_channels=[8, 16, 16, 16], down_block_out_channels=[8, 16, 16, 16], up_block_out_channels=[8, 8, 8, 8, 16], norm_num_groups=4, layers_per_block=1)
    path = tmp_path / "tiny_f8f16.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def scratch_run(demo_root, tmp_path_factory):
    """Train the demo architecture from scratch on 16 bundled photos (30 steps)."""
    root = tmp_path_factory.mktemp("vae_scratch")
    held_out = _photo_tree(demo_root, root / "imagenet")
    out = root / "run"
    _train(out, "--batch_size", 4, "--logging_steps", 5, "--image_logging_steps", 15, "--min_crop_scale", 0.3, dataset_root=root / "imagenet", steps=30)
    return out, held_out


def test_from_scratch_loss_falls_and_psnr_improves(scratch_run):
    from PIL import Image
    from ppdiffusers import AutoencoderKL

    from common.images import pil_to_tensor_array

    out, held_out = scratch_run
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    first, last = records[0]["rec_loss"], records[-1]["rec_loss"]
    assert last < 0.75 * first, f"L1 reconstruction loss did not fall enough: {first:.4f} -> {last:.4f}"
    assert os.path.isfile(out / "samples" / "step-30.png") and os.path.isfile(out / "samples" / "step-15.png")  # the final grid, one mid-run

    # held-out photos: center crops (32 px) and zoomed crops, reconstructed with the posterior mode
    crops = []
    for path in held_out:
        im = Image.open(path).convert("RGB")
        s = min(im.size)
        crops.append(im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2)).resize((32, 32), Image.LANCZOS))
        crops.append(im.crop((0, 0, s // 2, s // 2)).resize((32, 32), Image.LANCZOS))
    x = paddle.to_tensor(np.stack([pil_to_tensor_array(c) for c in crops]))
    paddle.seed(3)
    untrained = AutoencoderKL.from_config(json.load(open(DEMO_CONFIG)))
    trained = AutoencoderKL.from_pretrained(str(out / "final"))
    with paddle.no_grad():
        before = _psnr(untrained(x, sample_posterior=False).sample.numpy(), x.numpy())
        after = _psnr(trained(x, sample_posterior=False).sample.numpy(), x.numpy())
    print(f"rec_loss {first:.4f} -> {last:.4f}; held-out PSNR {before:.2f} -> {after:.2f} dB")
    assert after > before + 3.0, f"held-out PSNR {before:.2f} dB (untrained) -> {after:.2f} dB (trained)"


def test_warm_start_ignore_keys_and_freeze_encoder(scratch_run, demo_root, tmp_path):
    out, _ = scratch_run
    source = _state(str(out / "final"))
    paddle.seed(123)
    vae, info = vae_model.build_vae(str(out / "final"), DEMO_CONFIG, from_scratch=False, ignore_keys=["decoder."])
    warm = {k: v.numpy() for k, v in vae.state_dict().items()}
    assert info["ignored"] and all(k.startswith("decoder.") for k in info["ignored"])
    for k in source:
        if k.startswith("decoder."):
            assert not np.array_equal(warm[k], source[k]) or source[k].std() == 0, f"{k} should be re-initialised"
        else:
            assert np.array_equal(warm[k], source[k]), f"{k} should come from the pretrained model"

    _photo_tree(demo_root, tmp_path / "imagenet")
    run = tmp_path / "frozen"
    train_vae.main([str(a) for a in ["--pretrained_model_name_or_path", out / "final", "--ignore_keys", "decoder.", "--vae_config_file", DEMO_CONFIG,
                                     "--freeze_encoder", "--dataset_type", "imagenet", "--imagenet_root", tmp_path / "imagenet", "--resolution", 32,
                                     "--batch_size", 2, "--num_workers", 0, "--max_train_steps", 3, "--logging_steps", 1, "--image_logging_steps", 3,
                                     "--save_steps", 100, "--perceptual_weight", 0, "--learning_rate", 1e-3, "--output_dir", run]])
    after = _state(str(run / "final"))
    for k in source:
        if k.startswith(("encoder.", "quant_conv.")):
            assert np.array_equal(after[k], source[k]), f"frozen {k} changed"
    changed = [k for k in source if k.startswith("decoder.") and not np.array_equal(after[k], warm[k])]
    assert changed, "decoder did not train"


def test_f8_encoder_f16_decoder_shapes(tmp_path):
    config = json.load(open(F8F16_CONFIG))
    assert train_vae.check_shapes(config, (256, 256), 512) == ((256, 256), (32, 32), (512, 512))
    with pytest.raises(ValueError, match="--input_size 256 256"):
        train_vae.check_shapes(config, None, 512)
    from ppdiffusers import AutoencoderKL

    vae = AutoencoderKL.from_config(json.load(open(_tiny_f8f16_config(tmp_path))))
    with paddle.no_grad():
        rec, mean, logvar = vae_model.VAEWithPosterior(vae)(paddle.rand([1, 3, 256, 256]) * 2 - 1)
    assert mean.shape == [1, 4, 32, 32] and logvar.shape == [1, 4, 32, 32]
    assert rec.shape == [1, 3, 512, 512]


def _disc_state(ckpt):
    from common.checkpoint import load_checkpoint

    state = load_checkpoint(str(ckpt))
    return state, {k: v.numpy() for k, v in state["loss"].items() if k.startswith("discriminator.")}


def test_disc_schedule_and_resume_restores_both_optimizers(demo_root, tmp_path):
    _photo_tree(demo_root, tmp_path / "imagenet")
    config = _tiny_f8f16_config(tmp_path)
    a = tmp_path / "a"
    common = ["--input_size", 16, 16, "--disc_start", 2, "--save_steps", 1]
    _train(a, *common, dataset_root=tmp_path / "imagenet", steps=4, config=config)
    (_, d1), (s2, d2), (_, d3) = (_disc_state(a / f"checkpoint-{i}") for i in (1, 2, 3))
    assert all(np.array_equal(d1[k], d2[k]) for k in d1), "discriminator changed before --disc_start"
    assert any(not np.array_equal(d2[k], d3[k]) for k in d2), "discriminator did not train after --disc_start"
    assert not any(k.endswith("moment1_0") for k in s2["opt_disc"]["state"]), "discriminator optimizer stepped before --disc_start"
    logged = [json.loads(line) for line in open(a / "metrics.jsonl")]
    assert "d_weight" not in logged[1] and np.isfinite(logged[3]["d_weight"]) and logged[3]["d_weight"] > 0

    b = tmp_path / "b"
    _train(b, *common, "--resume_from_checkpoint", a / "checkpoint-2", dataset_root=tmp_path / "imagenet", steps=4, config=config)
    sa, da = _disc_state(a / "checkpoint-4")
    sb, db = _disc_state(b / "checkpoint-4")
    for k in da:
        np.testing.assert_allclose(db[k], da[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for name in ("opt_ae", "opt_disc"):  # common.checkpoint.optimizer_state: slots by position in param_names
        oa, ob = sa[name], sb[name]
        assert len(oa["param_names"]) == len(ob["param_names"]) and any(k.endswith("moment1_0") for k in oa["state"])
        rename = dict(zip(oa["param_names"], ob["param_names"]))
        slots_a = {k: v for k, v in oa["state"].items() if hasattr(v, "numpy")}
        slots_b = {k: v for k, v in ob["state"].items() if hasattr(v, "numpy")}
        assert len(slots_a) == len(slots_b)
        for k, v in slots_a.items():
            p = max((n for n in rename if k.startswith(n + "_")), key=len)
            np.testing.assert_allclose(slots_b[rename[p] + k[len(p):]].numpy(), v.numpy(), rtol=1e-4, atol=1e-6, err_msg=f"{name}/{k}")
    va, vb = _state(str(a / "checkpoint-4")), _state(str(b / "checkpoint-4"))
    for k in va:
        np.testing.assert_allclose(vb[k], va[k], rtol=1e-4, atol=1e-6, err_msg=k)
    assert float(sb["loss"]["logvar"].numpy()[0]) == pytest.approx(float(sa["loss"]["logvar"].numpy()[0]), abs=1e-6)


def test_adaptive_weight_finite_positive():
    from ppdiffusers import AutoencoderKL

    paddle.seed(0)
    vae = AutoencoderKL.from_config(json.load(open(DEMO_CONFIG)))
    loss_fn = vae_losses.LPIPSWithDiscriminator(disc_start=0, perceptual_weight=0, disc_weight=0.5)
    x = paddle.rand([2, 3, 32, 32]) * 2 - 1
    rec, mean, logvar = vae_model.VAEWithPosterior(vae)(x)
    nll = paddle.abs(x - rec).sum()
    g_loss = -loss_fn.discriminator(rec).mean()
    w = vae_losses.adaptive_generator_weight(nll, g_loss, vae.decoder.conv_out.weight, 0.5)
    assert w.stop_gradient and np.isfinite(float(w)) and float(w) > 0
    loss, logs = loss_fn.generator_loss(x, rec, mean, logvar, global_step=0, last_layer=vae.decoder.conv_out.weight)
    assert np.isfinite(logs["d_weight"]) and logs["d_weight"] > 0
    loss.backward()
    assert vae.decoder.conv_out.weight.grad is not None


def test_lpips_loads_heads_and_carries_gradient(tmp_path):
    from paddle.vision.models import vgg16

    paddle.seed(0)
    path = tmp_path / "vgg16_features.pdparams"
    paddle.save({f"features.{k}": v for k, v in vgg16(pretrained=False, num_classes=0).features.state_dict().items()}, str(path))
    heads = paddle.load(vae_losses.lpips_heads_path())
    lpips = vae_losses.LPIPS(str(path))
    np.testing.assert_array_equal(lpips.lins[2].weight.numpy(), heads["lin2.model.1.weight"].numpy())
    x = paddle.rand([2, 3, 32, 32]) * 2 - 1
    y = paddle.rand([2, 3, 32, 32]) * 2 - 1
    assert float(lpips(x, x).sum()) == pytest.approx(0.0, abs=1e-6)
    assert float(lpips(x, y).min()) > 0

    loss_fn = vae_losses.LPIPSWithDiscriminator(disc_start=10, pixelloss_weight=0.0, perceptual_weight=1.0, lpips_backbone_path=str(path))
    assert not any(k.startswith("_lpips") or "features" in k for k in loss_fn.state_dict())
    rec = paddle.rand([2, 3, 32, 32]) * 2 - 1
    rec.stop_gradient = False
    zeros = paddle.zeros([2, 4, 8, 8])
    loss, logs = loss_fn.generator_loss(x, rec, zeros, zeros, global_step=0)
    loss.backward()
    assert logs["p_loss"] > 0 and rec.grad is not None and float(paddle.abs(rec.grad).sum()) > 0, "perceptual term has no gradient"


def test_lpips_missing_weights_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--perceptual_weight 0"):
        vae_losses.LPIPSWithDiscriminator(disc_start=0, perceptual_weight=1.0, lpips_backbone_path=str(tmp_path / "nope.pdparams"))


def test_clear_argument_errors(capsys):
    with pytest.raises(SystemExit):
        train_vae.parse_args(["--from_scratch"])
    assert "--from_scratch needs --vae_config_file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_vae.parse_args(["--from_scratch", "--vae_config_file", DEMO_CONFIG, "--logging_steps", "10", "--image_logging_steps", "25"])
    assert "must be a multiple of --logging_steps" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_train"):
        train_vae.main(["--from_scratch", "--vae_config_file", DEMO_CONFIG, "--dataset_type", "imagenet", "--imagenet_root", "/nonexistent",
                        "--resolution", "32", "--perceptual_weight", "0", "--output_dir", "/tmp/never_written"])


def _compvis_state(ch=32, ch_mult=(1, 2), num_res_blocks=1, z=4, out_ch=3, dec_mult=None, seed=0):
    """A synthetic CompVis/LDM AutoencoderKL state dict (names and shapes as in
    ldm/modules/diffusionmodules/model.py Encoder/Decoder), random values."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, cin, cout, k=3):
        sd[f"{name}.weight"] = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.1
        sd[f"{name}.bias"] = rng.standard_normal(cout).astype(np.float32) * 0.1

    def norm(name, c):
        sd[f"{name}.weight"] = 1 + rng.standard_normal(c).astype(np.float32) * 0.1
        sd[f"{name}.bias"] = rng.standard_normal(c).astype(np.float32) * 0.1

    def resblock(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def mid(prefix, c):
        resblock(f"{prefix}.mid.block_1", c, c)
        norm(f"{prefix}.mid.attn_1.norm", c)
        for n in ("q", "k", "v", "proj_out"):
            conv(f"{prefix}.mid.attn_1.{n}", c, c, 1)
        resblock(f"{prefix}.mid.block_2", c, c)

    conv("encoder.conv_in", 3, ch)
    cin = ch
    for i, m in enumerate(ch_mult):
        for j in range(num_res_blocks):
            resblock(f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
        if i != len(ch_mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin)
    mid("encoder", cin)
    norm("encoder.norm_out", cin)
    conv("encoder.conv_out", cin, 2 * z)
    dec_mult = dec_mult or ch_mult
    c = ch * dec_mult[-1]
    conv("decoder.conv_in", z, c)
    mid("decoder", c)
    for i in reversed(range(len(dec_mult))):
        for j in range(num_res_blocks + 1):
            resblock(f"decoder.up.{i}.block.{j}", c, ch * dec_mult[i])
            c = ch * dec_mult[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", c, c)
    norm("decoder.norm_out", c)
    conv("decoder.conv_out", c, out_ch)
    conv("quant_conv", 2 * z, 2 * z, 1)
    conv("post_quant_conv", z, z, 1)
    sd["loss.logvar"] = np.zeros((), np.float32)  # training-loss keys are dropped
    sd["loss.discriminator.main.0.weight"] = np.zeros((64, 3, 4, 4), np.float32)
    return sd


@pytest.mark.parametrize("dec_mult", [None, (1, 1, 2)])
def test_converter_maps_compvis_state_dict(tmp_path, dec_mult):
    from ppdiffusers import AutoencoderKL

    sd = _compvis_state(dec_mult=dec_mult)
    path = tmp_path / "kl.npz"
    np.savez(path, **sd)
    out = tmp_path / "converted"
    missing, unexpected = convert_kl.convert(str(path), str(out))
    assert missing == [] and unexpected == []
    vae = AutoencoderKL.from_pretrained(str(out))
    got = {k: v.numpy() for k, v in vae.state_dict().items()}
    n_up = len(dec_mult or (1, 2))
    np.testing.assert_array_equal(got["encoder.down_blocks.1.resnets.0.conv_shortcut.weight"], sd["encoder.down.1.block.0.nin_shortcut.weight"])
    np.testing.assert_array_equal(got[f"decoder.up_blocks.{n_up - 1}.resnets.1.conv1.weight"], sd["decoder.up.0.block.1.conv1.weight"])
    np.testing.assert_array_equal(got["decoder.up_blocks.0.upsamplers.0.conv.bias"], sd[f"decoder.up.{n_up - 1}.upsample.conv.bias"])
    np.testing.assert_array_equal(got["encoder.mid_block.attentions.0.to_q.weight"], sd["encoder.mid.attn_1.q.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(got["decoder.mid_block.resnets.1.norm2.bias"], sd["decoder.mid.block_2.norm2.bias"])
    with paddle.no_grad():
        rec = vae(paddle.zeros([1, 3, 16, 16]), sample_posterior=False).sample
    assert rec.shape == [1, 3, 16 * 2 ** (n_up - len((1, 2))), 16 * 2 ** (n_up - len((1, 2)))]


def test_demo_launcher_smoke(run_shell, demo_root, tmp_path):
    out = tmp_path / "demo"
    proc = run_shell("autoencoder/run_train_vae_demo.sh", "--logging_steps", "1", "--image_logging_steps", "2", "--calibrate_scaling_factor", "2",
                     env={"OUTPUT_DIR": str(out), "MAX_STEPS": "2", "BATCH_SIZE": "2", "SAVE_STEPS": "2", "NUM_WORKERS": "0"}, timeout=240, cwd=str(tmp_path))
    assert os.path.isfile(out / "final" / "config.json"), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert os.path.isfile(out / "checkpoint-2" / "training_state.pdparams")
    assert os.path.isfile(out / "samples" / "step-2.png")
    factor = json.load(open(out / "final" / "config.json"))["scaling_factor"]
    assert np.isfinite(factor) and factor > 0 and factor != json.load(open(DEMO_CONFIG))["scaling_factor"]


def test_two_process_launch_keeps_ranks_in_sync(launch_2proc, tmp_path):
    """Under paddle.distributed.launch (gloo on CPU) both ranks train on their shard and end with
    identical weights; only rank 0 writes."""
    out = tmp_path / "ddp"
    proc, log_dir = launch_2proc("autoencoder/train_vae.py", "--from_scratch", "--vae_config_file", DEMO_CONFIG, "--dataset_type", "text_image_pair",
                                 "--file_list", os.path.join(REPO_ROOT, "autoencoder/data/filelist/demo_train.filelist.list"), "--resolution", "32",
                                 "--batch_size", "2", "--num_workers", "0", "--max_train_steps", "3", "--logging_steps", "1", "--image_logging_steps", "3",
                                 "--save_steps", "3", "--perceptual_weight", "0", "--disc_start", "2", "--output_dir", out, timeout=300)
    from conftest import rank_checksums

    sums = rank_checksums(log_dir)
    assert sums[0] == pytest.approx(sums[1], rel=1e-6)
    assert os.path.isfile(out / "final" / "config.json") and os.path.isfile(out / "checkpoint-3" / "training_state.pdparams")


def _write_safetensors(path, arrays, dtype):
    """A .safetensors file written by hand (bf16 = the top 16 bits of float32, as torch stores it)."""
    header, blobs, offset = {}, [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a, np.float32)
        raw = (a.view(np.uint32) >> 16).astype("<u2").tobytes() if dtype == "BF16" else a.astype("<f2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + b"".join(blobs))


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_converter_reads_half_precision_safetensors_and_ema(tmp_path, dtype):
    from ppdiffusers import AutoencoderKL

    sd = {k: v for k, v in _compvis_state().items() if v.ndim}  # scalar loss.logvar aside
    path = tmp_path / "kl.safetensors"
    _write_safetensors(path, sd, dtype)
    convert_kl.convert(str(path), str(tmp_path / "half"))
    got = AutoencoderKL.from_pretrained(str(tmp_path / "half")).state_dict()["encoder.conv_in.weight"].numpy()
    ref = sd["encoder.conv_in.weight"]
    assert np.abs(got - ref).max() <= (2 ** -7 if dtype == "BF16" else 2 ** -10) * np.abs(ref).max() and np.abs(got - ref).max() > 0
    # a checkpoint with CompVis LitEma weights (names without dots): --use_ema picks them
    ema = {"model_ema." + k.replace(".", ""): v + 1.0 for k, v in sd.items() if not k.startswith("loss.")}
    np.savez(tmp_path / "ema.npz", **sd, **ema)
    convert_kl.convert(str(tmp_path / "ema.npz"), str(tmp_path / "ema"), use_ema=True)
    got = AutoencoderKL.from_pretrained(str(tmp_path / "ema")).state_dict()["encoder.conv_in.weight"].numpy()
    np.testing.assert_allclose(got, ref + 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="no model_ema"):
        convert_kl.convert(str(tmp_path / "half" / "../kl.safetensors"), str(tmp_path / "x"), use_ema=True)
    # a file already in ppdiffusers layout is named as such, not mis-converted
    import paddle as _paddle

    _paddle.save(AutoencoderKL.from_pretrained(str(tmp_path / "ema")).state_dict(), str(tmp_path / "done.pdparams"))
    with pytest.raises(ValueError, match="already in diffusers/ppdiffusers"):
        convert_kl.convert(str(tmp_path / "done.pdparams"), str(tmp_path / "y"))


REF_F16_REC = [-0.3264481, 0.731152, 0.8000752]
REF_F16_ABS_SUM = 1174.188


def test_converter_maps_attention_inside_levels_like_kl_f16(tmp_path):
    """kl-f16/kl-f32 configs put an AttnBlock after every resnet of some levels; they map onto
    ppdiffusers' AttnDownEncoderBlock2D / AttnUpDecoderBlock2D and compute CompVis' function."""
    from ppdiffusers import AutoencoderKL

    sd = _compvis_state()
    rng = np.random.default_rng(1)
    for side, level, blocks in (("encoder", "down", 1), ("decoder", "up", 2)):  # attention at the 8x8 level (ch 64)
        for j in range(blocks):
            p = f"{side}.{level}.1.attn.{j}"
            sd[p + ".norm.weight"], sd[p + ".norm.bias"] = np.ones(64, np.float32), np.zeros(64, np.float32)
            for n in ("q", "k", "v", "proj_out"):
                sd[f"{p}.{n}.weight"] = (rng.standard_normal((64, 64, 1, 1)) * 0.1).astype(np.float32)
                sd[f"{p}.{n}.bias"] = np.zeros(64, np.float32)
    np.savez(tmp_path / "f16.npz", **sd)
    convert_kl.convert(str(tmp_path / "f16.npz"), str(tmp_path / "out"))
    vae = AutoencoderKL.from_pretrained(str(tmp_path / "out"))
    assert vae.config.down_block_types == ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]
    assert vae.config.up_block_types == ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"]
    got = vae.state_dict()
    np.testing.assert_array_equal(got["decoder.up_blocks.0.attentions.1.to_k.weight"].numpy(), sd["decoder.up.1.attn.1.k.weight"][:, :, 0, 0].T)
    # CompVis ldm/modules/diffusionmodules/model.py Encoder/Decoder (attn_resolutions=[8], resolution 16)
    # with these weights, posterior mean decoded, run in a torch venv: rec[0,0,0,0], rec[1,2,7,9], rec[0,1,15,15], sum |rec|
    x = paddle.to_tensor(np.random.RandomState(0).standard_normal((2, 3, 16, 16)).astype(np.float32))
    with paddle.no_grad():
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.numpy()
    np.testing.assert_allclose([rec[0, 0, 0, 0], rec[1, 2, 7, 9], rec[0, 1, 15, 15]], REF_F16_REC, atol=2e-5)
    assert abs(float(np.abs(rec).sum()) / REF_F16_ABS_SUM - 1) < 1e-5
