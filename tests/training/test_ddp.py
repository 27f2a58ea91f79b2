"""DDP: two CPU processes (gloo) run the same loop on their shards and end with identical parameters."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from toy_job import ToyJob

from training.loop import LoopConfig, train_loop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    job = ToyJob(seed=0)
    cfg = LoopConfig(epochs=2, lr=1e-2, eval_every=4, patience=100, device="cpu", checkpoint_dir=f"{out}/ckpt")
    result = train_loop(job, cfg)
    torch.save(
        {"params": job.model.state_dict(), "history": result.history, "world": dist.get_world_size()},
        f"{out}/rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_parameters(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    initial = ToyJob(seed=0).model.state_dict()
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name
    assert any(not torch.equal(v, initial[n]) for n, v in ranks[0]["params"].items())
    # each rank saw half of each epoch's 16 batches: 8 steps per epoch
    assert len(ranks[0]["history"]) == 16
    assert [r.get("valid") for r in ranks[0]["history"]] == [r.get("valid") for r in ranks[1]["history"]]
    assert (tmp_path / "ckpt/last.pt").exists()
