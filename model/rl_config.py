"""The config sections of RL on sampled answers (model/rl.py), kept free of torch: the stages that declare them are
imported by the CLI before anything heavy loads."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from data.chat.skills import SKILL_NAMES
from model.posttrain import LoopConfig


class GRPOConfig(LoopConfig):
    """What a GRPO run needs beyond the loop's optimisation settings (the RLHF mode's section extends it too)."""

    k: int = Field(8, ge=2, description="Answers sampled per prompt: the group its rewards are normalised in.")
    prompts_per_step: int = Field(8, ge=1, description="Prompts per update (k answers each).")
    max_new_tokens: int = Field(48, ge=1, description="Longest sampled answer, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    kl_coef: float = Field(0.05, ge=0, description="Weight of the per-token KL to the frozen reference (k3).")


class RLConfig(GRPOConfig):
    """The `rl` stage: RL on problems a checker grades (the chat skills), by GRPO or by rejection sampling + SFT.

    The defaults fit the tiny preset (~1-1.5 minutes on 2 cores): the held-out pass@1 gain comes in the first ~20
    steps (the policy sharpens towards the answers it can check right); more steps mostly memorise the training
    problems."""

    steps: int = Field(20, ge=0, description="Optimizer steps (grpo mode).")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate (after warmup, cosine decay to min_lr_ratio).")
    warmup_steps: int = Field(3, ge=0)
    eval_every: int = Field(10, ge=0, description="Held-out evaluation every N steps (and before and after).")
    ckpt_every: int = Field(10, ge=0, description="Checkpoint every N steps (and at the end); a rerun resumes.")
    log_every: int = Field(2, ge=1)

    mode: Literal["grpo", "rejection"] = Field("grpo", description="grpo: group-normalised policy gradient; "
                                               "rejection: keep the best correct answer per problem, SFT on it.")
    skills: list[str] = Field(["letter_count", "arithmetic"], description="Chat skills whose checks are rewards.")
    format_reward: float = Field(0.0, ge=0, lt=1, description="Bonus for an answer ending 'Answer: N' (0: off).")
    train_problems: int = Field(60, ge=1, description="Candidate training problems drawn per skill.")
    eval_problems: int = Field(30, ge=1, description="Held-out problems per skill, never trained on.")
    eval_k: int = Field(8, ge=1, description="Samples per held-out problem for pass@1 / pass@k.")
    select: bool = Field(True, description="Train only on problems the starting model solves at least once in k.")
    rounds: int = Field(3, ge=1, description="rejection mode: sample-select-finetune rounds.")
    sft_steps: int = Field(15, ge=1, description="rejection mode: SFT steps per round.")
    sft_lr: float = Field(1e-4, gt=0, description="rejection mode: the SFT learning rate (at GRPO's 3e-4 the tiny "
                          "model overfits its own answers: held-out pass@1 fell).")
    sft_batch_size: int = Field(8, ge=1, description="rejection mode: conversations per SFT step.")
    max_repetition: float = Field(0.5, gt=0, description="Guard: stop when held-out answers repeat more than this.")
    max_length_ratio: float = Field(3.0, gt=0, description="Guard: stop when answers grow past this x the references.")

    @field_validator("skills")
    @classmethod
    def _known(cls, skills: list[str]) -> list[str]:
        unknown = [s for s in skills if s not in SKILL_NAMES]
        if unknown or not skills:
            raise ValueError(f"unknown or no skill(s) {unknown}; known: {sorted(SKILL_NAMES)}")
        return skills
