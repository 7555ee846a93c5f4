"""Overrides for a pipeline small enough to run several times in a test session on 2 cores."""

MICRO = [
    "crawl.sample_pages=40",
    "preprocess.val_fraction=0.2",
    "tokenizer.vocab_size=512",
    "model.depth=2",
    "model.seq_len=64",
    "pretrain.steps=150",
    "pretrain.batch_size=4",
    "pretrain.warmup_steps=5",
    "pretrain.eval_every=75",
    "pretrain.eval_batches=2",
    "pretrain.ckpt_every=75",
    "pretrain.compile=false",  # compiling takes longer than these 150 steps
    "eval_base.val_batches=2",
    "eval_base.probe_items=6",
    "eval_base.sample_tokens=8",
    "labels.sample_conversations=200",
    "labels.sample_comparisons=40",
    "labels.val_fraction=0.25",  # a few held-out comparisons for the reward model and DPO to be measured on
    "finetune.steps=10",
    "finetune.batch_size=4",
    "finetune.warmup_steps=2",
    "finetune.eval_every=5",
    "finetune.eval_batches=2",
    "finetune.ckpt_every=5",
    "reward_model.steps=2",
    "reward_model.batch_size=4",
    "reward_model.eval_every=2",
    "preference.steps=2",
    "preference.batch_size=4",
    "preference.eval_every=2",
    "preference.eval_items=1",
    "preference.max_new_tokens=8",
    "rl.steps=2",
    "rl.k=2",
    "rl.prompts_per_step=2",
    "rl.max_new_tokens=8",
    "rl.train_problems=3",
    "rl.eval_problems=2",
    "rl.eval_k=2",
    "rl.eval_every=2",
    "evals.items_per_task=2",
    "evals.max_new_tokens=16",
]

# The same overrides as `factory` command-line options.
MICRO_ARGS = [arg for override in MICRO for arg in ("--set", override)]
