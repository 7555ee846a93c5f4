"""The config sections of learning from comparisons (model/preference.py): the reward model's and the preference
stage's, kept free of torch: the stages that declare them are imported by the CLI before anything heavy loads."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from data.chat.skills import SKILL_NAMES
from model.posttrain import LoopConfig
from model.rl_config import GRPOConfig


class RewardConfig(LoopConfig):
    """The reward model: a scalar head on the SFT model, trained on the comparisons with the pairwise loss."""

    steps: int = Field(40, ge=0, description="Optimizer steps (batch_size pairs each).")
    lr: float = Field(3e-4, gt=0)
    eval_every: int = Field(20, ge=0)
    ckpt_every: int = Field(20, ge=0)
    batch_size: int = Field(16, ge=1, description="Comparisons per step.")
    model_name: str = Field("reward", description="Registered model name in MLflow (a version per build).")


class PreferenceConfig(GRPOConfig):
    """Tuning the SFT model on the comparisons: DPO against the frozen SFT model, or RLHF against the reward model
    (k sampled answers per prompt, group-normalised advantages, a KL penalty to the SFT model, a guard against reward
    hacking). max_new_tokens also bounds the greedy answers of the win rate and of the held-out checks."""

    method: Literal["dpo", "rlhf"] = Field("dpo", description="'dpo' or 'rlhf' (needs reward_model.enabled).")
    steps: int = Field(40, ge=0)
    lr: float = Field(3e-5, gt=0, description="Peak learning rate. DPO on the tiny preset: 3e-5 moves the held-out "
                      "margin without costing answers; RLHF there moves its reward-model score visibly at ~1e-4.")
    eval_every: int = Field(20, ge=0)
    ckpt_every: int = Field(20, ge=0)
    beta: float = Field(0.1, gt=0, description="DPO: strength of the pull towards the reference (SFT) model; also "
                        "scales the implicit rewards reported for RLHF.")
    batch_size: int = Field(16, ge=1, description="DPO: comparisons per step.")
    k: int = Field(4, ge=2, description="RLHF: answers sampled per prompt (one group).")
    prompts_per_step: int = Field(4, ge=1, description="RLHF: prompts (groups) per step.")
    kl_coef: float = Field(0.05, ge=0, description="RLHF: weight of the per-token KL to the SFT model.")
    max_pref_drop: float = Field(0.1, ge=0, description="RLHF guard: held-out preference accuracy may fall this much "
                                 "while the reward-model score climbs.")
    max_task_drop: float = Field(0.1, ge=0, description="RLHF guard: so may the held-out task score.")
    max_repetition: float = Field(0.5, gt=0, description="RLHF guard: highest share of repeated words or 3-grams.")
    max_length_ratio: float = Field(2.0, gt=0, description="RLHF guard: longest mean answer vs the SFT model's.")
    # held-out win rate and eval-task score
    eval_skills: list[str] = Field(["arithmetic", "letter_count", "spelling", "identity", "refusal"],
                                   description="Chat skills whose held-out items judge the win rate by their checks.")
    eval_items: int = Field(8, ge=0, description="Held-out items per skill for the win rate and the task score.")
    eval_seed: int = Field(4242, description="Draws those items.")

    @field_validator("eval_skills")
    @classmethod
    def _known(cls, skills: list[str]) -> list[str]:
        if unknown := [s for s in skills if s not in SKILL_NAMES]:
            raise ValueError(f"unknown skill(s) {unknown}; known: {sorted(SKILL_NAMES)}")
        return skills
