"DDP (2 processes, gloo, CPU): normalization vectors and weights stay identical on both ranks (bssn_book.norms)."
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from bssn_book.norms import apply_norm

WORLD = 2
TIMEOUT_S = 120
CASES = [dict(kind="sn"), dict(kind="bssn", scale=1.3), dict(kind="strict"), dict(kind="ssn", scale=1.2, gamma="shared")]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_d():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(8, 16, 4, stride=2, padding=1),
                         nn.LeakyReLU(0.1), nn.Flatten(), nn.Linear(16 * 4 * 4, 1))


def worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = []
        for i, opts in enumerate(CASES):
            torch.manual_seed(100 + i)  # same initial weights and vectors on both ranks ...
            D = small_d()
            opts = dict(opts)
            if opts["kind"] == "strict":
                opts["example_input"] = torch.zeros(1, 3, 8, 8)
            apply_norm(D, **opts)
            with torch.no_grad():  # ... then perturb rank 1's vectors: DDP's broadcast from rank 0 must fix them
                if rank == 1:
                    for b in D.buffers():
                        b.add_(0.1)
            ddp = nn.parallel.DistributedDataParallel(D, broadcast_buffers=True)
            opt = torch.optim.Adam(ddp.parameters(), lr=1e-3, betas=(0.5, 0.999))
            gen = torch.Generator().manual_seed(1000 * rank + i)  # different data on each rank
            for _ in range(5):
                real, fake = torch.randn(8, 3, 8, 8, generator=gen), torch.randn(8, 3, 8, 8, generator=gen)
                logits = ddp(torch.cat([real, fake]))
                loss = F.relu(1 - logits[:8]).mean() + F.relu(1 + logits[8:]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            ddp(torch.zeros(1, 3, 8, 8))  # one more forward: buffers broadcast again, then one more update
            results.append({k: v.detach().clone() for k, v in D.state_dict().items() if torch.is_tensor(v)})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo "
                    "is not available in this torch build")
def test_ddp_two_ranks_identical_vectors_and_weights(tmp_path):
    # fork: the workers inherit the imported modules (spawn would re-import torch in each, ~10 s on a busy machine)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False,
                             start_method=method)
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail(f"DDP workers did not finish within {TIMEOUT_S} s")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    for opts, a, b in zip(CASES, r0, r1):
        assert a.keys() == b.keys()
        vectors = [k for k in a if k.split(".")[-1] in ("_u", "_v", "_u0", "_v0", "_u1", "_v1", "_x")]
        assert vectors, opts
        for k in a:
            assert torch.equal(a[k], b[k]), (opts, k)
        first = next(k for k in a if k.endswith("original"))
        assert torch.isfinite(a[first]).all()
