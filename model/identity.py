"""The assistant's sense of self: its name and maker (the `identity` config section), the system message that states
them, and `assistant.json` beside a model's weights, so every place that runs the model (chat, serve, evals) knows
who it was trained to be. Torch-free."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.files import atomic_write_text

IDENTITY_FILE = "assistant.json"


class IdentityConfig(BaseModel):
    """Who the assistant is: stated by the identity conversations, by a system message in part of the training
    conversations, and by the same system message at inference (unless a conversation brings its own)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("Factory", min_length=1, description="The assistant's name.")
    maker: str = Field("the LLM Factory pipeline", min_length=1, description="Who made it.")
    system_message: str = Field("You are {name}, a small assistant model made by {maker}.",
                                description="The system message; {name} and {maker} are filled in.")
    at_inference: bool = Field(True, description="Add the system message to conversations that have none.")
    train_fraction: float = Field(0.3, ge=0, le=1, description="Share of training conversations that start with it.")

    @model_validator(mode="after")
    def _system_message_fills_in(self) -> IdentityConfig:
        try:
            self.system_text()
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"identity.system_message {self.system_message!r} must name only {{name}} and {{maker}} "
                             f"in braces (double a literal brace): {e!r}") from e
        return self

    def system_text(self) -> str:
        return self.system_message.format(name=self.name, maker=self.maker)

    def data_key(self) -> str:
        """A short hash of what generated training conversations depend on: the name, the maker, the system text and
        train_fraction (not at_inference, which changes no training data), for naming a generated label set."""
        data = {"name": self.name, "maker": self.maker, "system": self.system_text(),
                "train_fraction": self.train_fraction}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()[:10]

    def system_indices(self, n: int, seed: int) -> set[int]:
        """Which of n generated training conversations start with the system message: round(n * train_fraction) of
        them, drawn from the seed on a stream of their own (the conversations' draws stay as they are)."""
        return set(random.Random(f"system:{seed}").sample(range(n), round(n * self.train_fraction)))


def save_identity(identity: IdentityConfig, model_dir: str | Path) -> None:
    atomic_write_text(Path(model_dir) / IDENTITY_FILE, identity.model_dump_json(indent=2) + "\n")


def copy_identity(src_dir: str | Path, dst_dir: str | Path) -> IdentityConfig | None:
    """Carry `assistant.json` from a model folder to the folder of a model trained from it (preference, rl); returns
    the identity, or None when `src_dir` has none (then `dst_dir` gets none either)."""
    identity = load_identity(src_dir)  # a broken file fails here, naming it, not later at inference
    if identity is None:
        return None
    save_identity(identity, dst_dir)
    return identity


def load_identity(model_dir: str | Path) -> IdentityConfig | None:
    """The identity a model was trained with, or None for a model saved without one (an imported or older model)."""
    path = Path(model_dir) / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        return IdentityConfig.model_validate(json.loads(path.read_text()))
    except ValueError as e:  # json.JSONDecodeError and pydantic's ValidationError both are
        raise ValueError(f"{path}: not an assistant identity: {e}") from e


def with_system_message(messages: list[dict[str, Any]], identity: IdentityConfig | None, *,
                        always: bool = False) -> list[dict[str, Any]]:
    """`messages` with the identity's system message first, unless they bring their own, there is no identity, or it
    is not used at inference (`always`: used all the same, as an eval of the model with it asks)."""
    if identity is None or not (identity.at_inference or always) or (messages and messages[0].get("role") == "system"):
        return list(messages)
    return [{"role": "system", "content": identity.system_text()}, *messages]


def served(identity: IdentityConfig | None) -> IdentityConfig | None:
    """The identity whose system message a served chat starts with: None when there is none or it is not used at
    inference (`at_inference: false`)."""
    return identity if identity is not None and identity.at_inference else None
