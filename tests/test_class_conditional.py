"""class_conditional/: DiT (Gaussian diffusion, learned sigma) and SiT (transport) on digit features."""
import json
import math
import os
import re
import shutil
import sys

import numpy as np
import paddle
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CC = "class_conditional"
sys.path.insert(0, os.path.join(REPO, CC))  # its modules by plain name, as its scripts import them

from diffusion import create_diffusion, space_timesteps  # noqa: E402
from diffusion.losses import discretized_gaussian_log_likelihood, normal_kl  # noqa: E402
from features import FeatureDataset  # noqa: E402
from models import DiT, count_parameters, load_model_config  # noqa: E402
from transport import DIFFUSION_FORMS, Sampler, create_transport, integrate_ode  # noqa: E402
TINY = {"model_type": "DiT", "input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 64, "depth": 2,
        "num_heads": 2, "class_dropout_prob": 0.1, "num_classes": 1000, "learn_sigma": True}


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


@pytest.fixture(scope="module")
def work(tmp_path_factory, demo_root):
    """Digit features (8 images per class, image + flip latents) and tiny DiT/SiT configs."""
    root = tmp_path_factory.mktemp("cc")
    images = root / "digits"
    for c in range(10):
        src = os.path.join(demo_root, "digits", str(c))
        (images / str(c)).mkdir(parents=True)
        for name in sorted(os.listdir(src))[:8]:
            shutil.copy(os.path.join(src, name), images / str(c) / name)
    import importlib.util

    spec = importlib.util.spec_from_file_location("cc_extract", os.path.join(REPO, CC, "extract_features.py"))
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    extract.main(["--data_path", str(images), "--feature_path", str(root / "features"), "--image_size", "32",
                  "--vae_name_or_path", "random", "--batch_size", "40"])
    return {"root": root, "features": str(root / "features"), "dit": _write_json(root / "dit.json", TINY),
            "sit": _write_json(root / "sit.json", dict(TINY, model_type="SiT"))}


def tiny_model():
    return DiT(**{k: v for k, v in TINY.items() if k != "model_type"})


def _losses_from_log(text):
    return [float(v) for v in re.findall(r"step \d+ loss=([0-9.eE+-]+)", text)]


# ---------------------------------------------------------------- features and bad input
def test_features_layout_and_flip(work):
    ds = FeatureDataset(work["features"])
    assert len(ds) == 80 and ds.class_names == [str(i) for i in range(10)]
    raw = np.load(os.path.join(work["features"], "imagenet256_features", "0.npy"))
    assert raw.shape == (2, 4, 8, 8) and raw.dtype == np.float32
    assert not np.allclose(raw[0], raw[1])  # the flipped image has its own latent
    lab = np.load(os.path.join(work["features"], "imagenet256_labels", "0.npy"))
    assert lab.dtype == np.int64 and lab.shape == (1,)
    picks = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        s = ds[0]
        assert s["latents"].shape == (4, 8, 8) and s["class_labels"].dtype == np.int64
        picks.add(int(np.allclose(s["latents"], raw[1])))
    assert picks == {0, 1}  # both variants are used across epochs
    no_flip = FeatureDataset(work["features"], random_flip=False)  # --random_flip False (the digits demo)
    for epoch in range(8):
        no_flip.set_epoch(epoch)
        np.testing.assert_array_equal(no_flip[0]["latents"], raw[0])


def test_bad_inputs_raise_clear_errors(work, tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet256_features"):
        FeatureDataset(str(tmp_path / "nowhere"))
    bad = tmp_path / "bad"
    shutil.copytree(work["features"], bad)
    os.remove(bad / "imagenet256_labels" / "3.npy")
    with pytest.raises(ValueError, match="80 feature files but 79 label files"):
        FeatureDataset(str(bad))
    with pytest.raises(ValueError, match="unknown config key"):
        load_model_config(_write_json(tmp_path / "c.json", dict(TINY, hiden_size=3)))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        load_model_config(_write_json(tmp_path / "c2.json", dict(TINY, patch_size=3)))
    with pytest.raises(FileNotFoundError, match="--config_file"):
        load_model_config(str(tmp_path / "missing.json"))


def test_paper_configs_load():
    sizes = {"DiT_XL_patch2": (1152, 28, 16), "DiT_L_patch4": (1024, 24, 16), "DiT_B_patch4": (768, 12, 12),
             "DiT_S_patch4": (384, 12, 6), "SiT_XL_patch2": (1152, 28, 16)}
    for name, (h, d, n) in sizes.items():
        cfg = load_model_config(os.path.join(REPO, CC, "config", f"{name}.json"))
        assert (cfg["hidden_size"], cfg["depth"], cfg["num_heads"]) == (h, d, n)
        assert cfg["learn_sigma"] and cfg["class_dropout_prob"] == 0.1 and cfg["model_type"] == name[:3]


# ---------------------------------------------------------------- model
def test_dit_matches_ppdiffusers_transformer2d():
    from models.export import export_error, to_transformer2d

    for shift in (1, 0):
        paddle.seed(0)
        cfg = dict(TINY, mlp_ratio=4.0, downscale_freq_shift=shift)
        model = DiT(**{k: v for k, v in cfg.items() if k != "model_type"})
        for p in model.parameters():  # leave the zero init so the comparison is not trivial
            p.set_value(paddle.randn(p.shape) * 0.05)
        model.eval()
        target = to_transformer2d(model, cfg)
        x, t, y = paddle.randn([3, 4, 8, 8]), paddle.to_tensor([0, 500, 999]), paddle.to_tensor([1, 7, 1000])
        a = model(x, t, y)
        b = target(x, timestep=t, class_labels=y).sample
        assert a.shape == [3, 8, 8, 8]
        err, scale = export_error(model, target, cfg)
        if shift == 1:  # the shift ppdiffusers hard-codes: exact export
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
            assert err < 1e-5
        else:  # official DiT embedding: the export differs, and export_error says by how much
            assert float((a - b).abs().max()) > 1e-3 and err > 1e-3 and scale > 0
    with pytest.raises(ValueError, match="expects latents of shape"):
        model(paddle.randn([1, 4, 16, 16]), t[:1], y[:1])


# ---------------------------------------------------------------- DiT diffusion
def test_vb_term_nonnegative_and_edge_cases():
    paddle.seed(0)
    d = create_diffusion("")
    x0 = paddle.uniform([6, 4, 8, 8], min=-1, max=1)
    t = paddle.to_tensor([0, 1, 2, 500, 998, 999])
    noise = paddle.randn(x0.shape)
    xt = d.q_sample(x0, t, noise)
    for v in (-1.0, 0.0, 1.0):  # variance at both ends of the learned range and in between
        out = paddle.concat([noise + 0.1 * paddle.randn(x0.shape), paddle.full(x0.shape, v)], axis=1)
        vb = d.vb_terms_bpd(out, x0, xt, t)["output"]
        assert np.isfinite(vb.numpy()).all() and (vb.numpy() >= 0).all()
    # exact eps at t > 0 with the posterior variance (v = -1): KL vanishes
    exact = paddle.concat([noise, paddle.full(x0.shape, -1.0)], axis=1)
    vb = d.vb_terms_bpd(exact, x0, xt, t)["output"].numpy()
    assert np.abs(vb[1:]).max() < 1e-3
    z = paddle.zeros([2, 3])
    assert float(normal_kl(z, z, z, z).abs().max()) == 0.0
    ll = discretized_gaussian_log_likelihood(paddle.to_tensor([-1.0, 0.0, 1.0]), paddle.zeros([3]), paddle.full([3], -30.0))
    assert np.isfinite(ll.numpy()).all() and (ll.numpy() <= 0).all()


def test_training_losses_contract():
    paddle.seed(0)
    model = tiny_model()
    d = create_diffusion("")
    out = d.training_losses(model, paddle.randn([4, 4, 8, 8]), {"y": paddle.to_tensor([0, 1, 2, 3])})
    assert out["loss"].shape == [] and (out["vb"].numpy() >= 0).all() and np.isfinite(out["mse"].numpy()).all()
    out["loss"].backward()
    assert model.proj_out_2.weight.grad is not None


def test_respacing_maps_timesteps():
    assert space_timesteps(1000, "ddim25") == set(range(0, 1000, 40))
    s250 = sorted(space_timesteps(1000, "250"))
    assert len(s250) == 250 and s250[0] == 0 and s250[-1] == 999
    sections = sorted(space_timesteps(300, "2,3,4"))
    assert sections == [0, 99, 100, 150, 199, 200, 233, 266, 299]  # even strides per section, ends included
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")
    base, spaced = create_diffusion(""), create_diffusion("ddim25")
    kept = np.arange(0, 1000, 40)
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-10)  # same marginals q(x_t | x_0)
    seen = []

    def spy(x, t, y):
        seen.append(t.numpy().tolist())
        return paddle.zeros([x.shape[0], 8] + x.shape[2:])

    spaced.ddim_sample_loop(spy, [1, 4, 8, 8], {"y": paddle.to_tensor([0])})
    assert [s[0] for s in seen] == list(kept[::-1])  # the model sees the original step numbers


# ---------------------------------------------------------------- SiT transport
def _path_closed_form(path_type, t):
    """(alpha, d alpha, sigma, d sigma) written out by hand for each SiT path."""
    if path_type == "Linear":
        return t, 1.0, 1 - t, -1.0
    if path_type == "GVP":
        c = math.pi / 2
        return math.sin(c * t), c * math.cos(c * t), math.cos(c * t), -c * math.sin(c * t)
    lmc = -0.25 * (1 - t) ** 2 * 19.9 - 0.5 * (1 - t) * 0.1
    dlmc = 0.5 * (1 - t) * 19.9 + 0.05
    a = math.exp(lmc)
    s = math.sqrt(1 - a * a)
    return a, a * dlmc, s, -a * a * dlmc / s


@pytest.mark.parametrize("path_type", ["Linear", "GVP", "VP"])
def test_paths_at_t0_and_t1(path_type):
    tr = create_transport(path_type)
    x0, x1 = paddle.randn([2, 4, 3, 3]), paddle.randn([2, 4, 3, 3])  # noise, data
    # VP reaches the data only in the limit (sigma' -> -inf at t = 1): check it at 1 - 1e-3
    for t in (0.0, 0.5, 1.0 if path_type != "VP" else 1 - 1e-3):
        a, da, s, ds = _path_closed_form(path_type, t)
        _, xt, ut = tr.path.plan(paddle.full([2], t), x0, x1)
        np.testing.assert_allclose(xt.numpy(), (a * x1 + s * x0).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ut.numpy(), (da * x1 + ds * x0).numpy(), rtol=1e-3, atol=1e-4)
    if path_type != "VP":  # t = 0 is pure noise, t = 1 the data
        np.testing.assert_allclose(tr.path.plan(paddle.full([2], 0.0), x0, x1)[1].numpy(), x0.numpy(), atol=1e-6)
        np.testing.assert_allclose(tr.path.plan(paddle.full([2], 1.0), x0, x1)[1].numpy(), x1.numpy(), atol=1e-6)
    else:
        assert _path_closed_form("VP", 0.0)[0] < 0.01  # alpha_0 ~ 0.0066: almost pure noise
    # u_t is the time derivative of x_t (central difference at an interior time)
    h, tc = 1e-2, 0.5
    plus = tr.path.plan(paddle.full([2], tc + h), x0, x1)[1]
    minus = tr.path.plan(paddle.full([2], tc - h), x0, x1)[1]
    np.testing.assert_allclose(tr.path.plan(paddle.full([2], tc), x0, x1)[2].numpy(), ((plus - minus) / (2 * h)).numpy(), rtol=2e-2, atol=2e-2)
    # score <-> velocity consistency at an interior time: v = drift_x + D * score
    t = paddle.full([2], 0.4)
    score = paddle.randn(x0.shape)
    dx, dvar = tr.path.compute_drift(x0, t)
    v = dx + dvar * score
    np.testing.assert_allclose(tr.path.score_from_velocity(v, x0, t).numpy(), score.numpy(), atol=1e-3)


def test_transport_losses_all_options():
    paddle.seed(0)
    model = tiny_model()
    x, y = paddle.randn([3, 4, 8, 8]), {"y": paddle.to_tensor([1, 2, 3])}
    for path_type in ("Linear", "GVP", "VP"):
        for prediction in ("velocity", "score", "noise"):
            for weight in (None, "velocity", "likelihood"):
                out = create_transport(path_type, prediction, weight).training_losses(model, x, y)
                assert out["loss"].shape == [] and math.isfinite(float(out["loss"]))
    with pytest.raises(ValueError, match="path_type"):
        create_transport("Cosine")


def test_ode_solvers_match_closed_form():
    lam = -1.3
    x0 = paddle.to_tensor([1.0, -2.0, 0.5])
    exact = x0.numpy() * math.exp(lam)
    f = lambda x, t: lam * x  # noqa: E731
    err = {m: np.abs(integrate_ode(f, x0, 0.0, 1.0, m, num_steps=51, atol=1e-9, rtol=1e-9).numpy() - exact).max() for m in ("euler", "heun", "dopri5")}
    assert err["euler"] < 3e-2 and err["heun"] < 1e-4 and err["dopri5"] < 1e-5 and err["heun"] < err["euler"] / 50
    # time-dependent linear ODE dx/dt = 2 t x  ->  x(1) = x(0) e
    g = lambda x, t: 2 * t * x  # noqa: E731
    assert np.abs(integrate_ode(g, x0, 0.0, 1.0, "dopri5", atol=1e-9, rtol=1e-9).numpy() - x0.numpy() * math.e).max() < 1e-5
    # the same through the Sampler: a velocity "model" lam * x
    linear_model = lambda x, t, y: paddle.concat([lam * x, x], axis=1)  # noqa: E731
    for method in ("euler", "heun", "dopri5"):
        xi = paddle.randn([2, 4, 2, 2])
        out = Sampler(create_transport("Linear")).sample_ode(method, num_steps=101)(xi, linear_model, y=None)
        np.testing.assert_allclose(out.numpy(), xi.numpy() * math.exp(lam), rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("method", ["Euler", "Heun"])
def test_sde_samplers_shapes_and_finite(method):
    paddle.seed(0)
    model = lambda x, t, y: paddle.concat([0.5 * x, x], axis=1)  # noqa: E731
    for path_type, prediction in (("Linear", "velocity"), ("GVP", "score"), ("VP", "noise")):
        sampler = Sampler(create_transport(path_type, prediction))
        for form in DIFFUSION_FORMS:
            for last in ("Mean", "Tweedie", "Euler", None):
                out = sampler.sample_sde(method, form, last_step=last, num_steps=6)(paddle.randn([2, 4, 3, 3]), model, y=None)
                assert out.shape == [2, 4, 3, 3] and np.isfinite(out.numpy()).all(), (path_type, form, last)
    with pytest.raises(ValueError, match="diffusion_form"):
        Sampler(create_transport()).sample_sde(method, "cubic")


# ---------------------------------------------------------------- faithful to the official code
# Reference numbers below were computed by running the official PyTorch code (facebookresearch/DiT
# `diffusion.create_diffusion` and `models.DiT`, willisma/SiT `transport.Sampler.sample_sde`,
# torch 2.13 CPU, fp32) on the same numpy-generated inputs, in a scratch venv outside the repo.
# torch is not a dependency: only the numbers are kept.

def test_fixed_variance_matches_dit_create_diffusion():
    # DiT create_diffusion("", learn_sigma=False[, sigma_small=True]).p_mean_variance(...)["log_variance"]
    # at t = 0, 1, 500, 999: FIXED_LARGE is DiT's default, FIXED_SMALL only with sigma_small=True
    ref = {False: [-9.816725, -9.028687, -4.599192, -3.912023], True: [-9.816725, -9.816725, -4.60005, -3.912024]}
    for small, expected in ref.items():
        d = create_diffusion("", learn_sigma=False, sigma_small=small)
        out = d.p_mean_variance(paddle.zeros([4, 1, 1, 1]), paddle.zeros([4, 1, 1, 1]), paddle.to_tensor([0, 1, 500, 999]))
        np.testing.assert_allclose(out["log_variance"].numpy().ravel(), expected, rtol=1e-5)


def _fixed_loss_inputs():
    rng = np.random.RandomState(0)
    x_start = rng.standard_normal((4, 4, 2, 2)).astype(np.float32)
    noise = rng.standard_normal((4, 4, 2, 2)).astype(np.float32)
    out = rng.standard_normal((4, 8, 2, 2)).astype(np.float32)
    out[:, 4:] = np.tanh(out[:, 4:])
    return x_start, noise, out


def test_vb_term_matches_dit_on_respaced_diffusion():
    # DiT create_diffusion(resp, rescale_learned_sigmas=r).training_losses(fixed model output, t=[0, 3, 100, 249])
    ref = {("250", False): [1.746305, 0.9365577, 0.1001037, 0.1101715],
           ("250", True): [0.4365763, 0.2341394, 0.02502593, 0.02754287],  # = 250/1000 x the default
           ("", False): [1.705581, 0.579047, 0.04950327, 0.01405011]}
    ref_mse = [0.4616205, 2.042173, 3.392547, 1.817413]
    x_start, noise, out = _fixed_loss_inputs()
    for (resp, rescale), vb in ref.items():
        d = create_diffusion(resp, rescale_learned_sigmas=rescale)
        terms = d.training_losses(lambda x, t, **k: paddle.to_tensor(out), paddle.to_tensor(x_start),
                                  t=paddle.to_tensor([0, 3, 100, 249]), noise=paddle.to_tensor(noise))
        np.testing.assert_allclose(terms["vb"].numpy(), vb, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(terms["mse"].numpy(), ref_mse, rtol=1e-5)
        assert abs(float(terms["loss"]) - float(np.mean(np.add(vb, ref_mse)))) < 1e-5


def test_timestep_embedding_is_the_official_one():
    # DiT TimestepEmbedder.timestep_embedding(t, 256)[:, [0, 1, 64, 127, 128, 129, 200, 255]] at t = 0, 500, 999
    ref = [[1, 1, 1, 1, 0, 0, 0, 0],
           [-0.8838493, 0.9459457, 0.2836622, 0.9985569, -0.4677718, 0.3243249, 0.3239357, 0.05370453],
           [0.9996498, 0.9637853, -0.8444698, 0.9942431, -0.02646075, -0.2666794, -0.6173711, 0.1071472]]
    emb = tiny_model().time_proj(paddle.to_tensor([0.0, 500.0, 999.0])).numpy()[:, [0, 1, 64, 127, 128, 129, 200, 255]]
    np.testing.assert_allclose(emb, ref, atol=2e-5)


OFFICIAL_SMALL = dict(TINY, num_classes=10, num_heads=4, mlp_ratio=4.0, downscale_freq_shift=0)


def _official_small_model(shift=0):
    """The official-layout state dict the reference run used: N(0, 0.2^2) arrays drawn in sorted key
    order from RandomState(1) (pos_embed is the fixed sin-cos table), mapped into the project's DiT."""
    from models.official import from_official_state_dict, official_shapes

    shapes = official_shapes(OFFICIAL_SMALL)
    rng = np.random.RandomState(1)
    sd = {k: (rng.standard_normal(shapes[k]) * 0.2).astype(np.float32) for k in sorted(shapes) if k != "pos_embed"}
    model = DiT(**{k: v for k, v in dict(OFFICIAL_SMALL, downscale_freq_shift=shift).items() if k != "model_type"})
    mapped = from_official_state_dict(sd, OFFICIAL_SMALL)
    assert sorted(mapped) == sorted(model.state_dict())
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in mapped.items()})
    model.eval()
    return model, sd


def test_official_layout_weights_compute_the_official_dit():
    model, sd = _official_small_model()
    x = paddle.to_tensor(np.random.RandomState(2).standard_normal((3, 4, 8, 8)).astype(np.float32))
    out = model(x, paddle.to_tensor([0.0, 500.0, 999.0]), paddle.to_tensor([1, 5, 10])).numpy()
    # official models.DiT(...)(x, t, y) with the same weights: four entries and the L1 norm (max |out| 27.5)
    np.testing.assert_allclose([out[0, 0, 0, 0], out[1, 3, 4, 5], out[2, 7, 7, 7], out[2, 1, 2, 3]],
                               [7.266665, 6.42087, -4.107111, 1.284629], atol=2e-3)
    assert abs(float(np.abs(out).sum()) / 9637.701 - 1) < 1e-5
    # official forward_with_cfg(scale 4): guidance on the first 3 channels only
    xx = paddle.concat([x[:2], x[:2]])
    t, y = paddle.to_tensor([10.0, 700.0, 10.0, 700.0]), paddle.to_tensor([1, 5, 10, 10])
    cfg = model.forward_with_cfg(xx, t, y, 4.0).numpy()
    np.testing.assert_allclose([cfg[0, 0, 0, 0], cfg[1, 3, 4, 5], cfg[3, 2, 1, 0], cfg[0, 5, 1, 1]],
                               [-3.977724, 2.560325, -12.26787, 4.333035], atol=2e-3)
    assert abs(float(np.abs(cfg).sum()) / 13068.24 - 1) < 1e-5
    all_channels = model.forward_with_cfg(xx, t, y, 4.0, cfg_channels=None).numpy()
    np.testing.assert_allclose(all_channels[:, :3], cfg[:, :3], atol=1e-5)
    assert np.abs(all_channels[:, 3] - cfg[:, 3]).max() > 0.1  # channel 3 guided only on request
    with pytest.raises(ValueError, match="cfg_channels"):
        model.forward_with_cfg(xx, t, y, 4.0, cfg_channels=5)
    # ppdiffusers' frequency shift 1 is a different function
    shifted, _ = _official_small_model(shift=1)
    assert np.abs(shifted(x, paddle.to_tensor([0.0, 500.0, 999.0]), paddle.to_tensor([1, 5, 10])).numpy() - out).max() > 1.0
    # a wrong layout is refused with every key named, never half-loaded
    from models.official import from_official_state_dict

    bad = dict(sd)
    bad.pop("blocks.0.attn.qkv.weight")
    bad["blocks.0.attn.extra"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"1 missing \['blocks.0.attn.qkv.weight'\], 1 unexpected \['blocks.0.attn.extra'\]"):
        from_official_state_dict(bad, OFFICIAL_SMALL)


def test_qkv_init_matches_the_fused_official_matrix():
    # official DiT-S width: xavier_uniform on the fused (3D x D) qkv weight has std 0.03608 (torch, seed 0);
    # per-matrix xavier (the old init) gives sqrt(1/D) = 0.051
    paddle.seed(0)
    model = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=384, depth=2, num_heads=6, num_classes=10)
    a = model.transformer_blocks[0].attn1
    w = paddle.concat([a.to_q.weight, a.to_k.weight, a.to_v.weight], axis=1)
    assert abs(float(w.std()) - 0.03608) < 0.001
    assert abs(float(a.to_out[0].weight.std()) - (1 / 384) ** 0.5) < 0.002


def test_official_checkpoints_convert_to_model_folder_and_pipeline(tmp_path, monkeypatch, caplog):
    """--model_weights + --model_name: an official-layout file (here .npz and a train.py-style
    {"model", "ema"} .pdparams) becomes the project's model folder, and a DiT also a DiTPipeline."""
    import importlib.util
    import logging

    from models import official
    from objective import load_model_folder

    spec = importlib.util.spec_from_file_location("convert_dit2", os.path.join(REPO, CC, "tools", "convert_dit_to_ppdiffusers.py"))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    cfgs = {"DiT-T/2": _write_json(tmp_path / "dit_t.json", OFFICIAL_SMALL), "SiT-T/2": _write_json(tmp_path / "sit_t.json", dict(OFFICIAL_SMALL, model_type="SiT"))}
    monkeypatch.setattr(official, "OFFICIAL_MODEL_CONFIGS", cfgs)
    shapes = official.official_shapes(dict(OFFICIAL_SMALL, input_size=32))
    rng = np.random.RandomState(3)
    sd = {k: (rng.standard_normal(v) * 0.1).astype(np.float32) for k, v in sorted(shapes.items()) if k != "pos_embed"}
    np.savez(tmp_path / "dit.npz", **sd)
    with caplog.at_level(logging.WARNING):
        out = conv.convert(None, str(tmp_path / "pipe"), "random", os.path.join(REPO, CC, "tools", "digits_id2label.json"),
                           model_weights=str(tmp_path / "dit.npz"), model_name="DiT-T/2")
    assert "differs from the trained model by up to" in caplog.text  # official shift 0 vs Transformer2DModel's 1
    model, cfg = load_model_folder(out)  # finds <out>/dit_model/
    assert cfg["input_size"] == 32 and cfg["downscale_freq_shift"] == 0
    np.testing.assert_array_equal(model.state_dict()["transformer_blocks.1.attn1.to_k.weight"].numpy(),
                                  sd["blocks.1.attn.qkv.weight"][64:128].T)
    assert os.path.isfile(os.path.join(out, "model_index.json"))
    # a train.py checkpoint: the EMA weights are taken, like the official find_model
    paddle.save({"model": {k: paddle.to_tensor(v * 0) for k, v in sd.items()}, "ema": {k: paddle.to_tensor(v) for k, v in sd.items()}},
                str(tmp_path / "ckpt.pdparams"))
    out2 = conv.convert(None, str(tmp_path / "sit"), "random", None, model_weights=str(tmp_path / "ckpt.pdparams"), model_name="SiT-T/2")
    sit, sit_cfg = load_model_folder(out2)
    assert sit_cfg["model_type"] == "SiT" and not os.path.exists(os.path.join(out2, "model_index.json"))
    np.testing.assert_array_equal(sit.state_dict()["proj_out_2.weight"].numpy(), sd["final_layer.linear.weight"].T)
    with pytest.raises(ValueError, match="--model_name 'DiT-Q/9'"):
        conv.convert(None, str(tmp_path / "x"), model_weights=str(tmp_path / "dit.npz"), model_name="DiT-Q/9")
    with pytest.raises(ValueError, match="exactly one of"):
        conv.convert(str(tmp_path), str(tmp_path / "x"), model_weights=str(tmp_path / "dit.npz"), model_name="DiT-T/2")


def test_model_folder_with_wrong_keys_fails_loudly(tmp_path):
    from objective import MODEL_WEIGHTS, load_model_folder, save_model_folder

    model = tiny_model()
    save_model_folder(model, dict(TINY), str(tmp_path))
    state = paddle.load(str(tmp_path / MODEL_WEIGHTS))
    state = {("module." + k): v for k, v in state.items()}  # e.g. a DataParallel prefix
    paddle.save(state, str(tmp_path / MODEL_WEIGHTS))
    with pytest.raises(ValueError, match=r"missing \['class_embedder.embedding_table.weight'.*unexpected \['module."):
        load_model_folder(str(tmp_path))


# willisma/SiT Sampler.sample_sde(num_steps=5): distinct model-evaluation times, and whether SiT's
# own result is finite. Where SiT's arithmetic is infinite (NaN), the project moves that end by 1e-3.
SIT_SDE_TIMES = [
    (("Linear", "velocity", "sigma", "Euler", "Mean", 0.04), [0.0, 0.24, 0.48, 0.72, 0.96], True),
    (("Linear", "velocity", "sigma", "Heun", "Mean", 0.04), [0.0, 0.24, 0.48, 0.72, 0.96], True),
    (("VP", "velocity", "SBDM", "Euler", "Mean", 0.04), [0.0, 0.24, 0.48, 0.72, 0.96], True),
    (("VP", "noise", "SBDM", "Euler", "Tweedie", 0.04), [0.0, 0.24, 0.48, 0.72, 0.96], True),
    (("Linear", "noise", "SBDM", "Euler", "Mean", 0.04), [0.001, 0.24075, 0.4805, 0.72025, 0.96], True),
    (("GVP", "velocity", "sigma", "Heun", None, 0.04), [0.0, 0.25, 0.5, 0.75, 1.0], True),
    (("GVP", "score", "sigma", "Euler", "Euler", 0.04), [0.001, 0.24075, 0.4805, 0.72025, 0.96], True),
    (("Linear", "velocity", "SBDM", "Euler", "Mean", 0.04), [0.0, 0.24, 0.48, 0.72, 0.96], False),
    (("GVP", "velocity", "SBDM", "Euler", "Mean", 0.04), [0.0, 0.24, 0.48, 0.72, 0.96], False),
    (("Linear", "velocity", "sigma", "Heun", None, 0.04), [0.0, 0.25, 0.5, 0.75, 1.0], False),
    (("Linear", "velocity", "sigma", "Euler", "Mean", 0.0), [0.0, 0.25, 0.5, 0.75, 1.0], False),
]


@pytest.mark.parametrize("case,times,sit_finite", SIT_SDE_TIMES, ids=lambda v: str(v))
def test_sde_evaluation_times_match_sit(case, times, sit_finite):
    path_type, prediction, form, method, last, size = case
    calls = []

    def model(x, t, **kw):
        if not calls or calls[-1] != round(float(t[0]), 6):
            calls.append(round(float(t[0]), 6))
        return -0.5 * x

    run = Sampler(create_transport(path_type, prediction)).sample_sde(method, form, last_step=last, last_step_size=size, num_steps=5)
    out = run(paddle.full([1, 1, 1, 1], 0.3), model)
    assert np.isfinite(out.numpy()).all()
    if sit_finite:
        np.testing.assert_allclose(calls, times, atol=1e-6)
    else:  # only the singular end differs, by SDE_MIN_EPS
        np.testing.assert_allclose(calls[1:-1], np.linspace(calls[0], calls[-1], 5)[1:-1], atol=1e-6)
        moved = [abs(a - b) for a, b in zip(calls, times)]
        assert np.isclose(max(moved[0], moved[-1]), 1e-3, atol=1e-6) and (moved[0] < 1e-9 or moved[-1] < 1e-9), (calls, times)


# ---------------------------------------------------------------- training scripts and launchers
def _trainer_env(work, out, config, steps):
    return {"NPROC": "1", "CONFIG_FILE": config, "OUTPUT_DIR": out, "FEATURE_PATH": work["features"],
            "BATCH_SIZE": "16", "NUM_WORKERS": "0", "MAX_STEPS": str(steps), "LOGGING_STEPS": "5", "SAVE_STEPS": str(steps // 2),
            "VAE": "random", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dit_trainer_run(work, tmp_path_factory):
    """0_run_train_dit_trainer.sh for 30 steps with EMA (the default; checkpoints at 15 and 30) and
    a class grid every 20 steps, launched from a folder outside the repo."""
    import subprocess

    out = str(tmp_path_factory.mktemp("dit_trainer"))
    env = dict(os.environ, **_trainer_env(work, out, work["dit"], 30), IMAGE_LOGGING_STEPS="20", NUM_INFERENCE_STEPS="2")
    proc = subprocess.run(["sh", os.path.join(REPO, CC, "0_run_train_dit_trainer.sh"), "--learning_rate", "2e-3"], cwd=str(work["root"]), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _assert_final_folders(out, ema_folder, raw_weights, prefix=""):
    """final/ holds the EMA weights (= the last checkpoint's dit_ema/), final_raw/ the trained weights
    (``raw_weights``: the last checkpoint's state dict, keys with ``prefix``); they differ."""
    final = paddle.load(os.path.join(out, "final", "model_state.pdparams"))
    raw = paddle.load(os.path.join(out, "final_raw", "model_state.pdparams"))
    ema = paddle.load(os.path.join(ema_folder, "model_state.pdparams"))
    assert final.keys() == raw.keys() == ema.keys()
    for k in final:
        np.testing.assert_array_equal(final[k].numpy(), ema[k].numpy(), err_msg=k)
        np.testing.assert_array_equal(raw[k].numpy(), raw_weights[prefix + k].numpy(), err_msg=k)
    assert any(not np.array_equal(final[k].numpy(), raw[k].numpy()) for k in final)
    assert load_model_config(os.path.join(out, "final", "model_config.json")) == load_model_config(os.path.join(out, "final_raw", "model_config.json"))


def test_dit_trainer_writes_grids_and_final_folders(dit_trainer_run):
    """--image_logging_steps 20 over 30 steps: grids of steps 20 and 30 (the last), one column per
    digit; final/ = EMA weights, final_raw/ = trained weights (the same layout as the plain loop)."""
    from PIL import Image

    assert sorted(os.listdir(os.path.join(dit_trainer_run, "samples"))) == ["step-20.png", "step-30.png"]
    with Image.open(os.path.join(dit_trainer_run, "samples", "step-30.png")) as im:
        assert im.size[0] > 9 * im.size[1]  # 10 classes in one row
    ck = os.path.join(dit_trainer_run, "checkpoint-30")
    _assert_final_folders(dit_trainer_run, os.path.join(ck, "dit_ema"), paddle.load(os.path.join(ck, "model_state.pdparams")), "transformer.")


def test_dit_trainer_loss_falls_and_ema_checkpoint(dit_trainer_run):
    with open(os.path.join(dit_trainer_run, "checkpoint-30", "trainer_state.json")) as f:
        losses = [h["loss"] for h in json.load(f)["log_history"] if "loss" in h]
    assert len(losses) >= 5 and losses[-1] < 0.6 * losses[0], losses
    for step in (15, 30):
        ck = os.path.join(dit_trainer_run, f"checkpoint-{step}")
        assert os.path.isfile(os.path.join(ck, "ema_state.pdparams")) and os.path.isfile(os.path.join(ck, "dit_ema", "model_state.pdparams"))


def test_dit_trainer_resume_restores_ema_and_step(dit_trainer_run, run_shell, work):
    """Resume from checkpoint-30 for one more step: the step counter continues (31) and the EMA
    update of step 31 starts from the SAVED EMA: ema31 = ema30 - (1 - d)(ema30 - w31) with
    ppdiffusers' warm-up decay d = (1 + 31) / (10 + 31).  A fresh EMA would start from w30 at d = 0."""
    out = os.path.join(dit_trainer_run, "resumed")
    shutil.copytree(os.path.join(dit_trainer_run, "checkpoint-30"), os.path.join(out, "checkpoint-30"))
    env = _trainer_env(work, out, work["dit"], 31)
    env["SAVE_STEPS"] = "31"
    run_shell(f"{CC}/0_run_train_dit_trainer.sh", "--learning_rate", "2e-3", "--resume_from_checkpoint", "latest", env=env)
    ck30, ck31 = os.path.join(out, "checkpoint-30"), os.path.join(out, "checkpoint-31")
    with open(os.path.join(ck31, "trainer_state.json")) as f:
        assert json.load(f)["global_step"] == 31
    assert paddle.load(os.path.join(ck31, "ema_state.pdparams"))["optimization_step"] == 31
    ema30 = paddle.load(os.path.join(ck30, "dit_ema", "model_state.pdparams"))
    ema31 = paddle.load(os.path.join(ck31, "dit_ema", "model_state.pdparams"))
    w31 = paddle.load(os.path.join(ck31, "model_state.pdparams"))
    d = 32 / 41
    for k in ema30:
        expected = ema30[k].numpy() - (1 - d) * (ema30[k].numpy() - w31["transformer." + k].numpy())
        np.testing.assert_allclose(ema31[k].numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=k)


def test_dit_trainer_resume_at_epoch_boundary_continues_exactly(dit_trainer_run, run_shell, work):
    """checkpoint-15 ends an epoch (80 features / batch 16 = 5 steps per epoch).  Resuming it to
    step 30 must reproduce the uninterrupted run's weights and EMA at step 30: same noise,
    timesteps and label dropout, i.e. the Trainer's RNG states are restored (ResumeRNGCallback)."""
    out = os.path.join(dit_trainer_run, "resumed15")
    shutil.copytree(os.path.join(dit_trainer_run, "checkpoint-15"), os.path.join(out, "checkpoint-15"))
    run_shell(f"{CC}/0_run_train_dit_trainer.sh", "--learning_rate", "2e-3", "--resume_from_checkpoint", "latest",
              env=_trainer_env(work, out, work["dit"], 30))
    for name in ("model_state.pdparams", os.path.join("dit_ema", "model_state.pdparams")):
        a = paddle.load(os.path.join(dit_trainer_run, "checkpoint-30", name))
        b = paddle.load(os.path.join(out, "checkpoint-30", name))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{name}: {k}")


def test_convert_to_ditpipeline_and_sample(dit_trainer_run, tmp_path):
    from ppdiffusers import DiTPipeline

    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_dit", os.path.join(REPO, CC, "tools", "convert_dit_to_ppdiffusers.py"))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    out = conv.convert(os.path.join(dit_trainer_run, "checkpoint-30"), str(tmp_path / "pipe"), "random",
                       os.path.join(REPO, CC, "tools", "digits_id2label.json"))
    for sub in ("transformer", "vae", "scheduler", "model_index.json"):
        assert os.path.exists(os.path.join(out, sub))
    pipe = DiTPipeline.from_pretrained(out)
    assert pipe.get_label_ids(["seven", "zero"]) == [7, 0]
    with pytest.raises(ValueError):
        pipe.get_label_ids(["eleven"])
    images = pipe(class_labels=[7, 0], num_inference_steps=4, generator=paddle.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (32, 32)
    # infer_demo_dit.py: names and ids, one column per class, --num_images_per_class rows
    import subprocess
    from PIL import Image

    grid = tmp_path / "grid.png"
    proc = subprocess.run([sys.executable, os.path.join(REPO, CC, "infer_demo_dit.py"), "--pipeline", out, "--class_labels", "seven", "0", "3",
                           "--num_images_per_class", "2", "--num_inference_steps", "2", "--output", str(grid)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "classes [7, 0, 3]" in proc.stderr + proc.stdout
    with Image.open(grid) as im:
        assert im.size[0] > im.size[1] > 0 and abs(im.size[0] / im.size[1] - 3 / 2) < 0.1  # 3 columns x 2 rows of squares
    imagenet = os.path.join(REPO, CC, "tools", "ImageNet_id2label.json")
    with open(imagenet) as f:
        names = json.load(f)
    assert "golden retriever" in [n.strip() for n in names["207"].split(",")]


def _loop_env(work, config, out, steps, save_steps):
    return {"NPROC": "1", "CONFIG_FILE": config, "OUTPUT_DIR": out, "FEATURE_PATH": work["features"], "BATCH_SIZE": "16",
            "NUM_WORKERS": "0", "MAX_STEPS": str(steps), "LOGGING_STEPS": "5", "SAVE_STEPS": str(save_steps),
            "VAE": "random", "OMP_NUM_THREADS": "1"}


def test_notrainer_loss_falls_and_resume_continues_exactly(work, tmp_path, run_shell):
    """1_run_train_dit_notrainer.sh: loss falls; resuming checkpoint-10 reproduces step 20 exactly."""
    extra = ["--learning_rate", "2e-3", "--num_inference_steps", "2"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    proc = run_shell(f"{CC}/1_run_train_dit_notrainer.sh", *extra, "--image_logging_steps", "15", env=_loop_env(work, work["dit"], a, 20, 10))
    losses = _losses_from_log(proc.stderr)
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0], losses
    assert sorted(os.listdir(os.path.join(a, "samples"))) == ["step-15.png", "step-20.png"]  # every 15 steps and the last
    ck20 = os.path.join(a, "checkpoint-20")
    _assert_final_folders(a, os.path.join(ck20, "dit_ema"), paddle.load(os.path.join(ck20, "training_state.pdparams"))["model"])
    run_shell(f"{CC}/1_run_train_dit_notrainer.sh", *extra, "--resume_from_checkpoint", os.path.join(a, "checkpoint-10"),
              env=_loop_env(work, work["dit"], b, 20, 100))
    sa = paddle.load(os.path.join(a, "checkpoint-20", "training_state.pdparams"))
    sb = paddle.load(os.path.join(b, "checkpoint-20", "training_state.pdparams"))
    assert sa["step"] == sb["step"] == 20
    for part in ("model", "ema"):
        for k, v in sa[part].items():
            if hasattr(v, "numpy"):
                np.testing.assert_allclose(v.numpy(), sb[part][k].numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{part}.{k}")
    assert sa["ema"]["optimization_step"] == 20
    # resuming another model's checkpoint (another width) fails naming the checkpoint and the keys
    wide = _write_json(tmp_path / "wide.json", dict(TINY, hidden_size=96))
    proc = run_shell(f"{CC}/1_run_train_dit_notrainer.sh", *extra, "--resume_from_checkpoint", os.path.join(a, "checkpoint-10"),
                     env=_loop_env(work, wide, str(tmp_path / "c"), 20, 100), check=False)
    assert proc.returncode != 0 and "checkpoint-10" in proc.stderr and "wrong shapes" in proc.stderr, proc.stderr[-2000:]


def test_fine_tune_from_a_pretrained_model_folder(work, tmp_path, run_shell):
    """--pretrained_model_name_or_path: training starts from the folder's weights (step-1 loss of the
    fine-tuned run far below a fresh run's), and a folder of another size is refused by name."""
    from objective import build_transformer

    extra = ["--learning_rate", "2e-3", "--num_inference_steps", "2", "--log_every", "1"]
    a = str(tmp_path / "a")
    first = _losses_from_log(run_shell(f"{CC}/1_run_train_dit_notrainer.sh", *extra, env=_loop_env(work, work["dit"], a, 20, 100)).stderr)
    tuned = _losses_from_log(run_shell(f"{CC}/1_run_train_dit_notrainer.sh", *extra, "--pretrained_model_name_or_path", os.path.join(a, "final"),
                                       env=_loop_env(work, work["dit"], str(tmp_path / "b"), 2, 100)).stderr)
    assert tuned[0] < 0.6 * first[0], (first, tuned)
    wide = type("A", (), {"pretrained_model_name_or_path": os.path.join(a, "final")})
    with pytest.raises(ValueError, match=r"hidden_size 64 \(pretrained\) vs 96"):
        build_transformer(dict(load_model_config(work["dit"]), hidden_size=96, num_heads=2), wide)


def test_sit_launchers_and_two_process_run(work, tmp_path, run_shell, launch_2proc):
    env = _trainer_env(work, str(tmp_path / "sit_trainer"), work["sit"], 4)
    env.update(PATH_TYPE="GVP", PREDICTION="score", LOSS_WEIGHT="likelihood")
    run_shell(f"{CC}/2_run_train_sit_trainer.sh", env=env)
    assert os.path.isfile(os.path.join(tmp_path, "sit_trainer", "final", "model_state.pdparams"))
    # the plain loop in 2 processes, each rank printing its local loss (a spy on Transport.training_losses)
    script = os.path.join(REPO, CC, "train_image_generation_notrainer.py")
    spy = tmp_path / "spy_losses.py"
    spy.write_text(f"""import os, runpy, sys
sys.path[:0] = [{REPO!r}, {os.path.join(REPO, CC)!r}]
import common.bootstrap  # noqa
import transport
_losses = transport.Transport.training_losses
def _spy(self, *a, **k):
    out = _losses(self, *a, **k)
    print("local loss", os.environ.get("PADDLE_TRAINER_ID", "0"), repr(float(out["loss"])), flush=True)
    return out
transport.Transport.training_losses = _spy
sys.argv = [{script!r}] + sys.argv[1:]
runpy.run_path({script!r}, run_name="__main__")
""")
    proc, log_dir = launch_2proc(str(spy), "--config_file", work["sit"], "--feature_path", work["features"],
                                 "--results_dir", str(tmp_path / "sit2"), "--global_batch_size", "16", "--num_workers", "0", "--max_steps", "4",
                                 "--log_every", "2", "--ckpt_every", "4", "--vae_name_or_path", "random", "--num_inference_steps", "2",
                                 env={"OMP_NUM_THREADS": "1"})
    state = paddle.load(os.path.join(tmp_path, "sit2", "checkpoint-4", "training_state.pdparams"))
    assert state["step"] == 4 and len(state["rng"]) == 2
    # the logged loss is the mean over both ranks and the 2 steps of the window (DiT's all-reduce), not rank 0's own
    local = {r: [float(v) for v in re.findall(rf"local loss {r} (\S+)", (log_dir / f"workerlog.{r}").read_text())] for r in (0, 1)}
    assert len(local[0]) == len(local[1]) == 4, local
    logged = _losses_from_log((log_dir / "workerlog.0").read_text())
    assert len(logged) == 2
    for k, value in enumerate(logged):
        both = np.mean(local[0][2 * k:2 * k + 2] + local[1][2 * k:2 * k + 2])
        rank0 = np.mean(local[0][2 * k:2 * k + 2])
        assert abs(value - both) <= 6e-4 * both and abs(rank0 - both) > 2e-3 * both, (value, both, rank0)


def test_sit_notrainer_launcher(work, tmp_path, run_shell):
    out = str(tmp_path / "sit_loop")
    env = _loop_env(work, work["sit"], out, 4, 4)
    env.update(PATH_TYPE="VP", PREDICTION="noise", LOSS_WEIGHT="velocity")
    run_shell(f"{CC}/3_run_train_sit_notrainer.sh", "--num_inference_steps", "2", "--image_logging_steps", "4", env=env)
    assert os.path.isfile(os.path.join(out, "checkpoint-4", "dit_ema", "model_config.json"))
    assert os.listdir(os.path.join(out, "samples")) == ["step-4.png"]  # the periodic grid of the last step, written once
    args = paddle.load(os.path.join(out, "checkpoint-4", "training_state.pdparams"))["args"]
    assert (args["path_type"], args["prediction"], args["loss_weight"]) == ("VP", "noise", "velocity")


def test_sit_sampling_end_to_end(work):
    from objective import sample_latents

    paddle.seed(0)
    model = tiny_model()
    tr = create_transport("Linear")
    for sampler in ("euler", "dopri5", "sde"):
        z = sample_latents(model, "SiT", [1, 2, 3], num_steps=4, cfg_scale=2.0, transport=tr, sampler=sampler)
        assert z.shape == [3, 4, 8, 8] and np.isfinite(z.numpy()).all()
    assert count_parameters(model) > 0


def test_sampling_scripts_and_model_type_checks(tmp_path, run_script):
    """infer_demo_sit.py samples a SiT model folder into one grid and refuses a DiT one;
    sample_ddp.py writes one PNG per sample plus the .npz of them, and refuses SiT flags for a DiT."""
    from PIL import Image

    from objective import save_model_folder

    paddle.seed(0)
    dit, sit = str(tmp_path / "dit"), str(tmp_path / "sit")
    save_model_folder(tiny_model(), dict(TINY), dit)
    save_model_folder(tiny_model(), dict(TINY, model_type="SiT"), sit)
    env = {"OMP_NUM_THREADS": "1"}
    grid = tmp_path / "sit.png"
    run_script(f"{CC}/infer_demo_sit.py", "--model_path", sit, "--vae_name_or_path", "random", "--class_labels", "1", "2", "3",
               "--sampling_method", "euler", "--num_sampling_steps", "3", "--output", grid, env=env)
    with Image.open(grid) as im:
        assert abs(im.size[0] / im.size[1] - 3) < 0.3  # one row of 3 classes
    proc = run_script(f"{CC}/infer_demo_sit.py", "--model_path", dit, "--vae_name_or_path", "random", env=env, check=False)
    assert proc.returncode != 0 and "is a DiT model; sample it with sample_ddp.py" in proc.stderr
    out = tmp_path / "samples"
    run_script(f"{CC}/sample_ddp.py", "--model_path", dit, "--vae_name_or_path", "random", "--sample_dir", out, "--num_samples_per_class", "1",
               "--num_classes", "2", "--num_sampling_steps", "2", "--sampler", "ddim", env=env)
    assert sorted(os.listdir(out)) == ["000000_class0.png", "000001_class1.png", "samples_2.npz"]
    assert np.load(out / "samples_2.npz")["arr_0"].shape == (2, 32, 32, 3)
    proc = run_script(f"{CC}/sample_ddp.py", "--model_path", dit, "--vae_name_or_path", "random", "--path_type", "GVP", env=env, check=False)
    assert proc.returncode != 0 and "--path_type: SiT options, but" in proc.stderr
