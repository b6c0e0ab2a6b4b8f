"""common/: CPU settings, demo data, laion reader, image folder, EMA, checkpoints."""
import base64
import gzip
import io
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
    assert len(faces) == 200
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


# -- EMA -------------------------------------------------------------------------------------------
def test_ema_update_matches_formula():
    from ppdiffusers.training_utils import EMAModel

    layer = paddle.nn.Linear(3, 2)
    ema = EMAModel(layer.parameters(), decay=0.9)
    w0 = layer.weight.numpy().copy()
    shadow = w0.copy()
    for step in range(1, 30):
        with paddle.no_grad():
            layer.weight.set_value(layer.weight + 0.1)
        ema.step(layer.parameters())
        decay = min(0.9, (1 + step) / (10 + step))  # ppdiffusers warm-up, capped at decay
        shadow = decay * shadow + (1 - decay) * layer.weight.numpy()
    np.testing.assert_allclose(ema.shadow_params[0].numpy(), shadow, rtol=1e-5, atol=1e-6)
    assert not np.allclose(shadow, layer.weight.numpy())  # the average lags the raw weights


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
