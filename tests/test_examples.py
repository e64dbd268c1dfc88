"""examples/train_moe.py trains (tiny size): the loss falls and the curve is written."""

import importlib.util
import math
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_moe.py"


def test_train_moe_example(tmp_path):
    spec = importlib.util.spec_from_file_location("train_moe", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "loss.png"
    losses = module.main(["--size", "tiny", "--steps", "30", "--out", str(out)])
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0], "training did not reduce the loss"
    assert out.stat().st_size > 0
