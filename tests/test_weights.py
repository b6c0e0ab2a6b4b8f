"""common.weights: one reader for the field's weight files, one strict loader."""
import importlib.util

import numpy as np
import paddle
import pytest

from common.weights import load_state_dict_strict, read_state_dict, unwrap_state_dict


def test_reads_npz_pdparams_and_nested_checkpoints(tmp_path):
    a = {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "i": np.arange(3)}
    np.savez(tmp_path / "a.npz", **a)
    got = read_state_dict(str(tmp_path / "a.npz"))
    assert got["w"].dtype == np.float32 and got["i"].dtype == a["i"].dtype
    paddle.save({"model": {"w": paddle.ones([2])}, "ema": {"w": paddle.zeros([2])}, "step": 3}, str(tmp_path / "c.pdparams"))
    ckpt = read_state_dict(str(tmp_path / "c.pdparams"))
    assert sorted(ckpt) == ["ema", "model"] and unwrap_state_dict(ckpt)["w"].tolist() == [1.0, 1.0]
    with pytest.raises(FileNotFoundError, match="--model_weights 'nope.pt' does not exist"):
        read_state_dict("nope.pt", "--model_weights")
    (tmp_path / "x.onnx").write_bytes(b"0")
    with pytest.raises(ValueError, match="unknown extension '.onnx'"):
        read_state_dict(str(tmp_path / "x.onnx"))
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_state_dict(str(tmp_path / "bad.safetensors"))


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed here")
def test_torch_pickle_without_torch_says_what_to_do(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"not read")
    with pytest.raises(ImportError, match=r"needs torch.*pip install torch.*safetensors"):
        read_state_dict(str(tmp_path / "m.pt"), "--model_weights")


def test_strict_loader_lists_every_problem():
    model = paddle.nn.Sequential(paddle.nn.Linear(2, 3), paddle.nn.Linear(3, 1))
    good = {k: v.numpy() + 1 for k, v in model.state_dict().items()}
    assert load_state_dict_strict(model, good, "good.npz") == (4, [])
    np.testing.assert_allclose(model.state_dict()["0.bias"].numpy(), good["0.bias"])
    bad = dict(good)
    bad.pop("1.bias")
    bad["2.weight"] = np.zeros(1, np.float32)
    bad["0.weight"] = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"bad.npz: .*1 missing \['1.bias'\], 1 unexpected \['2.weight'\], 1 wrong shapes \['0.weight: \(3, 2\)"):
        load_state_dict_strict(model, bad, "bad.npz")
    partial = {k: v for k, v in good.items() if k.startswith("0.")}
    loaded, kept = load_state_dict_strict(model, partial, "warm.npz", allow_partial=True)
    assert loaded == 2 and kept == ["1.bias", "1.weight"]
    assert load_state_dict_strict(model, partial, "enc.npz", allow_missing=("1.",))[1] == ["1.bias", "1.weight"]


def test_trainer_resume_loads_strictly():
    """The paddlenlp Trainer examples resume through SafeTrainerMixin._set_state_dict_in_model:
    another model's checkpoint fails naming it, instead of paddlenlp's logged warnings."""
    from types import SimpleNamespace

    from common.safe_trainer import SafeTrainerMixin

    model = paddle.nn.Linear(2, 3)
    host = SimpleNamespace(model=model, _resume_source="out/checkpoint-8")
    SafeTrainerMixin._set_state_dict_in_model(host, {k: v.numpy() * 0 for k, v in model.state_dict().items()})
    assert float(model.weight.abs().sum()) == 0.0
    with pytest.raises(ValueError, match=r"out/checkpoint-8: .*1 wrong shapes \['weight: \(4, 3\)"):
        SafeTrainerMixin._set_state_dict_in_model(host, {"weight": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32)})
