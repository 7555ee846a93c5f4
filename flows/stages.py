"""One Prefect flow per stage, taking that stage's config section as a typed parameter, so the UI shows a form
of exactly the settings that stage reads: change a value, run, and the stage (then what follows) rebuilds.

A section left empty comes from the preset; `force` rebuilds even when nothing changed; `with_downstream`
(default on) also brings every later stage up to date, reusing what did not change.
"""

from __future__ import annotations

from prefect import flow

from flows.cycles import run_stages
from tasks.core.config import (
    CollectConfig,
    CrawlConfig,
    DeployConfig,
    EvalBaseConfig,
    EvalsConfig,
    FinetuneConfig,
    LabelsConfig,
    ModelSection,
    PreprocessConfig,
    PretrainConfig,
    RegisterConfig,
    TokenizeConfig,
    TokenizerConfig,
    load_config,
)
from tasks.core.dag import downstream


def rerun(name: str, preset: str, workdir: str, force: bool, with_downstream: bool, **sections) -> dict[str, str]:
    """Run stage `name` (and its missing inputs) with the given settings on top of the preset's sections: a form
    (or `-p 'tokenizer={"vocab_size": 8192}'`) that sets one field changes only that field."""
    config = load_config(preset)
    update = {}
    for section, given in sections.items():
        if given is not None:
            current = getattr(config, section)
            update[section] = current.model_validate({**current.model_dump(), **given.model_dump(exclude_unset=True)})
    config = config.model_copy(update=update)
    stages = [name, *downstream(name)] if with_downstream else [name]
    return run_stages("stage", stages, preset, workdir, [], [name] if force else [], config)  # one MLflow experiment


@flow(name="stage-crawl")
def crawl(
    preset: str = "tiny",
    workdir: str = "./work",
    crawl: CrawlConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Read the crawl sources into raw document shards."""
    return rerun("crawl", preset, workdir, force, with_downstream, crawl=crawl)


@flow(name="stage-preprocess")
def preprocess(
    preset: str = "tiny",
    workdir: str = "./work",
    preprocess: PreprocessConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """HTML to text, quality filters, dedup, train/val split."""
    return rerun("preprocess", preset, workdir, force, with_downstream, preprocess=preprocess)


@flow(name="stage-train_tokenizer")
def train_tokenizer(
    preset: str = "tiny",
    workdir: str = "./work",
    tokenizer: TokenizerConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Byte-level BPE on the train documents."""
    return rerun("train_tokenizer", preset, workdir, force, with_downstream, tokenizer=tokenizer)


@flow(name="stage-tokenize")
def tokenize(
    preset: str = "tiny",
    workdir: str = "./work",
    tokenize: TokenizeConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Documents to token shards."""
    return rerun("tokenize", preset, workdir, force, with_downstream, tokenize=tokenize)


@flow(name="stage-pretrain")
def pretrain(
    preset: str = "tiny",
    workdir: str = "./work",
    model: ModelSection | None = None,
    pretrain: PretrainConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Pretrain the base model (resumes from its last checkpoint)."""
    return rerun("pretrain", preset, workdir, force, with_downstream, model=model, pretrain=pretrain)


@flow(name="stage-eval_base")
def eval_base(
    preset: str = "tiny",
    workdir: str = "./work",
    eval_base: EvalBaseConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Bits per byte, the crawl probe and samples of the base model."""
    return rerun("eval_base", preset, workdir, force, with_downstream, eval_base=eval_base)


@flow(name="stage-register_base")
def register_base(
    preset: str = "tiny",
    workdir: str = "./work",
    register_base: RegisterConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Register the base model in MLflow."""
    return rerun("register_base", preset, workdir, force, with_downstream, register_base=register_base)


@flow(name="stage-ingest_labels")
def ingest_labels(
    preset: str = "tiny",
    workdir: str = "./work",
    labels: LabelsConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Validate, dedup and split the labelers' delivery."""
    return rerun("ingest_labels", preset, workdir, force, with_downstream, labels=labels)


@flow(name="stage-finetune")
def finetune(
    preset: str = "tiny",
    workdir: str = "./work",
    finetune: FinetuneConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Supervised finetuning on the conversations."""
    return rerun("finetune", preset, workdir, force, with_downstream, finetune=finetune)


@flow(name="stage-evals")
def evals(
    preset: str = "tiny",
    workdir: str = "./work",
    evals: EvalsConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Score the assistant on held-out generated tasks."""
    return rerun("evals", preset, workdir, force, with_downstream, evals=evals)


@flow(name="stage-deploy")
def deploy(
    preset: str = "tiny",
    workdir: str = "./work",
    deploy: DeployConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """The gate against production; moves the alias if it passes."""
    return rerun("deploy", preset, workdir, force, with_downstream, deploy=deploy)


@flow(name="stage-collect_misbehaviors")
def collect_misbehaviors(
    preset: str = "tiny",
    workdir: str = "./work",
    collect: CollectConfig | None = None,
    force: bool = False,
    with_downstream: bool = True,
):
    """Failed evals and user flags into the labeling queue."""
    return rerun("collect_misbehaviors", preset, workdir, force, with_downstream, collect=collect)
