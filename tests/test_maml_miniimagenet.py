"""The Mini-ImageNet preset runs end to end on a folder in the Ravi & Larochelle layout.

Mini-ImageNet itself is not on this machine; a tiny folder with the same layout (CSV
splits and an images/ folder) checks the path from --data to a trained checkpoint.
"""
import numpy as np
from PIL import Image

from repscope.training.checkpoint import load_checkpoint, load_run
from repscope.training.config import get_preset
from repscope.training.maml import main



def _fake_miniimagenet(root, n_classes=5, per_class=2):
    folder = root / "miniimagenet"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        rows = ["filename,label"]
        for c in range(n_classes):
            for i in range(per_class):
                name = f"{split}{c}_{i}.jpg"
                pixels = rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / "images" / name)
                rows.append(f"{name},n{split}{c:02d}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_miniimagenet_preset_trains_from_data_folder(tmp_path):
    data = _fake_miniimagenet(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["--preset", "miniimagenet-5way-1shot", "--out", str(out), "--data", str(data),
            "--steps", "1", "--meta-batch", "1", "--inner-steps", "1", "--inner-steps-eval", "1",
            "--n-query", "1", "--n-query-eval", "1", "--val-every", "0", "--test-tasks", "1",
            "--no-progress"]
    assert main(argv) == 0
    config, ckpts = load_run(out)
    assert (config.meta_clip, config.pool, config.features) == (10.0, True, "flatten")
    state = load_checkpoint(ckpts[1])["model"]
    assert state["head.weight"].shape == (5, 800)
    assert state["conv1.conv.weight"].shape == (32, 3, 3, 3)
    assert get_preset("miniimagenet-5way-1shot").n_query == 15
