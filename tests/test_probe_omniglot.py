"""Real data: a MAML-style inner loop on 20 Omniglot characters, probed at every inner step.

Images are read straight from ``data_root / "omniglot" / images_background_small1.zip``
(28x28 LANCZOS, inverted so strokes are 1), independent of the training data layer.
The support set is each character's first drawing, the shared probe set its second.
"""
import io
import zipfile

import higher
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from PIL import Image
from torch import nn
from torch.func import functional_call

from repscope.probes import Probe, open_run, write_checkpoint

ALPHABET = "images_background_small1/Latin/"
LAYERS = ["conv1", "conv2", "conv3", "conv4", "head"]


def load_drawings(zip_path, n_chars=20):
    """First and second drawing of the first ``n_chars`` characters: (x1, x2, ids1, ids2)."""
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith(ALPHABET) and n.endswith(".png"))
        chars = sorted({n.rsplit("/", 1)[0] for n in names})[:n_chars]
        picks = [[n for n in names if n.startswith(c + "/")][:2] for c in chars]

        def image(name):
            with Image.open(io.BytesIO(archive.read(name))) as img:
                small = img.convert("L").resize((28, 28), Image.LANCZOS)
            return 1.0 - np.asarray(small, dtype=np.float32) / 255.0

        x = [torch.from_numpy(np.stack([image(p[k]) for p in picks]))[:, None] for k in (0, 1)]
    return x[0], x[1], [p[0] for p in picks], [p[1] for p in picks]


def block(c_in):
    return nn.Sequential(nn.Conv2d(c_in, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU())


class Conv4(nn.Module):
    def __init__(self, n_way=20):
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.conv4 = block(1), block(64), block(64), block(64)
        self.head = nn.Linear(64, n_way)

    def forward(self, x):
        h = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return self.head(h.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def omniglot(data_root):
    return load_drawings(data_root / "omniglot" / "images_background_small1.zip")


def test_images_are_real_inverted_characters(omniglot):
    support, probe_x, ids, probe_ids = omniglot
    assert support.shape == probe_x.shape == (20, 1, 28, 28)
    ink = (probe_x > 0.5).float().mean(dim=(1, 2, 3))
    assert ((ink > 0.02) & (ink < 0.5)).all(), "strokes are 1, background 0"
    assert ids[0].endswith("_01.png") and probe_ids[0].endswith("_02.png")
    assert len({i.rsplit("/", 2)[1] for i in ids}) == 20


def test_inner_loop_on_omniglot_recorded_and_stored(omniglot, tmp_path):
    support, probe_x, _, probe_ids = omniglot
    labels = torch.arange(20)
    torch.manual_seed(0)
    net = Conv4()
    probe = Probe(net, reduce={"conv1": "spatial_mean"})
    assert probe.layers == LAYERS
    opt = torch.optim.SGD(net.parameters(), lr=0.4)
    fast_params, records = [], []
    with higher.innerloop_ctx(net, opt, copy_initial_weights=False) as (fmodel, diffopt):
        for step in range(3):
            with probe.recording(checkpoint=0, task=0, inner_step=step, labels=labels,
                                 image_ids=probe_ids, role="probe", module=fmodel) as rec:
                fmodel(probe_x)
            records.append(rec)
            fast_params.append(dict(zip([n for n, _ in net.named_parameters()], fmodel.fast_params)))
            diffopt.step(F.cross_entropy(fmodel(support), labels))
    assert all(not m._forward_hooks for m in list(net.modules()) + list(fmodel.modules()))

    for rec, params in zip(records, fast_params):
        with torch.no_grad():
            h = functional_call(net, params, (probe_x,))          # the whole net, for the head
            c1 = functional_call(net.conv1, {k[6:]: v for k, v in params.items()
                                             if k.startswith("conv1.")}, (probe_x,))
        assert torch.equal(torch.from_numpy(rec.activations["head"]), h)
        assert torch.equal(torch.from_numpy(rec.activations["conv1"]), c1.mean(dim=(2, 3)))
    head = [torch.from_numpy(r.activations["head"]) for r in records]
    assert not torch.equal(head[0], head[1]) and not torch.equal(head[1], head[2])

    ds = probe.to_dataset(config={"dataset": "omniglot", "alphabet": "Latin"})
    assert ds["conv1"].attrs["feature_shape"] == [64, 14, 14] and ds.sizes["unit_conv1"] == 64
    assert ds["conv2"].attrs["feature_shape"] == [64, 7, 7] and ds.sizes["unit_conv2"] == 64 * 49
    assert ds["image_id"].values.tolist() == probe_ids
    write_checkpoint(tmp_path, ds)
    xr.testing.assert_identical(open_run(tmp_path), ds)
