#!/usr/bin/env python3
"""Regenerates tests/fixtures/*.safetensors: PyTorch's own outputs and gradients for the
tutorial's ops and for one whole training step, which the Rust tests hold the CPU reference
and the GPU to (see tests/fixtures/README.md for every key, docs/REFERENCE.md for the
semantics).

Run from the repository root, in an environment with PyTorch:

    pip install torch numpy pandas scikit-learn safetensors
    OUT_DIR=tests/fixtures THREADS=1 python3 scripts/make_fixtures.py

THREADS=1 is how the committed files were made: with more threads PyTorch's f32 sums come
out in another order (differences of about 1e-5). Each _f64 file takes the f32 file's inputs
and initial parameters, upcast, and computes in float64: the exact answers for them.
"""
import copy
import os

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

MARGIN = 2.0


class siamese(nn.Module):  # noqa: N801  (the tutorial's name)
    """The tutorial's network; index k of feature_net is state_dict name feature_net.k."""

    def __init__(self, z_dimensions=2):
        super().__init__()
        layers = []
        for c_in, c_out, pool in [(1, 4, False), (4, 4, True), (4, 8, False), (8, 8, True)]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c_out)]
            if pool:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(8, 1, 3, padding=1), nn.ReLU()]
        self.feature_net = nn.Sequential(*layers)
        self.linear = nn.Linear(49, z_dimensions)

    def forward(self, x):
        return self.linear(self.feature_net(x).view(-1, 49))


def contrastive_loss(p1, p2, t, margin=MARGIN):
    d = F.pairwise_distance(p1, p2)  # ||p1 - p2 + 1e-6||
    return torch.mean((1 - t) * d**2 + t * torch.clamp(margin - d, min=0.0) ** 2)


def train_split(path):
    """The training part of the 95/5 split, pixels as float32(p) / 255."""
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(path)
    y = df["label"].to_numpy().astype(np.int64)
    x = df.drop(columns=["label"]).to_numpy().reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255)
    x_tr, _, y_tr, _ = train_test_split(x, y, test_size=0.05, random_state=0)
    return x_tr, y_tr


def copy_of(t):
    return t.detach().clone().contiguous()


def training_step(model, img1, img2, target, dtype):
    """State, activations, loss, gradients and Adam steps of one batch, as in the tutorial:
    each tower a train-mode call of its own."""
    model = model.to(dtype)
    img1, img2, target = img1.to(dtype), img2.to(dtype), target.to(dtype)
    out = {f"init.{k}": copy_of(v) for k, v in model.state_dict().items()}
    out["input.img1"], out["input.img2"], out["input.target"] = copy_of(img1), copy_of(img2), copy_of(target)
    tower = [1]
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, k=k: out.__setitem__(f"act{tower[0]}.{k}", copy_of(o)))
        for k, m in enumerate(model.feature_net)
    ]
    model.train()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    adam.zero_grad()
    p1 = model(img1)
    tower[0] = 2
    p2 = model(img2)
    for h in hooks:
        h.remove()
    loss = contrastive_loss(p1, p2, target)
    loss.backward()
    out["output.p1"], out["output.p2"] = copy_of(p1), copy_of(p2)
    out["output.d"], out["output.loss"] = copy_of(F.pairwise_distance(p1, p2)), copy_of(loss)
    out.update({f"grad.{n}": copy_of(p.grad) for n, p in model.named_parameters()})
    out.update({f"after_fwd.{n}": copy_of(b) for n, b in model.named_buffers()})
    adam.step()
    out.update({f"step1.{k}": copy_of(v) for k, v in model.state_dict().items()})
    adam.zero_grad()
    loss = contrastive_loss(model(img1), model(img2), target)
    loss.backward()
    out["step2.loss"] = copy_of(loss)
    out.update({f"step2.grad.{n}": copy_of(p.grad) for n, p in model.named_parameters()})
    adam.step()
    out.update({f"step2.{k}": copy_of(v) for k, v in model.state_dict().items()})
    return out


def ops(dtype, g):
    """Each op on its own: inputs drawn in float32 from g (the same values for both dtypes),
    a random upstream gradient, and PyTorch's gradients."""

    def rnd(*shape, scale=1.0, offset=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float32) * scale + offset).to(dtype)

    def leaf(t):
        return t.clone().requires_grad_(True)

    out = {}

    def backward(prefix, y, **tensors):
        gy = rnd(*y.shape)
        y.backward(gy)
        out.update({f"{prefix}.{k}": v for k, v in tensors.items()})
        return gy

    x, w, b = leaf(rnd(2, 3, 9, 9)), leaf(rnd(4, 3, 3, 3, scale=0.3)), leaf(rnd(4, scale=0.1))
    y = F.conv2d(x, w, b, padding=1)
    gy = backward("conv2d", y, x=x, w=w, b=b, y=y)
    out.update({"conv2d.gy": gy, "conv2d.gx": x.grad, "conv2d.gw": w.grad, "conv2d.gb": b.grad})

    x = leaf(rnd(4, 3, 6, 6, scale=2.0, offset=0.5))
    gamma, beta = leaf(rnd(3, scale=0.2, offset=1.0)), leaf(rnd(3, scale=0.2))
    rm, rv = torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
    gy = backward("bn", y, x=x, gamma=gamma, beta=beta, y=y)
    with torch.no_grad():
        y_eval = F.batch_norm(x, rm, rv, gamma, beta, training=False, eps=1e-5)
    out.update({"bn.gy": gy, "bn.gx": x.grad, "bn.ggamma": gamma.grad, "bn.gbeta": beta.grad,
                "bn.running_mean_after": rm, "bn.running_var_after": rv, "bn.y_eval_with_running": y_eval})

    x = leaf(rnd(2, 3, 8, 8))
    y = F.max_pool2d(x, 2)
    gy = backward("maxpool", y, x=x, y=y)
    out.update({"maxpool.gy": gy, "maxpool.gx": x.grad})

    x0 = rnd(2, 4, 5, 5)
    x0.view(-1)[::7] = 0.0  # ReLU's gradient at exactly 0 is 0
    x = leaf(x0)
    y = F.relu(x)
    gy = backward("relu", y, x=x, y=y)
    out.update({"relu.gy": gy, "relu.gx": x.grad})

    x, w, b = leaf(rnd(5, 49)), leaf(rnd(8, 49, scale=0.14)), leaf(rnd(8, scale=0.1))
    y = F.linear(x, w, b)
    gy = backward("linear", y, x=x, w=w, b=b, y=y)
    out.update({"linear.gy": gy, "linear.gx": x.grad, "linear.gw": w.grad, "linear.gb": b.grad})

    a0, b0 = rnd(6, 8), rnd(6, 8)
    b0[5] = a0[5]  # a pair at distance 0: only the eps keeps the gradient finite
    x1, x2 = leaf(a0), leaf(b0)
    d = F.pairwise_distance(x1, x2)
    gd = backward("pdist", d, x1=x1, x2=x2, d=d)
    out.update({"pdist.gd": gd, "pdist.gx1": x1.grad, "pdist.gx2": x2.grad})

    p1, p2 = leaf(rnd(8, 8, scale=0.5)), leaf(rnd(8, 8, scale=0.5))
    t = torch.tensor([0, 1, 0, 1, 1, 0, 1, 1], dtype=dtype)
    loss = contrastive_loss(p1, p2, t)
    loss.backward()
    with torch.no_grad():
        d = F.pairwise_distance(p1, p2)
    out.update({"closs.p1": p1, "closs.p2": p2, "closs.t": t, "closs.d": d, "closs.loss": loss,
                "closs.gp1": p1.grad, "closs.gp2": p2.grad})
    return {k: copy_of(v) for k, v in out.items()}


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    out_dir = os.environ.get("OUT_DIR", "tests/fixtures")
    x_tr, y_tr = train_split(os.environ.get("DATA", "data/fashion-mnist/train.csv.gz"))
    torch.manual_seed(0)
    model = siamese(z_dimensions=8)
    # 16 pairs, even rows of one class (target 0), odd rows of two (target 1).
    rng = np.random.default_rng(0)
    idx1 = rng.choice(len(y_tr), size=16, replace=False)
    target = np.array([k % 2 for k in range(16)], dtype=np.float32)
    idx2 = []
    for i, t in zip(idx1, target):
        pool = np.flatnonzero(y_tr == y_tr[i]) if t == 0 else np.flatnonzero(y_tr != y_tr[i])
        j = i
        while j == i:
            j = int(pool[rng.integers(len(pool))])
        idx2.append(j)
    idx2 = np.array(idx2)
    img1, img2 = torch.from_numpy(x_tr[idx1]), torch.from_numpy(x_tr[idx2])
    for dtype, suffix in ((torch.float32, ""), (torch.float64, "_f64")):
        out = training_step(copy.deepcopy(model), img1, img2, torch.from_numpy(target), dtype)
        out["input.idx1"], out["input.idx2"] = torch.from_numpy(idx1), torch.from_numpy(idx2)
        path = os.path.join(out_dir, f"parity_fixture{suffix}.safetensors")
        save_file(out, path, metadata={"torch": torch.__version__, "dtype": str(dtype)})
        print(f"{path}: {len(out)} tensors, loss {out['output.loss'].item():.10f}")
    for dtype, suffix in ((torch.float32, ""), (torch.float64, "_f64")):
        out = ops(dtype, torch.Generator().manual_seed(0))
        path = os.path.join(out_dir, f"ops_fixture{suffix}.safetensors")
        save_file(out, path, metadata={"torch": torch.__version__, "dtype": str(dtype)})
        print(f"{path}: {len(out)} tensors")


if __name__ == "__main__":
    main()
