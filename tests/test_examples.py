"""The examples and entry points run: examples/train_moe.py trains (tiny size), jax_moe.profile profiles."""

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


def test_profile_entry_point_runs_a_training_step(tmp_path, capsys):
    from jax_moe import profile

    profile.main(["--shape", "seed_nomic", "--tokens", "8", "--dtype", "float32", "--grad", "--steps", "1",
                  "--kernels", "--trace-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "forward + backward" in out and "us per layer" in out and any(tmp_path.rglob("*"))
