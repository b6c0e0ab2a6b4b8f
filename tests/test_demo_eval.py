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

    assert face_rate_on_real_faces(os.path.join(demo_root, "faces"), limit=60) > 0.3
    rng = np.random.RandomState(0)
    noise = [rng.randint(0, 256, (32, 32)).astype(np.uint8) for _ in range(20)]
    blobs = [Image.fromarray((rng.rand(4, 4) * 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC) for _ in range(20)]
    assert face_rate(noise) == 0.0 and face_rate(blobs) <= 0.05
