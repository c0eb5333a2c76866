"""FSDP proven, not wired: a real 2-process gloo FSDP run on CPU ends with the same weights as
one process training on the same global batch (the two ranks' batches as two accumulation
micro-batches, which is the gradient FSDP averages), within fp32 tolerance."""

from __future__ import annotations

import os

import pytest
import torch

from videomolmo.training import examples as ex
from videomolmo.training.examples import SynthStream
from videomolmo.training.trainer import TrainConfig, train

from test_training import _free_port  # noqa: E402 - the DDP test's port picker

STEPS = 2


def _fsdp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist
    from safetensors.torch import save_file

    res = train(TrainConfig.from_name("test", steps=STEPS, checkpoint_every=STEPS, fsdp=True), out, progress=False)
    save_file({k: v.contiguous() for k, v in res.model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    from videomolmo.errors import ConfigError

    # Its checkpoints hold rank 0's optimizer shard only: resuming is refused, not done wrong.
    with pytest.raises(ConfigError, match="resuming an FSDP run is not supported"):
        train(TrainConfig.from_name("test", steps=STEPS + 1, fsdp=True), out, resume=True, progress=False)
    dist.destroy_process_group()


class _GlobalBatchStream:
    """One process's view of a `world`-rank run: accumulation micro-batch m of each step is what
    rank m draws from its own `SynthStream` (same seed, same rank-keyed generator)."""

    world = 2

    def __init__(self, *args, rank: int = 0, **kwargs):
        self.ranks = [SynthStream(*args, rank=r, **kwargs) for r in range(self.world)]
        self.calls = 0

    def batch(self, n, step):
        stream = self.ranks[self.calls % self.world]
        self.calls += 1
        return stream.batch(n, step)

    def state(self):
        return [s.state() for s in self.ranks]

    def set_state(self, state):
        for s, st in zip(self.ranks, state):
            s.set_state(st)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_fsdp_two_process_gloo_matches_one_process_on_the_global_batch(tmp_path, monkeypatch):
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    mp.start_processes(_fsdp_worker, args=(2, _free_port(), str(tmp_path / "fsdp")), nprocs=2, join=True,
                       start_method="fork")
    a = load_file(str(tmp_path / "fsdp" / "rank0.safetensors"))
    b = load_file(str(tmp_path / "fsdp" / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    monkeypatch.setattr(ex, "SynthStream", _GlobalBatchStream)
    cfg = TrainConfig.from_name("test", steps=STEPS, checkpoint_every=STEPS)
    single = train(TrainConfig(**{**cfg.__dict__, "grad_accum": cfg.grad_accum * 2}), tmp_path / "one",
                   progress=False).model.state_dict()
    assert single.keys() == a.keys()
    for k in a:
        assert a[k].shape == single[k].shape, k
        torch.testing.assert_close(a[k], single[k], rtol=1e-4, atol=1e-5, msg=k)
    # ... and training really moved the weights.
    torch.manual_seed(0)
    from videomolmo.model import ModelConfig, VideoMolmo

    init = VideoMolmo(ModelConfig.from_name("test-tiny")).state_dict()
    moved = sum(not torch.equal(init[k], a[k]) for k in a)
    assert moved > len(a) // 2
    # The saved final model is the full (unsharded) one.
    saved = load_file(str(tmp_path / "fsdp" / "final" / "model.safetensors"))
    for k, v in saved.items():
        torch.testing.assert_close(v, a[k], msg=k)
