"""common.demo_eval: the digit judge the demos are scored with."""
import numpy as np

from common.demo_eval import digit_features, judge_accuracy_on_real_digits, score_digit_images


def test_judge_reads_held_out_real_digits():
    # fitted on 80% of the sklearn digits, scored on the other 20% as the demo data renders them
    assert judge_accuracy_on_real_digits() > 0.95


def test_judge_scores_noise_and_wrong_labels_low(demo_root):
    import os

    from PIL import Image

    images, labels = [], []
    for c in range(10):
        folder = os.path.join(demo_root, "digits", str(c))
        for name in sorted(os.listdir(folder))[-4:]:
            images.append(Image.open(os.path.join(folder, name)))
            labels.append(c)
    acc, per_class = score_digit_images(images, labels)
    assert acc > 0.9 and sorted(per_class) == list(range(10))
    shifted = [(c + 1) % 10 for c in labels]  # every image asked to be the next digit
    assert score_digit_images(images, shifted)[0] < 0.2
    noise = [np.random.RandomState(i).randint(0, 256, (32, 32)).astype(np.uint8) for i in range(40)]
    assert score_digit_images(noise, [i % 10 for i in range(40)])[0] < 0.4
    assert digit_features(images[:2]).shape == (2, 256)
    import pytest

    with pytest.raises(ValueError, match="as many labels"):
        score_digit_images(images[:3], labels[:2])


def test_face_judge_tells_faces_from_noise_and_blobs(demo_root):
    import os

    from PIL import Image

    from common.demo_eval import face_rate, face_rate_on_real_faces

    # the bundled folder is all faces (the judge finds 0.84 of them; 0.42 when the folder also held
    # lfw_subset's 100 background crops, which score 0)
    assert face_rate_on_real_faces(os.path.join(demo_root, "faces")) > 0.7
    import skimage.data

    crops = np.load(os.path.join(os.path.dirname(skimage.data.__file__), "lfw_subset.npy"))[100:160]
    assert face_rate([(c * 255).astype(np.uint8) for c in crops]) == 0.0
    rng = np.random.RandomState(0)
    noise = [rng.randint(0, 256, (32, 32)).astype(np.uint8) for _ in range(20)]
    blobs = [Image.fromarray((rng.rand(4, 4) * 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC) for _ in range(20)]
    assert face_rate(noise) == 0.0 and face_rate(blobs) <= 0.05


class _DigitDrawingPipeline:
    """A stand-in text-to-image pipeline: draws a real digit (the last ones of data/demo/digits)
    for the number word in each prompt, plus ``shift`` -- so the judge's score tells whether
    --txt2img_pipeline asked for the right digit with the right prompt."""

    shift = 0
    calls = []

    def __init__(self, folder):
        import os

        from PIL import Image

        self.images = {c: Image.open(os.path.join(folder, str(c), sorted(os.listdir(os.path.join(folder, str(c))))[-1]))
                       for c in range(10)}

    @classmethod
    def from_pretrained(cls, path):
        return cls(cls.digits_dir)

    def __call__(self, prompt, num_inference_steps=50, guidance_scale=1.0, generator=None):
        from types import SimpleNamespace

        from common.demo_data import DIGIT_NAMES

        type(self).calls.append((list(prompt), num_inference_steps, guidance_scale))
        words = [p.rsplit(" ", 1)[1] for p in prompt]
        return SimpleNamespace(images=[self.images[(list(DIGIT_NAMES).index(w) + self.shift) % 10] for w in words])


def test_txt2img_cli_prompts_each_digit_and_scores_it(demo_root, tmp_path, monkeypatch, capsys):
    import json
    import os

    import ppdiffusers
    import pytest

    from common.demo_eval import DIGIT_PROMPTS, main

    monkeypatch.setattr(ppdiffusers, "DigitDrawingPipeline", _DigitDrawingPipeline, raising=False)
    monkeypatch.setattr(_DigitDrawingPipeline, "digits_dir", os.path.join(demo_root, "digits"), raising=False)
    monkeypatch.setattr(_DigitDrawingPipeline, "calls", [])
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DigitDrawingPipeline"}))
    argv = ["--txt2img_pipeline", str(tmp_path), "--samples_per_class", "2", "--num_inference_steps", "7", "--guidance_scale", "3"]
    assert main(argv + ["--save_grid", str(tmp_path / "judged.png")]) == 1.0
    out = capsys.readouterr().out
    assert "digit accuracy 1.00 (20/20)" in out and "per class 0:1.00" in out
    from PIL import Image

    from common.demo_eval import digit_judge, digit_features

    side = _DigitDrawingPipeline(os.path.join(demo_root, "digits")).images[0].size[0]
    grid = Image.open(tmp_path / "judged.png")  # --save_grid: the 20 judged samples, one digit per column, 2x upscaled
    assert grid.size == (2 * (10 * side + 11 * 2), 2 * (2 * side + 3 * 2)) and f"grid of the judged samples: {tmp_path / 'judged.png'}" in out
    cells = [grid.resize((grid.width // 2, grid.height // 2), Image.NEAREST).crop((2 + c * (side + 2), 2, 2 + c * (side + 2) + side, 2 + side)) for c in range(10)]
    assert list(digit_judge().predict(digit_features(cells))) == list(range(10))
    prompts, steps, scale = _DigitDrawingPipeline.calls[0]
    assert (steps, scale) == (7, 3.0) and sorted(prompts) == sorted(list(DIGIT_PROMPTS) * 2)
    assert DIGIT_PROMPTS[7] == "a handwritten digit seven"
    monkeypatch.setattr(_DigitDrawingPipeline, "shift", 1)  # draws the next digit: the judge must notice
    assert main(argv) < 0.2
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "NoSuchPipeline"}))
    with pytest.raises(ValueError, match="NoSuchPipeline"):
        main(argv)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        main(["--txt2img_pipeline", str(tmp_path / "missing")])
