"""common/: CPU settings, demo data, laion reader, image folder, EMA, checkpoints."""
import base64
import gzip
import os
import signal
from contextlib import contextmanager

import numpy as np
import paddle
import pytest
from PIL import Image

from common import checkpoint as ckpt
from common.cpu_env import cpu_env_settings
from common.images import ImageFolderDataset, ImageTransform, ResumableBatchSampler
from common.laion import LaionDataset, encode_image_b64, parse_laion_line, read_part_paths, write_laion_parts


@contextmanager
def time_limit(seconds):
    """Fail (instead of hanging forever) if the block takes longer than ``seconds``."""

    def handler(signum, frame):
        raise TimeoutError(f"block took longer than {seconds}s (reader hang?)")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- CPU settings --------------------------------------------------------------------------------
def _cpuinfo(tmp_path, vendor):
    path = tmp_path / f"cpuinfo_{vendor}"
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: fake\n")
    return str(path)


def test_cpu_env_sets_mkl_type_only_on_amd(tmp_path):
    amd, _ = cpu_env_settings(environ={}, cpuinfo_path=_cpuinfo(tmp_path, "AuthenticAMD"), cores=8)
    intel, reasons = cpu_env_settings(environ={}, cpuinfo_path=_cpuinfo(tmp_path, "GenuineIntel"), cores=8)
    assert amd == {"OMP_NUM_THREADS": "8", "MKL_DEBUG_CPU_TYPE": "5"}
    assert intel == {"OMP_NUM_THREADS": "8"}
    assert any("MKL_DEBUG_CPU_TYPE not set" in r for r in reasons)
    unknown, _ = cpu_env_settings(environ={}, cpuinfo_path=str(tmp_path / "missing"), cores=2)
    assert "MKL_DEBUG_CPU_TYPE" not in unknown


def test_cpu_env_keeps_user_values_and_splits_cores_between_local_processes(tmp_path):
    to_set, _ = cpu_env_settings(environ={"OMP_NUM_THREADS": "3", "MKL_DEBUG_CPU_TYPE": "4"}, cpuinfo_path=_cpuinfo(tmp_path, "AuthenticAMD"), cores=8)
    assert to_set == {}
    to_set, _ = cpu_env_settings(environ={"PADDLE_LOCAL_SIZE": "4"}, cpuinfo_path=_cpuinfo(tmp_path, "GenuineIntel"), cores=8)
    assert to_set == {"OMP_NUM_THREADS": "2"}


# -- demo data -----------------------------------------------------------------------------------
def test_demo_data_is_real_and_complete(demo_root):
    faces = os.listdir(os.path.join(demo_root, "faces"))
    assert len(faces) == 100
    digits = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(demo_root, "digits")) for f in fs if f.endswith(".png")]
    assert len(digits) == 1797
    assert sorted(os.listdir(os.path.join(demo_root, "digits")))[:10] == [str(k) for k in range(10)]
    photos = [f for f in os.listdir(os.path.join(demo_root, "photos")) if f.endswith(".png")]
    assert len(photos) >= 15
    # real photographs have structure: neighbouring pixels correlate far more than noise would
    arr = np.asarray(Image.open(os.path.join(demo_root, "photos", "astronaut.png")).convert("L"), dtype=np.float32)
    assert np.corrcoef(arr[:, :-1].ravel(), arr[:, 1:].ravel())[0, 1] > 0.8
    with open(os.path.join(demo_root, "digits_coco.jsonl")) as f:
        assert sum(1 for _ in f) == 2 * 1797
    parts = read_part_paths(os.path.join(demo_root, "laion_digits", "filelist", "digits.filelist.list"))
    assert len(parts) == 3


# -- laion reader --------------------------------------------------------------------------------
def _png_b64(value):
    return encode_image_b64(Image.new("RGB", (4, 4), (value, value, value)), "PNG")


def _make_parts(tmp_path, n_records=30, per_part=10, layout="caption"):
    records = [(f"caption {i}", _png_b64(i)) for i in range(n_records)]
    parts = write_laion_parts(records, str(tmp_path / "parts"), per_part_file_num=per_part, layout=layout)
    filelist = tmp_path / "train.filelist"
    filelist.write_text("".join(p + "\n" for p in parts))
    listlist = tmp_path / "train.filelist.list"
    listlist.write_text(str(filelist) + "\n")
    return str(listlist), parts


def _read_all(file_list, rank, world, num_workers, monkeypatch, **kw):
    monkeypatch.setenv("PADDLE_TRAINER_ID", str(rank))
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", str(world))
    # (paddle's DataLoader drops samples that hold no array at all, so each carries its pixels)
    ds = LaionDataset(file_list, process_fn=lambda im, c: {"caption": c, "pixel_values": np.asarray(im)}, infinite=False, **kw)
    loader = paddle.io.DataLoader(ds, batch_size=2, num_workers=num_workers)
    return [caption for batch in loader for caption in batch["caption"]]


@pytest.mark.parametrize("n_records,per_part", [(30, 10), (12, 12)])  # 3 parts; 1 part (fewer parts than readers)
def test_reader_two_ranks_two_workers_read_each_record_once(tmp_path, monkeypatch, n_records, per_part):
    file_list, _ = _make_parts(tmp_path, n_records, per_part)
    seen = []
    with time_limit(120):
        for rank in range(2):
            captions = _read_all(file_list, rank, 2, 2, monkeypatch, shuffle=True, seed=3)
            assert captions, f"rank {rank} got no data (would hang a distributed step)"
            seen += captions
    assert sorted(seen) == sorted(f"caption {i}" for i in range(n_records))


def test_reader_both_layouts_and_corrupt_lines_skipped_and_counted(tmp_path, monkeypatch):
    good = _png_b64(7)
    truncated = base64.b64encode(base64.b64decode(good)[:20]).decode()
    lines = [
        f"a\t\t{good}",  # caption layout
        f"\tb\t\t{good}",  # laion layout
        "only-one-column",  # wrong column count
        "c\t\tnot-base64!!",  # bad base64
        f"d\t\t{truncated}",  # truncated image
        f"e\t\t{good}",
    ]
    part = tmp_path / "part-000000.gz"
    with gzip.open(part, "wt") as f:
        f.write("\n".join(lines) + "\n")
    filelist = tmp_path / "x.filelist"
    filelist.write_text(f"{part}\n")
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "1")
    ds = LaionDataset(str(filelist), process_fn=lambda im, c: {"caption": c, "size": im.size}, infinite=False, shuffle=False)
    got = [sample for sample in ds]  # (list() would ask an IterableDataset for its length)
    assert [g["caption"] for g in got] == ["a", "b", "e"]
    assert got[0]["size"] == (4, 4)
    assert ds.num_skipped == 3
    assert parse_laion_line(f"\tcap\t\t{good}") == ("cap", good)
    assert parse_laion_line(f"cap\t\t{good}") == ("cap", good)


def test_filelist_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.filelist"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no part files"):
        read_part_paths(str(empty))
    missing = tmp_path / "bad.filelist"
    missing.write_text("/nonexistent/part-000001.gz\n")
    with pytest.raises(FileNotFoundError, match="part-000001.gz"):
        read_part_paths(str(missing))
    with pytest.raises(FileNotFoundError, match="nope.filelist.list"):
        read_part_paths(str(tmp_path / "nope.filelist.list"))


# -- image folder ------------------------------------------------------------------------------
def test_image_folder_transform_range_shape_and_determinism(demo_root):
    ds = ImageFolderDataset(os.path.join(demo_root, "photos"), ImageTransform(24, random_flip=True), seed=1)
    a, b = ds[0]["pixel_values"], ds[0]["pixel_values"]
    assert a.shape == (3, 24, 24) and a.dtype == np.float32
    assert -1.0 <= a.min() < a.max() <= 1.0
    np.testing.assert_array_equal(a, b)  # same (seed, epoch, index) -> same crop
    ds.set_epoch(1)
    assert any(not np.array_equal(ds[i]["pixel_values"], ImageFolderDataset(ds.root, ds.transform, seed=1)[i]["pixel_values"]) for i in range(5))
    labelled = ImageFolderDataset(os.path.join(demo_root, "digits"), ImageTransform(32, center_crop=True), with_labels=True)
    assert labelled.classes == [str(k) for k in range(10)]
    assert int(labelled[len(labelled) - 1]["class_labels"]) == labelled.labels[-1]


def test_image_folder_bad_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        ImageFolderDataset(str(tmp_path / "missing_dir"), ImageTransform(8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(str(tmp_path / "empty"), ImageTransform(8))
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "ok.png")
    (folder / "captions.txt").write_text("side files are ignored")
    (folder / "weights.bin").write_bytes(b"\x00\x01 not an image")
    with pytest.raises(ValueError, match="weights.bin"):
        ImageFolderDataset(str(folder), ImageTransform(8))


def test_resumable_sampler_skips_consumed_batches_once():
    ds = paddle.io.TensorDataset([paddle.arange(20, dtype="float32")])
    sampler = ResumableBatchSampler(ds, batch_size=4, shuffle=True)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3)
    sampler.skip_batches = 2
    assert list(sampler) == full[2:]
    sampler.set_epoch(3)
    assert list(sampler) == full  # the skip applies once


# -- seeding, logged loss -------------------------------------------------------------------------
def _as_rank(monkeypatch, rank, world):
    monkeypatch.setenv("PADDLE_TRAINER_ID", str(rank))
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", str(world))


def test_seeding_idiom_same_init_on_every_rank_then_a_stream_per_rank(monkeypatch):
    """seed_model_init: the same weights on every rank, fixed by the seed; seed_everything: seed * world + rank."""
    from common.distributed import seed_everything, seed_model_init

    weights, draws = {}, {}
    for rank in (0, 1):
        _as_rank(monkeypatch, rank, 2)
        assert seed_model_init(5) == 5
        weights[rank] = paddle.nn.Linear(4, 3).weight.numpy()
        assert seed_everything(5) == 10 + rank
        draws[rank] = (paddle.randn([4]).numpy(), np.random.rand())
    np.testing.assert_array_equal(weights[0], weights[1])
    assert not np.array_equal(draws[0][0], draws[1][0]) and draws[0][1] != draws[1][1]
    seed_model_init(6)
    assert not np.array_equal(paddle.nn.Linear(4, 3).weight.numpy(), weights[0])  # another seed, other weights
    paddle.seed(11)  # rank 1 of 2 with seed 5 draws what paddle.seed(5 * 2 + 1) draws
    np.testing.assert_array_equal(paddle.randn([4]).numpy(), draws[1][0])


def test_logged_loss_is_the_window_mean_over_steps_and_micro_batches(tmp_path):
    from common.logging_utils import TrainLogger

    log = TrainLogger(str(tmp_path), logging_steps=2, use_visualdl=False)
    assert log.step(1, [1.0, 3.0], lr=0.1, num_images=4, extra={"d_loss": 0.5}) is None  # micro-batches 1 and 3: step loss 2
    record = log.step(2, 4.0, lr=0.1, num_images=4, extra={"d_loss": 1.5})
    assert record["loss"] == pytest.approx(3.0) and record["d_loss"] == pytest.approx(1.5) and record["lr"] == pytest.approx(0.1)
    assert log.history == [(2, pytest.approx(3.0))]
    with pytest.raises(ValueError, match="loss"):
        log.step(3, [])


# -- the demo VAE ----------------------------------------------------------------------------------
def test_vae_auto_without_the_demo_vae_names_the_command_to_run(tmp_path, monkeypatch):
    from common import vae

    demo = tmp_path / "outputs" / "vae_demo" / "final"
    monkeypatch.setattr(vae, "DEMO_VAE_DIR", str(demo))
    for name in ("auto", "", None):
        with pytest.raises(FileNotFoundError, match="autoencoder/run_train_vae_demo.sh"):
            vae.resolve_vae_name(name)
    with pytest.raises(FileNotFoundError, match="autoencoder/run_train_vae_demo.sh"):
        vae.vae_downsampling_factor("auto")
    with pytest.raises(FileNotFoundError, match="autoencoder/run_train_vae_demo.sh"):
        vae.load_vae("auto")
    assert vae.resolve_vae_name("random") == "random"  # asked for by name: no error
    assert vae.vae_downsampling_factor("random")[0] == 4
    demo.mkdir(parents=True)  # once the demo has trained it, auto is that folder
    (demo / "config.json").write_text('{"_class_name": "AutoencoderKL", "down_block_types": ["A", "B", "C", "D"]}')
    assert vae.resolve_vae_name("auto") == str(demo)
    assert vae.vae_downsampling_factor("auto")[0] == 8


# -- checkpoints -----------------------------------------------------------------------------------
def test_checkpoint_atomic_latest_and_total_limit(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    ckpt.save_checkpoint(out, 10, {"step": 10, "w": np.ones(3)})
    real_save = paddle.save

    def crash(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(paddle, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(out, 20, {"step": 20, "w": np.zeros(3)})
    monkeypatch.setattr(paddle, "save", real_save)
    latest = ckpt.resolve_checkpoint("latest", out)
    assert latest.endswith("checkpoint-10")
    assert ckpt.load_checkpoint(latest)["step"] == 10
    for step in (30, 40, 50):
        ckpt.save_checkpoint(out, step, {"step": step}, save_total_limit=2)
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [40, 50]
    assert ckpt.resolve_checkpoint(None, out) is None
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        ckpt.resolve_checkpoint(str(tmp_path), out)


def test_optimizer_state_loads_into_a_rebuilt_model_for_each_of_two_optimizers():
    """One helper for every plain loop: two optimizers over mixed parameter lists (the VAE's
    generator: a network + a loose parameter; its discriminator) restored into freshly built
    copies whose parameters got other generated names; and the older VAE format (slots keyed by
    position, param<i>) still loads."""

    def build():
        paddle.seed(0)
        gen, disc = paddle.nn.Linear(3, 2), paddle.nn.Linear(2, 1)
        logvar = paddle.create_parameter([1], "float32", default_initializer=paddle.nn.initializer.Constant(0.0))
        gen_params, disc_params = list(gen.parameters()) + [logvar], list(disc.parameters())
        return (paddle.optimizer.Adam(parameters=gen_params, learning_rate=0.1), gen_params), (paddle.optimizer.Adam(parameters=disc_params, learning_rate=0.1), disc_params)

    def step(pairs):
        for opt, params in pairs:
            loss = sum((p * p).sum() for p in params)
            loss.backward()
            opt.step()
            opt.clear_grad()

    first = build()
    step(first)
    saved = [ckpt.optimizer_state(opt, params) for opt, params in first]
    legacy = {}  # what autoencoder/train_vae.py wrote before: the generator's slots renamed param<i>
    for key, value in first[0][0].state_dict().items():
        for i, p in sorted(enumerate(first[0][1]), key=lambda t: -len(t[1].name)):
            if key.startswith(p.name + "_"):
                key = f"param{i}" + key[len(p.name):]
                break
        legacy[key] = value
    for state, reference in ((saved, first), ([legacy, saved[1]], first)):
        again = build()
        assert [p.name for p in again[0][1]] != [p.name for p in first[0][1]]  # other generated names
        for (opt, params), s in zip(again, state):
            ckpt.load_optimizer_state(opt, s, params)
        for (opt, params), (ref_opt, ref_params) in zip(again, reference):
            moments = {k[len(p.name):]: v for k, v in opt.state_dict().items() for p in params if k.startswith(p.name + "_") and hasattr(v, "numpy")}
            ref = {k[len(p.name):]: v for k, v in ref_opt.state_dict().items() for p in ref_params if k.startswith(p.name + "_") and hasattr(v, "numpy")}
            assert moments.keys() == ref.keys() and any("moment1" in k for k in moments)
            for k in ref:
                np.testing.assert_array_equal(moments[k].numpy(), ref[k].numpy(), err_msg=k)
    with pytest.raises(ValueError, match="saved for 3 parameters, the model has 2"):
        ckpt.load_optimizer_state(build()[1][0], saved[0], build()[1][1])


def test_rng_state_round_trip():
    state = ckpt.get_rng_state()
    a = (paddle.randn([3]).numpy(), np.random.rand(), __import__("random").random())
    ckpt.set_rng_state(state)
    b = (paddle.randn([3]).numpy(), np.random.rand(), __import__("random").random())
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


def test_reader_with_nothing_readable_fails_instead_of_hanging(tmp_path, monkeypatch):
    part = tmp_path / "part-000000"
    part.write_text("broken\tline\n" * 3)
    filelist = tmp_path / "bad.filelist"
    filelist.write_text(f"{part}\n")
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "1")
    ds = LaionDataset(str(filelist), infinite=True)
    with time_limit(30), pytest.raises(RuntimeError, match="no readable record"):
        next(iter(ds))
    assert ds.num_skipped == 3
