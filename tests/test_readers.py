"""Data readers never hang (issue 13): a bad sample is skipped and counted, a dataset with nothing
usable fails at start, and a reader that must give up fails the process with its reason.

Loops over paddle DataLoaders run in a subprocess under ``timeout``: with ``num_workers=0`` a
reader error used to leave the main thread waiting forever, which must fail the test, not hang it.
"""
import base64
import gzip
import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
for sub in ("stable_diffusion", "ldm_uvit"):
    if os.path.join(REPO, sub) not in sys.path:
        sys.path.append(os.path.join(REPO, sub))


def _module(relpath, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_py(code, timeout=90):
    """Run ``code`` in a fresh python (repo on the path) under ``timeout``; a hang fails the test."""
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    prelude = "from common.cpu_env import apply_cpu_env\napply_cpu_env(verbose=False)\n"
    cmd = ["timeout", "-s", "KILL", str(timeout), sys.executable, "-c", prelude + textwrap.dedent(code)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode not in (124, 137, -9), f"reader hung (killed after {timeout}s):\n{proc.stderr[-3000:]}"
    return proc


def _png_bytes(value, size=8, mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, (size, size), value if mode != "RGB" else (value,) * 3).save(buf, format="PNG")
    return buf.getvalue()


def _noise_png_bytes(size=32):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _image_folder(root, good=6, bad=True):
    """``good`` images ``img_<k>.png`` (gray value 10 * k) plus ``empty.png`` (0 bytes) and
    ``truncated.png`` (half a PNG); sorted order: empty, img_0.., truncated."""
    os.makedirs(root, exist_ok=True)
    for k in range(good):
        with open(os.path.join(root, f"img_{k}.png"), "wb") as f:
            f.write(_png_bytes(10 * k))
    if bad:
        open(os.path.join(root, "empty.png"), "wb").close()
        with open(os.path.join(root, "truncated.png"), "wb") as f:
            f.write(_noise_png_bytes()[:400])
    return str(root)


# -- image folders ---------------------------------------------------------------------------------
def test_image_folder_replaces_bad_image_with_next_good_one_and_counts_it(tmp_path):
    from common.images import ImageFolderDataset, ImageTransform

    ds = ImageFolderDataset(_image_folder(tmp_path / "imgs"), ImageTransform(8), seed=3)
    assert [os.path.basename(p) for p in ds.paths][::7] == ["empty.png", "truncated.png"]
    first_good = ds.load_sample(1)["pixel_values"]
    np.testing.assert_array_equal(ds[0]["pixel_values"], first_good)  # empty.png -> img_0.png
    np.testing.assert_array_equal(ds[7]["pixel_values"], first_good)  # truncated.png -> wraps to img_0.png
    assert ds.num_skipped == 2 and ds.try_load(7) is None
    with pytest.raises(ValueError, match="truncated.png"):
        ds.load_sample(7)
    assert "empty.png" in ds.bad_log.first[0] and "truncated.png" in ds.bad_log.first[1]


def test_image_folder_with_bad_images_gives_full_batches_through_dataloader(tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    proc = _run_py(f"""
        import json, sys, paddle
        from common.images import ImageFolderDataset, ImageTransform, ResumableBatchSampler
        result = {{}}
        for num_workers in (0, 1):
            ds = ImageFolderDataset({folder!r}, ImageTransform(8, random_flip=True), seed=1)
            sampler = ResumableBatchSampler(ds, batch_size=4, shuffle=True, drop_last=True)
            loader = paddle.io.DataLoader(ds, batch_sampler=sampler, num_workers=num_workers)
            shapes = []
            for epoch in range(2):
                sampler.set_epoch(epoch)
                ds.set_epoch(epoch)
                shapes += [list(batch["pixel_values"].shape) for batch in loader]
            result[num_workers] = {{"shapes": shapes, "skipped": ds.num_skipped}}
            print(f"END num_workers={{num_workers}}", file=sys.stderr, flush=True)
        print("RESULT", json.dumps(result))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    for num_workers in ("0", "1"):  # 8 samples, batch 4, 2 epochs: always full batches
        assert result[num_workers]["shapes"] == [[4, 3, 8, 8]] * 4, num_workers
    assert result["0"]["skipped"] == 2  # with workers, each worker counts (and logs) its own
    with_workers_log = proc.stderr.split("END num_workers=0", 1)[1]
    assert "truncated.png" in with_workers_log  # named in the log also when a worker process found it


def test_image_folder_with_nothing_decodable_fails_at_start(tmp_path):
    from common.images import ImageFolderDataset, ImageTransform

    folder = _image_folder(tmp_path / "imgs", good=0)
    with pytest.raises(ValueError, match=r"(?s)empty\.png.*truncated\.png"):
        ImageFolderDataset(folder, ImageTransform(8))


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    from common.images import ImageFolderDataset, ImageTransform
    from common.laion import decode_image_b64

    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)  # mean value 32767.5 -> 127.5
    folder = tmp_path / "deep"
    folder.mkdir()
    Image.fromarray(ramp).save(folder / "ramp16.png")
    assert Image.open(folder / "ramp16.png").mode == "I;16"
    pixels = ImageFolderDataset(str(folder), ImageTransform(16, center_crop=True))[0]["pixel_values"]
    assert abs(float(pixels.mean())) < 0.01  # [-1, 1]: mid-gray (clipping gave ~ +1, near white)
    decoded = np.asarray(decode_image_b64(base64.b64encode((folder / "ramp16.png").read_bytes()).decode()))
    assert decoded.shape == (16, 16, 3) and abs(decoded.mean() - 127.5) < 0.6
    vae_data = _module("autoencoder/vae_data.py", "vae_data_for_readers")
    crop = vae_data.RandomCropTransform(16, random_flip=False)(Image.open(folder / "ramp16.png"), np.random.default_rng(0))
    assert abs(float(crop.mean())) < 0.01


# -- feature folders -------------------------------------------------------------------------------
CC_DIR = os.path.join(REPO, "class_conditional")
if CC_DIR not in sys.path:  # class_conditional's modules by plain name, as its scripts import them
    sys.path.append(CC_DIR)


def _class_features(root, n=8):
    """class_conditional layout; sample i has latents filled with i and label i % 2."""
    from features import FEATURE_DIR, LABEL_DIR

    os.makedirs(os.path.join(root, FEATURE_DIR))
    os.makedirs(os.path.join(root, LABEL_DIR))
    for i in range(n):
        np.save(os.path.join(root, FEATURE_DIR, f"{i}.npy"), np.full((2, 4, 2, 2), i, np.float32))
        np.save(os.path.join(root, LABEL_DIR, f"{i}.npy"), np.array([i % 2], np.int64))
    return str(root)


def _truncate(path, keep=60):
    with open(path, "rb") as f:
        head = f.read(keep)
    with open(path, "wb") as f:
        f.write(head)


def test_class_features_truncated_npy_is_skipped_and_named(tmp_path):
    from features import FEATURE_DIR, FeatureDataset

    root = _class_features(tmp_path / "feat")
    _truncate(os.path.join(root, FEATURE_DIR, "3.npy"))
    ds = FeatureDataset(root)
    assert float(ds[3]["latents"][0, 0, 0]) == 4 and int(ds[3]["class_labels"]) == 0  # the next sample, with its label
    assert ds.num_skipped == 1
    with pytest.raises(ValueError, match=r"3\.npy"):
        ds.load_sample(3)
    proc = _run_py(f"""
        import json, paddle, sys
        sys.path.insert(0, {CC_DIR!r})
        from features import FeatureDataset
        from common.images import ResumableBatchSampler
        ds = FeatureDataset({root!r})
        sampler = ResumableBatchSampler(ds, batch_size=4, shuffle=True, drop_last=True)
        sizes = [int(b["latents"].shape[0]) for b in paddle.io.DataLoader(ds, batch_sampler=sampler, num_workers=0)]
        print("RESULT", json.dumps([sizes, ds.num_skipped]))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.split("RESULT", 1)[1]) == [[4, 4], 1]  # 8 samples, batch 4: full batches
    assert "3.npy" in proc.stderr


def test_coco_features_truncated_npy_is_skipped(tmp_path):
    from uvit_features import CocoFeatureDataset

    split = tmp_path / "train"
    split.mkdir()
    for i in range(4):
        np.save(split / f"{i}.npy", np.full((8, 2, 2), i, np.float32))
        np.save(split / f"{i}_0.npy", np.full((3, 5), i, np.float32))
    np.save(tmp_path / "empty_context.npy", np.zeros((3, 5), np.float32))
    _truncate(split / "0.npy")  # the first file too: construction looks further
    ds = CocoFeatureDataset(str(tmp_path), p_uncond=0.0)
    assert [float(ds[i]["moments"][0, 0, 0]) for i in range(4)] == [1, 1, 2, 3]
    assert ds.num_skipped == 1 and "0.npy" in ds.bad_log.first[0]


# -- laion parts -----------------------------------------------------------------------------------
def _part(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    filelist = str(path) + ".filelist"
    with open(filelist, "w") as f:
        f.write(f"{path}\n")
    return filelist


def test_part_with_30_bad_then_50_good_lines_is_accepted(tmp_path):
    from common.laion import check_parts_readable
    from sd_dataset import build_laion_dataset

    good = base64.b64encode(_png_bytes(50)).decode()
    filelist = _part(tmp_path / "part-000000.gz", ["broken line"] * 10 + ["c\t\tnot-base64!!"] * 20 + [f"cap {i}\t\t{good}" for i in range(50)])
    dataset = build_laion_dataset(filelist, processor=None)
    assert check_parts_readable(dataset.part_paths) == (str(tmp_path / "part-000000.gz"), 31)


def test_laion_list_of_only_corrupt_parts_fails_at_start_for_the_vae(tmp_path):
    vae_data = _module("autoencoder/vae_data.py", "vae_data_for_readers")
    filelist = _part(tmp_path / "part-000000.gz", ["\tcap\t\tnot-base64!!"] * 5)
    with pytest.raises(ValueError, match=r"(?s)no readable laion400m-format record.*part-000000\.gz"):
        vae_data.build_dataset("text_image_pair", 8, file_list=filelist)


def test_laion_stream_with_nothing_readable_fails_instead_of_hanging_in_the_loader(tmp_path):
    filelist = _part(tmp_path / "part-000000.gz", ["\tcap\t\tnot-base64!!"] * 5)
    proc = _run_py(f"""
        import numpy as np, paddle
        from common.laion import LaionDataset
        ds = LaionDataset({filelist!r}, process_fn=lambda im, c: {{"x": np.asarray(im)}}, infinite=True)
        next(iter(paddle.io.DataLoader(ds, batch_size=2, num_workers=0)))
        print("finished")
    """)
    assert proc.returncode != 0 and "finished" not in proc.stdout
    assert "gave no readable record" in proc.stderr and "line 1 of " in proc.stderr and "part-000000.gz" in proc.stderr


# -- json lines ------------------------------------------------------------------------------------
def _coco_jsonl(tmp_path, n_good, extra_lines=()):
    images = tmp_path / "imgs"
    images.mkdir(exist_ok=True)
    rows = []
    for k in range(n_good):
        (images / f"{k}.png").write_bytes(_png_bytes(20 * k))
        rows.append(json.dumps({"caption": f"digit {k}", "image": f"imgs/{k}.png"}).encode())
    path = tmp_path / "coco.jsonl"
    path.write_bytes(b"\n".join(rows[:1] + list(extra_lines) + rows[1:]) + b"\n")
    return path


BAD_LINES = (b'{"caption": "bad byte \xff", "image": "imgs/0.png"}', b'{"caption": "cut', b'{"image": "imgs/0.png"}')


def test_create_pretraining_data_skips_bad_lines_and_writes_nothing_partial(tmp_path, capsys, monkeypatch):
    import create_pretraining_data

    jsonl = _coco_jsonl(tmp_path, 5, BAD_LINES)
    out = tmp_path / "processed"
    argv = ["--input_path", str(jsonl), "--output_path", str(out), "--per_part_file_num", "2", "--output_name", "mini"]
    stats = create_pretraining_data.main(argv)
    err = capsys.readouterr().err
    assert stats == {"written": 5, "skipped": 3}
    assert f"{jsonl}:2" in err and "UTF-8" in err and f"{jsonl}:3" in err and "JSON" in err and f"{jsonl}:4" in err
    assert sorted(os.listdir(out / "laion400m_format_data")) == ["part-000000", "part-000001", "part-000002"]

    # a re-run with less data leaves no stale part behind
    (tmp_path / "small").mkdir()
    small = _coco_jsonl(tmp_path / "small", 2)
    create_pretraining_data.main(["--input_path", str(small), "--output_path", str(out), "--per_part_file_num", "2", "--output_name", "mini"])
    assert os.listdir(out / "laion400m_format_data") == ["part-000000"]
    assert (out / "filelist" / "mini.filelist").read_text().split() == [str(out / "laion400m_format_data" / "part-000000")]

    # a run that dies half-way changes nothing
    before = (out / "laion400m_format_data" / "part-000000").read_bytes()
    real_open, calls = create_pretraining_data.Image.open, []

    def dying_open(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real_open(*a, **k)

    monkeypatch.setattr(create_pretraining_data.Image, "open", dying_open)
    with pytest.raises(KeyboardInterrupt):
        create_pretraining_data.main(argv)
    assert sorted(os.listdir(out)) == ["filelist", "laion400m_format_data"]  # no temporary folder left
    assert os.listdir(out / "laion400m_format_data") == ["part-000000"]
    assert (out / "laion400m_format_data" / "part-000000").read_bytes() == before


def test_caption_files_skip_bad_lines_and_name_them(tmp_path, caplog):
    from uvit_features import read_caption_file

    jsonl = _coco_jsonl(tmp_path, 3, BAD_LINES)
    with caplog.at_level(logging.WARNING):
        records = read_caption_file(str(jsonl))
    assert [caps for _, caps in records] == [["digit 0"], ["digit 1"], ["digit 2"]]
    assert f"{jsonl}:2" in caplog.text and f"{jsonl}:3" in caplog.text and f"{jsonl}:4" in caplog.text
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_bytes(b"\n".join(BAD_LINES))
    with pytest.raises(ValueError, match=r"no usable records.*bad\.jsonl:1"):
        read_caption_file(str(only_bad))


def test_caption_image_folder_skips_bad_lines_and_bad_images(tmp_path):
    from sd_dataset import CaptionImageFolderDataset

    root = tmp_path / "folder"
    root.mkdir()
    for k in range(3):
        (root / f"{k}.png").write_bytes(_png_bytes(60 * k))
    (root / "empty.png").write_bytes(b"")
    lines = [json.dumps({"file_name": "empty.png", "text": "nothing"}).encode()] + list(BAD_LINES)
    lines += [json.dumps({"file_name": f"{k}.png", "text": f"gray {k}"}).encode() for k in range(3)]
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    ds = CaptionImageFolderDataset(str(root), lambda image, caption: {"caption": caption, "mean": np.asarray(image).mean()})
    assert len(ds) == 4 and ds.num_bad_lines == 3  # the 3 BAD_LINES lack file_name/text or do not parse
    assert ds[0]["caption"] == "gray 0" and ds.num_skipped == 1  # empty.png -> the next image


# -- extract_features into a used folder -----------------------------------------------------------
def _class_tree(root, classes, per_class):
    for c in range(classes):
        os.makedirs(os.path.join(root, str(c)))
        for k in range(per_class):
            with open(os.path.join(root, str(c), f"{k}.png"), "wb") as f:
                f.write(_png_bytes(30 * c + k, size=8))
    return str(root)


def test_class_conditional_extract_features_rewrites_a_used_folder(tmp_path):
    extract = _module("class_conditional/extract_features.py", "cc_extract_for_readers")
    from features import FeatureDataset

    features = str(tmp_path / "features")
    common = ["--feature_path", features, "--image_size", "8", "--vae_name_or_path", "random", "--batch_size", "8"]
    extract.main(["--data_path", _class_tree(tmp_path / "many", 4, 3), *common])
    assert len(FeatureDataset(features)) == 12
    few = _class_tree(tmp_path / "few", 2, 2)
    open(os.path.join(few, "1", "zz_empty.png"), "wb").close()  # undecodable: skipped, not fatal
    extract.main(["--data_path", few, *common])
    ds = FeatureDataset(features)
    assert ds.features == ["0.npy", "1.npy", "2.npy", "3.npy"]  # index 4 (the empty image) is missing
    assert ds.class_names == ["0", "1"] and sorted({int(ds[i]["class_labels"]) for i in range(len(ds))}) == [0, 1]
    assert not os.path.exists(features + ".tmp-extract")
    with open(os.path.join(features, "notes.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        extract.main(["--data_path", _class_tree(tmp_path / "other", 1, 2), *common])


def test_ldm_uvit_extract_features_skips_bad_input_and_replaces_as_a_whole(tmp_path):
    extract = _module("ldm_uvit/extract_features.py", "uvit_extract_for_readers")
    from uvit_features import scan_feature_split

    jsonl = _coco_jsonl(tmp_path, 4, BAD_LINES + (json.dumps({"caption": "gone", "image": "imgs/missing.png"}).encode(),))
    (tmp_path / "imgs" / "1.png").write_bytes(b"")  # undecodable image
    out = str(tmp_path / "coco_features")
    common = ["--output_dir", out, "--resolution", "8", "--model_max_length", "4", "--vae_name_or_path", "random", "--batch_size", "2"]
    meta = extract.main(["--data_file", str(jsonl), *common])
    # 5 images listed (0, missing, 1, 2, 3): the missing and the empty one are skipped, the rest numbered 0..2
    assert scan_feature_split(os.path.join(out, "train")) == [1, 1, 1]
    assert meta["skipped"] == {"caption_records": 3, "images": 2}
    with pytest.raises(FileExistsError, match="--overwrite"):
        extract.main(["--data_file", str(jsonl), *common])
    shutil.copy(os.path.join(out, "train", "0.npy"), os.path.join(out, "train", "stale_marker.npy"))
    extract.main(["--data_file", str(jsonl), *common, "--overwrite", "--max_images", "2"])
    assert sorted(os.listdir(os.path.join(out, "train"))) == ["0.npy", "0_0.npy"]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]


# -- two ranks -------------------------------------------------------------------------------------
TWO_RANK_SCRIPT = '''
import sys
sys.path.insert(0, {repo!r})
from common.cpu_env import apply_cpu_env
apply_cpu_env(verbose=False)
import paddle
from common.distributed import init_distributed
from common.images import ImageFolderDataset, ImageTransform, ResumableBatchSampler

rank, world = init_distributed()
for folder in sys.argv[1:]:
    ds = ImageFolderDataset(folder, ImageTransform(8))
    sampler = ResumableBatchSampler(ds, batch_size=2, shuffle=True, drop_last=True)
    seen = 0
    for batch in paddle.io.DataLoader(ds, batch_sampler=sampler, num_workers=0):
        seen += int(batch["pixel_values"].shape[0])
    total = paddle.to_tensor([seen])
    paddle.distributed.all_reduce(total)
    print(f"[rank {{rank}}] {{folder}}: {{int(total.numpy().sum())}} samples", flush=True)
'''


def test_two_ranks_skip_bad_images_and_a_failing_rank_shows_its_cause(launch_2proc, tmp_path):
    some_bad = _image_folder(tmp_path / "some_bad")  # 6 good + 2 bad: both ranks finish with full batches
    # 1 good + 7 empty: a rank gives up inside its single-process loader thread (num_workers 0), naming
    # the files, instead of hanging itself and the other rank
    mostly_bad = tmp_path / "mostly_bad"
    mostly_bad.mkdir()
    (mostly_bad / "a_good.png").write_bytes(_png_bytes(100))
    for k in range(7):
        (mostly_bad / f"b_bad{k}.png").write_bytes(b"")
    script = tmp_path / "read_two_ranks.py"
    script.write_text(TWO_RANK_SCRIPT.format(repo=REPO))
    proc, log_dir = launch_2proc(str(script), some_bad, str(mostly_bad), timeout=120, check=False)
    logs = {r: (log_dir / f"workerlog.{r}").read_text() for r in range(2)}
    for rank in range(2):
        assert f"[rank {rank}] {some_bad}: 8 samples" in logs[rank], logs[rank][-2000:]
    assert proc.returncode != 0
    launcher_output = proc.stdout + proc.stderr
    assert "more than max_bad_fraction" in launcher_output and "b_bad" in launcher_output, launcher_output[-3000:]


# --- the per-sample path (issue 17 item 4): JPEG draft decode by default, numpy only ------------
for sub in ("ddpm_tutorial", "autoencoder"):
    if os.path.join(REPO, sub) not in sys.path:
        sys.path.append(os.path.join(REPO, sub))


def _photo_jpeg(demo_root, path, k=0, size=(1000, 700)):
    """A 1000x700 q90 JPEG with photo detail: a 2x2 mosaic of four demo photos at their own scale."""
    folder = os.path.join(demo_root, "photos")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    w, h = size[0] // 2, size[1] // 2
    canvas = Image.new("RGB", size)
    for q, xy in enumerate(((0, 0), (w, 0), (0, h), (w, h))):
        im = Image.open(os.path.join(folder, names[(k + q) % len(names)])).convert("RGB")
        s = max(w / im.width, h / im.height)
        if s > 1:
            im = im.resize((int(im.width * s + 1), int(im.height * s + 1)), Image.BICUBIC)
        canvas.paste(im.crop((0, 0, w, h)), xy)
    canvas.save(path, quality=90)
    return str(path)


def _old_transform(image, size, center_crop, random_flip, rng, interpolation=Image.BICUBIC):
    """ImageTransform.__call__ before the reader work (commit 978ee92): resize all, crop, PIL flip."""
    image = image.convert("RGB")
    th, tw = size, size
    scale = max(th / image.height, tw / image.width)
    new_w, new_h = max(tw, round(image.width * scale)), max(th, round(image.height * scale))
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), interpolation)
    if center_crop:
        top, left = (new_h - th) // 2, (new_w - tw) // 2
    else:
        top, left = int(rng.integers(0, new_h - th + 1)), int(rng.integers(0, new_w - tw + 1))
    image = image.crop((left, top, left + tw, top + th))
    if random_flip and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(image, dtype=np.float32)
    return (arr.transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)


# measured on 18 such mosaics (all 18 demo photos): mean |draft - full| 1.37 levels at 128 px (worst
# image 2.18), 0.97 at 256 px (worst 1.56); a level is 1/127.5 in [-1, 1]
DRAFT_BOUND_LEVELS = {128: 2.5, 256: 2.0}


def test_jpeg_draft_decode_then_resize_is_close_to_the_full_decode(demo_root, tmp_path):
    from common.images import ImageTransform, load_image

    for k in range(0, 18, 6):
        path = _photo_jpeg(demo_root, tmp_path / f"m{k}.jpg", k)
        for px, shrink in ((128, 4), (256, 2), (512, 1)):
            draft, full = ImageTransform(px, center_crop=True), ImageTransform(px, center_crop=True, draft=False)
            assert draft.draft_size == (px, px) and full.draft_size is None  # draft is the default
            small = load_image(path, draft_size=draft.draft_size)
            assert small.size == (1000 // shrink, 700 // shrink)  # the largest power-of-two reduction that still covers px
            a, b = full(load_image(path), None), draft(small, None)
            for x in (a, b):
                assert type(x) is np.ndarray and x.dtype == np.float32 and x.shape == (3, px, px) and x.flags.c_contiguous
                assert -1.0 <= x.min() and x.max() <= 1.0
            diff = float(np.abs(a - b).mean()) * 127.5
            assert diff <= DRAFT_BOUND_LEVELS.get(px, 0.0), (k, px, diff)  # 512 px: no reduction, identical


def test_transform_resizes_only_the_crop_and_matches_the_old_resize_then_crop(demo_root, tmp_path):
    from common.images import ImageTransform, load_image

    image = load_image(_photo_jpeg(demo_root, tmp_path / "m.jpg", 3))
    for px, center_crop in ((256, False), (200, True), (512, False)):
        for seed in range(3):
            new = ImageTransform(px, center_crop=center_crop, random_flip=True, draft=False)(image, np.random.default_rng(seed))
            old = _old_transform(image, px, center_crop, True, np.random.default_rng(seed))
            levels = np.abs(new - old) * 127.5
            assert levels.max() <= 2.001 and (levels > 0.5).mean() < 0.005, (px, seed, levels.max(), (levels > 0.5).mean())  # rounding only
    # no resize needed: the crop alone, exactly
    square = image.crop((0, 0, 300, 300))
    np.testing.assert_array_equal(ImageTransform(300, draft=False)(square, np.random.default_rng(0)), _old_transform(square, 300, False, False, np.random.default_rng(0)))


def test_pil_to_tensor_array_is_the_old_formula_in_one_copy():
    from common.images import pil_to_tensor_array

    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    old = (arr.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)
    new = pil_to_tensor_array(Image.fromarray(arr))
    assert new.flags.c_contiguous and new.dtype == np.float32
    np.testing.assert_array_equal(new, old)  # bit for bit
    np.testing.assert_array_equal(pil_to_tensor_array(Image.fromarray(arr), flip=True), old[:, :, ::-1])
    gray = Image.fromarray(arr[:, :, 0], "L")
    assert pil_to_tensor_array(gray).shape == (3, 5, 7)


def test_draft_leaves_png_and_non_jpeg_unchanged(tmp_path):
    from common.images import load_image
    from common.laion import decode_image_b64

    arr = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for fmt in ("PNG", "BMP"):
        path = tmp_path / f"x.{fmt.lower()}"
        Image.fromarray(arr).save(path, format=fmt)
        im = load_image(str(path), draft_size=(64, 64))
        assert im.size == (400, 300) and np.array_equal(np.asarray(im), arr)
        b64 = base64.b64encode(path.read_bytes()).decode("ascii")
        assert np.array_equal(np.asarray(decode_image_b64(b64, draft_size=(64, 64))), arr)


def test_laion_reader_decodes_at_the_transform_draft_size(demo_root, tmp_path):
    from common.images import ImageTransform
    from common.laion import LaionDataset, write_laion_parts
    from vae_data import RandomCropTransform

    b64 = base64.b64encode(open(_photo_jpeg(demo_root, tmp_path / "m.jpg"), "rb").read()).decode("ascii")
    parts = write_laion_parts([("a caption", b64)], str(tmp_path / "parts"))
    (tmp_path / "one.filelist").write_text(parts[0] + "\n")

    class Proc:
        def __init__(self, transform):
            self.transform = transform

        def __call__(self, image, caption):
            return {"size": np.asarray(image.size), "pixel_values": self.transform(image, np.random.default_rng(0))}

    def first(transform):
        return next(iter(LaionDataset(str(tmp_path / "one.filelist"), process_fn=Proc(transform), shuffle=False, infinite=False)))

    full, small = first(ImageTransform(256, center_crop=True, draft=False)), first(ImageTransform(256, center_crop=True))
    assert tuple(full["size"]) == (1000, 700) and tuple(small["size"]) == (500, 350)  # 700 // 256 = 2: half scale
    assert np.abs(full["pixel_values"] - small["pixel_values"]).mean() * 127.5 <= DRAFT_BOUND_LEVELS[256]
    # the VAE's random crops: the decode keeps resolution / min_crop_scale pixels on the short side,
    # so the smallest crop is still downsampled and the crops keep their proportions
    assert RandomCropTransform(32, min_crop_scale=0.35).draft_size == (92, 92)  # ceil(32 / 0.35)
    assert RandomCropTransform(256, draft=False).draft_size is None
    assert tuple(first(RandomCropTransform(128, min_crop_scale=0.5))["size"]) == (500, 350)  # 350 >= 256 = 128 / 0.5
    assert tuple(first(RandomCropTransform(64))["size"]) == (125, 88)  # 1/8: 88 >= 64


class _Built(Exception):
    """Raised by a patched dataset builder to stop a script right after it built its reader."""

    def __init__(self, value):
        super().__init__("built")
        self.value = value


def _stop_at(value):
    raise _Built(value)


def _draft_of(transform):
    return transform.draft_size


def _ddpm_explicit(demo_root, tmp_path, monkeypatch, extra):
    import train_unconditional

    monkeypatch.setattr(train_unconditional, "ImageFolderDataset", lambda root, transform, **kw: _stop_at(transform))
    args = train_unconditional.parse_args(["--train_data_dir", os.path.join(demo_root, "faces"), "--output_dir", str(tmp_path / "o"), "--resolution", "16", *extra])
    with pytest.raises(_Built) as built:
        train_unconditional.train(args, None, None)
    return args.jpeg_draft, _draft_of(built.value.value)


def _ddpm_compact(demo_root, tmp_path, monkeypatch, extra):
    import denoising_diffusion
    import train_trainer_style

    monkeypatch.setattr(denoising_diffusion, "ImageFolderDataset", lambda root, transform, **kw: _stop_at(transform))
    argv = ["--folder", os.path.join(demo_root, "faces"), "--results_folder", str(tmp_path / "o"), "--image_size", "16", "--dim", "8", "--dim_mults", "1", "--attention_levels", *extra]
    with pytest.raises(_Built) as built:
        train_trainer_style.main(argv)
    return train_trainer_style.parse_args(argv).jpeg_draft, _draft_of(built.value.value)


def _vae(demo_root, tmp_path, monkeypatch, extra):
    import types

    train_vae = _module("autoencoder/train_vae.py", "train_vae_for_readers")
    real = train_vae.build_dataset
    monkeypatch.setattr(train_vae, "build_dataset", lambda *a, **kw: _stop_at(real(*a, **kw)[0]))
    file_list = os.path.join(demo_root, "laion_photos", "filelist", "photos.filelist.list")
    args = train_vae.parse_args(["--file_list", file_list, "--output_dir", str(tmp_path / "o"), "--resolution", "64", "--from_scratch",
                                 "--vae_config_file", os.path.join(REPO, "autoencoder", "config", "vae_demo.json"), *extra])
    with pytest.raises(_Built) as built:
        train_vae.train(args, types.SimpleNamespace(resume=None), None)
    return args.jpeg_draft, built.value.value._draft_size()  # what the laion reader hands to the decoder


def _sd(demo_root, tmp_path, monkeypatch, extra):
    import types

    sd = _module("stable_diffusion/train_txt2img_laion400m_trainer.py", "sd_train_for_readers")
    tokenizer = types.SimpleNamespace(model_max_length=8, get_vocab=lambda: {"a": 0})
    monkeypatch.setattr(sd, "resolve_tokenizer", lambda *a: (tokenizer, "stub"))
    real = sd.build_laion_dataset
    monkeypatch.setattr(sd, "build_laion_dataset", lambda *a, **kw: _stop_at(real(*a, **kw)))
    argv = ["--output_dir", str(tmp_path / "o"), "--max_steps", "1", "--resolution", "32", "--vae_name_or_path", "random", *extra]
    with pytest.raises(_Built) as built:
        sd.main(argv)
    return sd.parse_args(argv)[1].jpeg_draft, built.value.value._draft_size()


def _dit_extract(demo_root, tmp_path, monkeypatch, extra):
    extract = _module("class_conditional/extract_features.py", "cc_extract_for_readers")
    monkeypatch.setattr(extract, "ImageFolderDataset", lambda root, transform, **kw: _stop_at(transform))
    argv = ["--data_path", os.path.join(demo_root, "digits"), "--feature_path", str(tmp_path / "f"), "--image_size", "32", "--vae_name_or_path", "random", *extra]
    with pytest.raises(_Built) as built:
        extract.main(argv)
    return extract.parse_args(argv).jpeg_draft, _draft_of(built.value.value)


def _uvit_extract(demo_root, tmp_path, monkeypatch, extra):
    extract = _module("ldm_uvit/extract_features.py", "uvit_extract_for_readers")
    monkeypatch.setattr(extract, "write_split", lambda split_dir, records, vae, transform, *a: _stop_at(transform))
    rows = [json.dumps({"image": os.path.join(demo_root, "digits", "1", os.listdir(os.path.join(demo_root, "digits", "1"))[0]), "caption": "one"})]
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "caps.jsonl").write_text("\n".join(rows) + "\n")
    argv = ["--data_file", str(tmp_path / "caps.jsonl"), "--output_dir", str(tmp_path / "f"), "--resolution", "32", "--vae_name_or_path", "random",
            "--model_max_length", "4", *extra]
    with pytest.raises(_Built) as built:
        extract.main(argv)
    transform = built.value.value
    seen = []
    monkeypatch.setattr(extract, "load_image", lambda path, draft_size=None: seen.append(draft_size) or Image.new("RGB", (64, 48)))
    extract.load_images(["x.jpg"], transform, BadSampleLogStub())
    assert seen == [transform.draft_size]  # load_images hands the transform's draft size to the decoder
    return extract.parse_args(argv).jpeg_draft, _draft_of(transform)


class BadSampleLogStub:
    def record(self, name, error):
        raise AssertionError(f"{name}: {error}")


SCRIPTS = {"ddpm_tutorial/train_unconditional.py": (_ddpm_explicit, 16), "ddpm_tutorial/train_trainer_style.py": (_ddpm_compact, 16),
           "autoencoder/train_vae.py": (_vae, 64), "stable_diffusion/train_txt2img_laion400m_trainer.py": (_sd, 32),
           "class_conditional/extract_features.py": (_dit_extract, 32), "ldm_uvit/extract_features.py": (_uvit_extract, 32)}


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_each_script_decodes_jpegs_with_draft_by_default_and_at_full_size_with_the_opt_out(script, demo_root, tmp_path, monkeypatch):
    build, px = SCRIPTS[script]
    assert build(demo_root, tmp_path / "default", monkeypatch, []) == (True, (px, px))
    for opt_out in (["--no_jpeg_draft"], ["--jpeg_draft", "False"]):
        assert build(demo_root, tmp_path / opt_out[-1].strip("-"), monkeypatch, opt_out) == (False, None), opt_out


def test_jpeg_draft_flag_spelling():
    import argparse

    from common.images import add_jpeg_draft_argument

    p = add_jpeg_draft_argument(argparse.ArgumentParser())
    assert [p.parse_args(a).jpeg_draft for a in ([], ["--jpeg_draft"], ["--jpeg_draft", "true"], ["--jpeg_draft", "0"], ["--no_jpeg_draft"])] == [True, True, True, False, False]
    with pytest.raises(SystemExit):
        p.parse_args(["--jpeg_draft", "maybe"])


def _numpy_only(sample):
    for key, value in sample.items():
        assert isinstance(value, (np.ndarray, np.generic)), f"{key}: {type(value).__name__} is not a numpy array"


def test_readers_make_numpy_samples_and_no_paddle_tensor(demo_root, tmp_path, monkeypatch):
    """Every training reader's per-sample path (decode, transform, tokenize; the feature loads) and
    the SD collate stay in numpy: a paddle tensor made in a DataLoader worker is what can crash it."""
    import paddle

    import vae_data
    from features import FeatureDataset
    from sd_dataset import TextImageProcessor, build_laion_dataset, collate_fn
    from sd_text_encoder import load_clip_tokenizer, train_clip_bpe_tokenizer
    from uvit_features import CocoFeatureDataset

    from common.images import ImageFolderDataset, ImageTransform

    jpegs = tmp_path / "jpegs"
    jpegs.mkdir()
    for k in range(2):
        _photo_jpeg(demo_root, jpegs / f"{k}.jpg", k, size=(300, 200))
    train_clip_bpe_tokenizer(["a photo of a cat", "digits on a page"], str(tmp_path / "tok"), vocab_size=600, model_max_length=16)
    tokenizer = load_clip_tokenizer(str(tmp_path / "tok"), model_max_length=16)
    photos = os.path.join(demo_root, "laion_photos", "filelist", "photos.filelist.list")
    cc_features = _class_features(tmp_path / "cc")
    uvit = tmp_path / "uvit"
    (uvit / "train").mkdir(parents=True)
    for i in range(2):
        np.save(uvit / "train" / f"{i}.npy", np.zeros((8, 4, 4), np.float32))
        np.save(uvit / "train" / f"{i}_0.npy", np.zeros((3, 5), np.float32))
    np.save(uvit / "empty_context.npy", np.zeros((3, 5), np.float32))

    def no_tensor(*a, **k):
        raise AssertionError("a paddle tensor was made in the per-sample path")

    for name in ("to_tensor", "stack", "concat", "assign"):
        monkeypatch.setattr(paddle, name, no_tensor)
    samples = [
        ImageFolderDataset(str(jpegs), ImageTransform(64, random_flip=True))[1],
        next(iter(build_laion_dataset(photos, TextImageProcessor(tokenizer, 64, proportion_empty_prompts=0.5, random_flip=True)))),
        next(iter(vae_data.build_dataset("text_image_pair", 64, file_list=photos)[0])),
        FeatureDataset(cc_features)[3],
        CocoFeatureDataset(str(uvit), p_uncond=0.5)[1],
    ]
    for sample in samples:
        _numpy_only(sample)
    assert samples[1]["pixel_values"].shape == (3, 64, 64) and samples[1]["input_ids"].dtype == np.int64 and samples[1]["input_ids"].shape == (16,)
    _numpy_only(collate_fn([samples[1], samples[1]]))


def test_load_npy_reads_what_numpy_load_reads_and_names_bad_files(tmp_path):
    from common.safe_data import load_npy

    arrays = [np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.asfortranarray(np.arange(12.0).reshape(3, 4)), np.array(5, np.int64),
              np.zeros((0, 3), np.float32), np.array([1.5, 2.0], ">f8"), np.arange(6, dtype=np.float16).reshape(2, 3)]
    for k, arr in enumerate(arrays):
        np.save(tmp_path / f"{k}.npy", arr)
        for _ in range(2):  # the second read takes the cached header
            got = load_npy(str(tmp_path / f"{k}.npy"))
            assert got.dtype == arr.dtype and got.shape == arr.shape and got.flags.writeable and np.array_equal(got, arr), (k, got)
    whole = (tmp_path / "0.npy").read_bytes()
    for name, data in (("empty", b""), ("short", b"\x93NUM"), ("header", whole[:60]), ("data", whole[:-2]), ("text", b"not a numpy file at all")):
        (tmp_path / f"{name}.npy").write_bytes(data)
        with pytest.raises(ValueError, match=rf"{name}\.npy.*cannot load latents"):
            load_npy(str(tmp_path / f"{name}.npy"), "latents")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy.*object arrays"):
        load_npy(str(tmp_path / "objects.npy"))


def test_bench_readers_smoke_rows():
    proc = subprocess.run([sys.executable, "bench/bench_readers.py", "--rows", "folder256", "features_uvit", "--n", "2", "--source_size", "300", "300", "--repeats", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=180, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "image folder + ImageTransform" in proc.stdout and "U-ViT feature folder" in proc.stdout and "failed" not in proc.stdout, proc.stdout
