"""The one definition of the training settings (model.trainer.TrainConfig and the preset sections built on it,
model.config.ModelSection): defaults, validation, "auto" resolution, the JSON trip to the ranks and the launch
command each node runs."""
from pathlib import Path

import pytest
from pydantic import ValidationError

from model import launch
from model.config import FinetuneConfig, GPTConfig, ModelSection, PretrainConfig, TrainConfig, training_budget
from model.trainer import train


def test_the_preset_sections_keep_their_defaults():
    base, pre, fine = TrainConfig(), PretrainConfig(), FinetuneConfig()
    assert (base.steps, base.batch_size, base.warmup_steps, base.device, base.dtype) == (600, 8, 30, "auto", "auto")
    assert (pre.steps, pre.grad_accum, pre.windows) == (600, 1, "random")
    assert (fine.steps, fine.batch_size, fine.lr, fine.warmup_steps, fine.eval_every, fine.ckpt_every) == \
        (300, 16, 1e-3, 10, 100, 100)
    assert fine.init_from is None and fine.max_seq_len is None
    assert (base.nproc, base.nnodes, base.node_rank, base.strategy, base.launcher) == (1, 1, 0, "ddp", "torchrun")
    with pytest.raises(ValidationError, match="stepz"):
        TrainConfig(stepz=3)
    with pytest.raises(ValidationError, match="optimizer"):
        TrainConfig(optimizer="sgd")


def test_auto_steps_and_grad_accum_follow_the_budget_over_every_node():
    cfg = PretrainConfig(steps="auto", grad_accum="auto", batch_size=4, nproc=2, nnodes=2, master_port=29500)
    resolved = cfg.budgeted(n_params=2_000_000, seq_len=256)
    assert (resolved.steps, resolved.grad_accum) == training_budget(2_000_000, 256, 4, world=4)
    fixed = PretrainConfig(steps="auto", grad_accum=3).budgeted(n_params=2_000_000, seq_len=256)
    assert fixed.grad_accum == 3 and fixed.steps == training_budget(2_000_000, 256, 8, grad_accum=3)[0]
    with pytest.raises(ValueError, match="'auto'"):
        train(None, PretrainConfig(steps="auto"), None, None, Path("unused"))


def test_auto_device_and_dtype_resolve_to_what_the_machine_has(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert TrainConfig().resolved().device == "cpu" and TrainConfig().resolved().dtype == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (TrainConfig().resolved().device, TrainConfig().resolved().dtype) == ("cuda", "bfloat16")
    assert TrainConfig(device="cuda:1", dtype="float32").resolved().model_dump() == \
        TrainConfig(device="cuda:1", dtype="float32").model_dump()


def test_a_section_travels_to_the_ranks_as_its_train_config_fields(tmp_path):
    section = PretrainConfig(steps=7, grad_accum=2, windows="sequential", nproc=2, strategy="deepspeed", zero_stage=3)
    job = launch.Job(builder="model.jobs:pretrain_job", args={"seed": 0}, train=section, ckpt_dir=str(tmp_path))
    assert type(job.train) is TrainConfig and "windows" not in job.train.model_dump()
    back = launch.Job.model_validate_json(job.model_dump_json())
    assert back == job and back.train == TrainConfig.of(section)
    assert (back.train.steps, back.train.grad_accum, back.train.zero_stage) == (7, 2, 3)
    assert TrainConfig.of(FinetuneConfig(init_from="hf/llama", lr=5e-4)).lr == 5e-4
    with pytest.raises(ValidationError, match="windows"):  # a rank rejects what it does not know
        launch.Job.model_validate({**job.model_dump(), "train": section.model_dump()})


def test_the_model_section_builds_the_depth_rule_config():
    assert ModelSection(depth=6).gpt_config(vocab_size=4096) == \
        GPTConfig.from_depth(6, 4096, 256, aspect_ratio=32, head_dim=32, kv_ratio=1)


def test_node_settings_are_checked():
    with pytest.raises(ValidationError, match="node_rank 2 must be below nnodes 2"):
        TrainConfig(nnodes=2, node_rank=2, master_port=29500)
    with pytest.raises(ValidationError, match="master_port"):
        TrainConfig(nnodes=2)
    with pytest.raises(ValidationError, match="hostfile"):
        TrainConfig(nnodes=2, master_port=29500, launcher="deepspeed")


def test_where_the_run_happens_is_left_out_of_the_stage_key():
    runtime = {n for n, f in TrainConfig.model_fields.items() if (f.json_schema_extra or {}).get("runtime")}
    assert runtime == {"prefetch", "launcher", "node_rank", "master_addr", "master_port", "hostfile"}


def test_each_node_runs_its_part_of_the_rendezvous():
    one = launch.command(Path("job.json"), TrainConfig(nproc=4))
    assert "--standalone" in one and "--nproc_per_node=4" in one
    node = launch.command(Path("job.json"), TrainConfig(nproc=4, nnodes=2, node_rank=1, master_addr="10.0.0.1",
                                                        master_port=29500))
    assert "--standalone" not in node
    assert {"--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29500", "--nproc_per_node=4"} \
        <= set(node)
    ds = launch.command(Path("job.json"), TrainConfig(nproc=8, nnodes=2, node_rank=1, master_addr="10.0.0.1",
                                                      master_port=29500, launcher="deepspeed", hostfile="/etc/hosts8"))
    assert {"--hostfile=/etc/hosts8", "--num_nodes=2", "--no_ssh", "--node_rank=1", "--master_addr=10.0.0.1",
            "--master_port=29500", "--num_gpus=8"} <= set(ds)
