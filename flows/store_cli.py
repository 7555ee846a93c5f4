"""`factory requests`: export or purge the chat server's store of requests and feedback (serve/store.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

store_app = typer.Typer(
    help="The chat server's request and feedback store: export it as JSONL, purge old requests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Workdir = Annotated[Path, typer.Option("--workdir", "-w", help="The workdir whose serving/requests.db to use.")]
Db = Annotated[str | None, typer.Option(
    "--db", envvar="FACTORY_STORE_URL",
    help="SQLAlchemy URL of the store, e.g. postgresql+psycopg://USER@HOST/factory (default: SQLite in the workdir).",
)]


def _open(workdir: Path, db: str | None):
    from serve.store import Store, default_url

    if db is None:
        workdir = workdir.expanduser().resolve()
        path = workdir / "serving" / "requests.db"
        if not path.exists():
            typer.echo(f"error: no request store at {path} (`factory serve` writes it)", err=True)
            raise typer.Exit(1)
        db = default_url(workdir)
    return Store(db)


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@store_app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="The JSONL file to write (replaced whole).")],
    after: Annotated[int, typer.Option(help="Only requests with a seq above this (a previous export's last).")] = 0,
    workdir: Workdir = Path("work"),
    db: Db = None,
):
    """Write every request, with its feedback, as one JSON object a line."""
    with _open(workdir, db) as store:
        last = store.last_seq()["requests"]  # the bound of this export, and so where the next one starts
        count = store.export_jsonl(out, after=after, until=last)
        typer.echo(f"exported {count} requests (seq {after + 1}..{last}) from {_shown(store.url)} to {out}; "
                   f"next time: --after {max(last, after)}")


@store_app.command()
def purge(
    days: Annotated[float, typer.Option(help="Delete requests (and their feedback) older than this many days.")],
    workdir: Workdir = Path("work"),
    db: Db = None,
):
    """Retention: delete old requests and their feedback."""
    if days < 0:
        raise typer.BadParameter(f"must be 0 or more, not {days}", param_hint="--days")
    with _open(workdir, db) as store:
        count = store.purge(days * 86400)
        typer.echo(f"purged {count} requests older than {days:g} days from {_shown(store.url)}")
