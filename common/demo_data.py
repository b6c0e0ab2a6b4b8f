"""Build the bundled demo datasets from real images shipped inside scikit-image and scikit-learn.

Nothing is downloaded.  ``python -m common.demo_data`` (or :func:`ensure_demo_data`) writes,
deterministically and in a few seconds, under ``data/demo/`` (git-ignored)::

    faces/face_000.png ...             100 LFW faces (scikit-image ``lfw_subset``), 25x25 gray as RGB
    photos/<name>.png                  18 photographs (scikit-image + scikit-learn samples), long side <= 512
    photos/metadata.jsonl              {"file_name", "text"} captions (image-folder + captions layout)
    digits/<0-9>/digit_NNNN.png        1797 handwritten digits (scikit-learn), 8x8 upsampled to 32x32 RGB
    digits/metadata.jsonl              {"file_name", "text", "label"}
    digits_coco.jsonl                  coco_karpathy style {"caption", "image", "image_id"}, 2 captions/image,
    photos_coco.jsonl                  image paths relative to the jsonl
    laion_digits/laion400m_format_data/part-00000{0,1,2}.gz    caption \\t _ \\t img_b64 (PNG)
    laion_digits/filelist/digits.filelist[.list]
    laion_photos/laion400m_format_data/part-000000.gz          one part (exercises the few-parts path)
    laion_photos/filelist/photos.filelist[.list]

A ``.complete`` stamp holding :data:`DEMO_DATA_VERSION` marks a finished build; an existing
complete build is re-used.
"""
import argparse
import json
import os
import shutil

import numpy as np
from PIL import Image

from common.laion import encode_image_b64, write_laion_parts

DEMO_DATA_VERSION = "2"  # 2: faces/ holds only the 100 faces of lfw_subset (1 also held its 100 non-faces)
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_DEMO_ROOT = os.path.join(REPO_ROOT, "data", "demo")

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_CAPTION_TEMPLATES = ["a handwritten digit {name}", "the number {num} written by hand"]

# (loader, caption) for each photograph; captions written for this project
_SKIMAGE_PHOTOS = {
    "astronaut": "an astronaut in a white spacesuit in front of an american flag",
    "coffee": "a cup of coffee on a saucer with a spoon",
    "chelsea": "a ginger tabby cat looking to the side",
    "rocket": "a rocket on a launch pad under a blue sky",
    "hubble_deep_field": "a deep field of distant galaxies in black space",
    "retina": "a photograph of the back of a human eye with red blood vessels",
    "immunohistochemistry": "a stained tissue sample under a microscope, brown and blue cells",
    "colorwheel": "a color wheel with a rainbow of hues",
    "camera": "a black and white photo of a man with a camera on a tripod",
    "moon": "a black and white close up of the cratered surface of the moon",
    "coins": "a black and white photo of old coins on a table",
    "brick": "a black and white texture of a brick wall",
    "grass": "a black and white texture of grass",
    "gravel": "a black and white texture of gravel",
    "cell": "a black and white microscope image of a cell",
    "motorcycle": "a red motorcycle parked in a garage",
}
_SKLEARN_PHOTOS = {
    "china.jpg": "a chinese temple with a red roof among green trees",
    "flower.jpg": "a pink flower with yellow center in close up",
}


def _rgb(array):
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3]).convert("RGB")


def _photos():
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = []
    for name, caption in _SKIMAGE_PHOTOS.items():
        if name == "motorcycle":
            image = skimage.data.stereo_motorcycle()[0]
        else:
            image = getattr(skimage.data, name)()
        out.append((name, _rgb(image), caption))
    samples = load_sample_images()
    for path, image in zip(samples.filenames, samples.images):
        base = os.path.basename(path)
        out.append((os.path.splitext(base)[0], _rgb(image), _SKLEARN_PHOTOS[base]))
    resized = []
    for name, image, caption in out:
        scale = 512 / max(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        resized.append((name, image, caption))
    return resized


def _faces():
    """The 100 faces of scikit-image's ``lfw_subset`` (its first 100 images; the other 100 are
    background crops, "non-faces", for training face detectors)."""
    import skimage.data

    faces = np.load(os.path.join(os.path.dirname(skimage.data.__file__), "lfw_subset.npy"))
    if faces.shape != (200, 25, 25):
        raise ValueError(f"scikit-image lfw_subset.npy: expected 100 faces + 100 non-faces of 25x25, got shape {faces.shape}")
    return [_rgb(face) for face in faces[:100]]


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for img in digits.images:  # 8x8, values 0..16, white digit on black
        small = Image.fromarray((img / 16.0 * 255).round().astype(np.uint8))
        images.append(small.resize((32, 32), Image.BICUBIC).convert("RGB"))
    return images, [int(t) for t in digits.target]


def digit_captions(label):
    """Captions for a digit class ``label`` (0-9), e.g. ``"a handwritten digit seven"``."""
    return [t.format(name=DIGIT_NAMES[label], num=label) for t in DIGIT_CAPTION_TEMPLATES]


def _write_laion(root, name, records, per_part):
    data_dir = os.path.join(root, "laion400m_format_data")
    parts = write_laion_parts(records, data_dir, per_part_file_num=per_part, save_gzip_file=True)
    os.makedirs(os.path.join(root, "filelist"), exist_ok=True)
    filelist = os.path.join(root, "filelist", f"{name}.filelist")
    with open(filelist, "w") as f:
        f.write("".join(os.path.abspath(p) + "\n" for p in parts))
    with open(filelist + ".list", "w") as f:
        f.write(os.path.abspath(filelist) + "\n")
    return filelist + ".list"


def build_demo_data(root):
    """Write every demo dataset under ``root`` (see module docstring). Returns ``root``."""
    tmp = root.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)

    # faces
    os.makedirs(os.path.join(tmp, "faces"))
    for i, face in enumerate(_faces()):
        face.save(os.path.join(tmp, "faces", f"face_{i:03d}.png"))

    # photos + captions
    photos = _photos()
    os.makedirs(os.path.join(tmp, "photos"))
    with open(os.path.join(tmp, "photos", "metadata.jsonl"), "w") as meta, open(os.path.join(tmp, "photos_coco.jsonl"), "w") as coco:
        for name, image, caption in photos:
            image.save(os.path.join(tmp, "photos", f"{name}.png"))
            meta.write(json.dumps({"file_name": f"{name}.png", "text": caption}) + "\n")
            coco.write(json.dumps({"caption": caption, "image": f"photos/{name}.png", "image_id": name}) + "\n")

    # digits: class folders + captions
    images, labels = _digits()
    for k in range(10):
        os.makedirs(os.path.join(tmp, "digits", str(k)))
    records = []
    with open(os.path.join(tmp, "digits", "metadata.jsonl"), "w") as meta, open(os.path.join(tmp, "digits_coco.jsonl"), "w") as coco:
        for i, (image, label) in enumerate(zip(images, labels)):
            rel = f"{label}/digit_{i:04d}.png"
            image.save(os.path.join(tmp, "digits", rel))
            captions = digit_captions(label)
            meta.write(json.dumps({"file_name": rel, "text": captions[0], "label": label}) + "\n")
            for caption in captions:
                coco.write(json.dumps({"caption": caption, "image": f"digits/{rel}", "image_id": f"digit_{i:04d}"}) + "\n")
            records.append((captions[i % len(captions)], encode_image_b64(image, "PNG")))

    # laion400m-format parts (absolute paths in the filelists are rewritten after the move)
    _write_laion(os.path.join(tmp, "laion_digits"), "digits", records, per_part=600)
    _write_laion(os.path.join(tmp, "laion_photos"), "photos", ((c, encode_image_b64(im, "JPEG")) for _, im, c in photos), per_part=1000)

    with open(os.path.join(tmp, ".complete"), "w") as f:
        f.write(DEMO_DATA_VERSION + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    for name in ("digits", "photos"):
        filelist = os.path.join(root, f"laion_{name}", "filelist", f"{name}.filelist")
        with open(filelist) as f:
            lines = [line.replace(os.path.abspath(tmp), os.path.abspath(root)) for line in f]
        with open(filelist, "w") as f:
            f.writelines(lines)
        with open(filelist + ".list", "w") as f:
            f.write(os.path.abspath(filelist) + "\n")
    return root


def ensure_demo_data(root=DEFAULT_DEMO_ROOT):
    """Return ``root`` after building the demo data there unless a complete build exists."""
    stamp = os.path.join(root, ".complete")
    if os.path.isfile(stamp) and open(stamp).read().strip() == DEMO_DATA_VERSION:
        return root
    return build_demo_data(root)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default=DEFAULT_DEMO_ROOT, help="where to write (default: data/demo)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    args = parser.parse_args()
    root = build_demo_data(args.output_dir) if args.force else ensure_demo_data(args.output_dir)
    print(root)


if __name__ == "__main__":
    main()
