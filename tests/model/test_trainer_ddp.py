"""DDP on CPU (gloo, 2 processes): ranks read disjoint micro-batches and end identical to one process on both; MFU is
per device; a masked (SFT) step weighs every target token of the global batch alike, however it is split over
micro-batches and ranks, under DDP and DeepSpeed."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.optim.optimizer import register_optimizer_step_pre_hook

from model.config import GPTConfig
from model.gpt import GPT
from model.trainer import TrainConfig, train

CFG = dict(steps=4, batch_size=4, lr=1e-2, warmup_steps=1, log_every=2, eval_every=0, ckpt_every=2)
PEAK = 1e12  # a made-up peak, given to train() as one device's


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
    logs = {}
    result = train(model, TrainConfig(**CFG), batches, None, ckpt_dir, peak_flops=PEAK,
                   on_log=lambda step, m: logs.__setitem__(step, m))
    torch.save({"state": model.state_dict(), "tokens": result["tokens"], "logs": logs}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(out / "init"), str(out / "ckpt"), str(out)), nprocs=2)
    return out


def test_two_process_ddp_matches_one_process_on_the_combined_batches(two_ranks, tmp_path):
    r0, r1 = torch.load(two_ranks / "rank0.pt"), torch.load(two_ranks / "rank1.pt")
    assert r0["tokens"] == 4 * 8 * 32  # counts the tokens of both ranks

    single = make_model(seed=0)
    train(single, TrainConfig(**{**CFG, "batch_size": 8}), both_ranks_batch, None, tmp_path / "single")
    for name, weight in single.state_dict().items():
        assert torch.equal(r0["state"][name], r1["state"][name]), name
        assert torch.allclose(r0["state"][name], weight, atol=1e-5), name
    assert sorted(p.name for p in (two_ranks / "ckpt").iterdir()) == ["ckpt_000002", "ckpt_000004"]


def test_mfu_is_what_one_device_reaches_against_one_devices_peak(two_ranks):
    logs = torch.load(two_ranks / "rank0.pt")["logs"]
    assert sorted(logs) == [2, 4] and torch.load(two_ranks / "rank1.pt")["logs"] == {}  # rank 0 reports
    flops_per_token = make_model(seed=0).flops_per_token()
    for m in logs.values():
        per_device = m["tokens_per_s"] / 2  # tokens_per_s counts both ranks' tokens
        assert m["mfu"] == pytest.approx(100 * flops_per_token * per_device / PEAK, rel=1e-9)


# --- SFT: the loss of a step is its token losses summed over micro-batches and ranks / the global target tokens ---

ANSWERS = [1, 9, 2, 14, 3, 5, 12, 1]  # answer lengths of the 8 rows: micro-batches of 2 rows hold 10, 16, 8, 13 targets
SFT_CFG = dict(steps=1, lr=1e-2, warmup_steps=1, grad_clip=0.0, log_every=1, eval_every=0, ckpt_every=0, prefetch=0)


def conversations():
    """8 padded rows, each with a prompt, an answer of ANSWERS[r] tokens (mask on) and padding (target -1)."""
    g = torch.Generator().manual_seed(7)
    x, y = torch.randint(0, 64, (8, 24), generator=g), torch.randint(0, 64, (8, 24), generator=g)
    mask = torch.zeros(8, 24)
    for r, n in enumerate(ANSWERS):
        mask[r, 4:4 + n] = 1
        y[r, 4 + n + 1:] = -1
    return x, y, mask


def sft_batches(batch_size: int):
    x, y, mask = conversations()
    return lambda i: (x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size],
                      mask[i * batch_size:(i + 1) * batch_size])


def step_gradients(model: GPT, cfg: TrainConfig, batch_size: int, ckpt_dir) -> tuple[dict, float]:
    """The gradients the optimizer's first step applies (by parameter name) and the step's logged loss."""
    names = {id(p): n for n, p in model.named_parameters()}
    grads, logs = {}, {}

    def capture(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            grads.update({names[id(p)]: p.grad.detach().clone() for p in group["params"] if p.grad is not None})

    handle = register_optimizer_step_pre_hook(capture)
    try:
        train(model, cfg, sft_batches(batch_size), None, ckpt_dir, on_log=lambda step, m: logs.__setitem__(step, m))
    finally:
        handle.remove()
    return grads, logs.get(1, {}).get("loss")


def sft_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cfg = TrainConfig(**SFT_CFG, batch_size=2, grad_accum=2)
    grads, loss = step_gradients(make_model(seed=0), cfg, 2, f"{out_dir}/ckpt")
    torch.save({"grads": grads, "loss": loss}, f"{out_dir}/sft_rank{rank}.pt")
    dist.destroy_process_group()


def test_masked_batches_give_the_same_step_however_they_are_split_over_micro_batches_and_ranks(tmp_path):
    whole_grads, whole_loss = step_gradients(make_model(seed=0), TrainConfig(**SFT_CFG, batch_size=8), 8,
                                             tmp_path / "whole")
    micro_grads, micro_loss = step_gradients(make_model(seed=0), TrainConfig(**SFT_CFG, batch_size=2, grad_accum=4),
                                             2, tmp_path / "micro")
    mp.spawn(sft_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"sft_rank{r}.pt") for r in (0, 1)]

    with torch.no_grad():  # the mean over all 47 answer tokens at the initial weights
        _, token_mean = make_model(seed=0)(*conversations())
    assert whole_loss == pytest.approx(float(token_mean), rel=1e-6)
    assert micro_loss == pytest.approx(float(token_mean), rel=1e-6)
    assert ranks[0]["loss"] == pytest.approx(float(token_mean), rel=1e-6) and ranks[1]["loss"] is None
    assert len(whole_grads) == len(list(make_model(seed=0).parameters()))
    for name, grad in whole_grads.items():
        assert torch.allclose(micro_grads[name], grad, rtol=0, atol=1e-6), name
        for r in ranks:
            assert torch.allclose(r["grads"][name], grad, rtol=0, atol=1e-6), name
    # the split matters: the mean of the micro-batches' own means (equal weights) has other gradients
    naive = make_model(seed=0)
    x, y, mask = conversations()
    (sum(naive(x[i:i + 2], y[i:i + 2], mask[i:i + 2])[1] for i in range(0, 8, 2)) / 4).backward()
    assert max(float((p.grad - whole_grads[n]).abs().max()) for n, p in naive.named_parameters()) > 1e-4


def cycled(batch_size: int):
    """sft_batches over and over: micro-batch i is i modulo the global batch's micro-batches."""
    batches = sft_batches(batch_size)
    return lambda i: batches(i % (8 // batch_size))


def deepspeed_sft_worker(rank: int, port: int, out_dir: str) -> None:
    import deepspeed

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    deepspeed.init_distributed(dist_backend="gloo")
    logs = {}
    cfg = TrainConfig(**{**SFT_CFG, "steps": 4}, batch_size=2, grad_accum=2, strategy="deepspeed", zero_stage=1)
    train(make_model(seed=0), cfg, cycled(2), None, f"{out_dir}/ckpt", on_log=lambda s, m: logs.__setitem__(s, m))
    torch.save(logs, f"{out_dir}/ds_rank{rank}.pt")
    dist.destroy_process_group()


def test_masked_steps_under_deepspeed_follow_one_process_with_the_whole_batch(tmp_path, monkeypatch):
    """DeepSpeed scales the loss by 1/grad_accum and averages over ranks itself: the token weighting survives that."""
    pytest.importorskip("deepspeed")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(deepspeed_sft_worker, args=(port, str(tmp_path)), nprocs=2)
    ranks = torch.load(tmp_path / "ds_rank0.pt")
    whole = {}
    train(make_model(seed=0), TrainConfig(**{**SFT_CFG, "steps": 4}, batch_size=8), cycled(8), None,
          tmp_path / "whole", on_log=lambda step, m: whole.__setitem__(step, m["loss"]))
    assert sorted(ranks) == sorted(whole) == [1, 2, 3, 4]
    for step, loss in whole.items():
        assert ranks[step]["loss"] == pytest.approx(loss, rel=1e-5), step
