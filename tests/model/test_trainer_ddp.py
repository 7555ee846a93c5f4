"""DDP on CPU (gloo, 2 processes): ranks read disjoint micro-batches and end identical to one process on both."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.config import GPTConfig
from model.gpt import GPT
from model.trainer import TrainConfig, train

CFG = dict(steps=4, batch_size=4, lr=1e-2, warmup_steps=1, log_every=2, eval_every=0, ckpt_every=2)


def make_model(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, seq_len=32, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, mlp_hidden=160))


def batches(i: int):
    rows = torch.randint(0, 64, (4, 33), generator=torch.Generator().manual_seed(i))
    return rows[:, :-1], rows[:, 1:], None


def both_ranks_batch(step: int):
    """What ranks 0 and 1 read together at `step`, as one batch."""
    (x0, y0, _), (x1, y1, _) = batches(2 * step), batches(2 * step + 1)
    return torch.cat([x0, x1]), torch.cat([y0, y1]), None


def worker(rank: int, init_file: str, ckpt_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model = make_model(seed=rank)  # different inits: DDP must start every rank from rank 0's weights
    result = train(model, TrainConfig(**CFG), batches, None, ckpt_dir)
    torch.save({"state": model.state_dict(), "tokens": result["tokens"]}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_process_ddp_matches_one_process_on_the_combined_batches(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path / "ckpt"), str(tmp_path)), nprocs=2)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["tokens"] == 4 * 8 * 32  # counts the tokens of both ranks

    single = make_model(seed=0)
    train(single, TrainConfig(**{**CFG, "batch_size": 8}), both_ranks_batch, None, tmp_path / "single")
    for name, weight in single.state_dict().items():
        assert torch.equal(r0["state"][name], r1["state"][name]), name
        assert torch.allclose(r0["state"][name], weight, atol=1e-5), name
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["ckpt_000002", "ckpt_000004"]
