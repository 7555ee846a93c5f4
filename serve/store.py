"""The durable store of every request the chat server answered and every feedback its users gave; the web page
reads feedback back from it, `collect_misbehaviors` reads both after a watermark, `factory requests` exports and
purges it. SQLAlchemy Core, so one code path runs on SQLite (the default) and on PostgreSQL.

## Request store

`factory serve` writes every finished request (messages or prompt, answer, sampling, token counts, latency, the
model version that answered, the client's key name) and every thumbs-up/down from the web chat or
`POST /v1/feedback` to one database: by default the SQLite file `<workdir>/serving/requests.db` (WAL mode, safe for
several server processes; a killed server loses at most the request it was writing). For a team or several
machines, point every server and the pipeline at one PostgreSQL database instead:
`FACTORY_STORE_URL=postgresql+psycopg://USER:PASSWORD@HOST:5432/factory` (or `--db URL`); tables are created on
first use.

- Retention: `factory requests purge --days 30` deletes requests (and their feedback) older than 30 days; run it
  from cron or a Prefect schedule. Nothing is deleted otherwise.
- Export: `factory requests export --out requests.jsonl [--after SEQ]` writes every request with its feedback as
  JSONL (one object per line, with `seq`; the file appears complete or not at all); `--after` exports only what
  came after a previous export's last `seq`.
- `collect_misbehaviors` keeps its own watermark in the store, so each weekly cycle reads only new requests and
  feedback.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from model.files import atomic_file

metadata = sa.MetaData()

requests_table = sa.Table(
    "requests", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(128), nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("messages", sa.Text),
    sa.Column("prompt", sa.Text),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("finish_reason", sa.String(32)),
    sa.Column("sampling", sa.Text, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("ttft_s", sa.Float),
    sa.Column("latency_s", sa.Float, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("client", sa.String(256), nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
    # AUTOINCREMENT: a seq is never handed out twice, even after purge deleted the newest rows, so a reader's
    # watermark never skips a new row.
    sqlite_autoincrement=True,
)

feedback_table = sa.Table(
    "feedback", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("response_id", sa.String(128), sa.ForeignKey("requests.id"), nullable=False, index=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("meta", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)

watermarks_table = sa.Table(
    "watermarks", metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("feedback", sa.Integer, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

# What `record` fills in for a key the row leaves out (`id` has no default; `created` defaults to now).
REQUEST_DEFAULTS: dict[str, Any] = {
    "endpoint": "chat", "model": "", "model_version": "", "messages": None, "prompt": None, "answer": "",
    "finish_reason": None, "sampling": {}, "prompt_tokens": 0, "completion_tokens": 0, "ttft_s": None,
    "latency_s": 0.0, "status": 200, "client": "anonymous", "meta": {},
}
JSON_COLUMNS = ("messages", "sampling", "meta")
# PostgreSQL hands out a seq at insert but rows become visible at commit, possibly in another order; writers take
# this transaction lock so commit order is seq order and "everything up to last_seq()" is final when read.
PG_LOCK = {"requests": 7_201_001, "feedback": 7_201_002}
SQLITE_BUSY_TIMEOUT_MS = 30_000
IN_CLAUSE_CHUNK = 500
EXPORT_PAGE = 1000


def default_url(workdir: Path) -> str:
    """The SQLite file under the workdir that `factory serve` and the pipeline share."""
    (Path(workdir) / "serving").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workdir}/serving/requests.db"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL: readers never block the writer, and a commit is one append to the log, which a killed process cannot
    # tear. synchronous=NORMAL keeps every commit across a process crash (only a power cut can lose the last ones).
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    if database in ("", ":memory:"):
        # One connection shared by every thread (the default pool would give each thread its own empty database).
        engine = sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _encode(row: dict) -> dict:
    """JSON columns as text; a NUL character in a text column (a model can sample one) as U+FFFD, since PostgreSQL
    text cannot hold it (JSON text escapes it as \\u0000 by itself)."""
    return {k: json.dumps(v) if k in JSON_COLUMNS and v is not None
            else v.replace("\x00", "\ufffd") if isinstance(v, str) else v for k, v in row.items()}


def _decode(row: sa.Row) -> dict:
    return {k: json.loads(v) if k in JSON_COLUMNS and v is not None else v for k, v in row._mapping.items()}


def _select_in(conn: sa.Connection, column: sa.Column, values: list) -> list[dict]:
    """The rows of `column`'s table whose `column` is one of `values`, asked in chunks (SQLite caps parameters)."""
    rows = []
    for start in range(0, len(values), IN_CLAUSE_CHUNK):
        query = column.table.select().where(column.in_(values[start:start + IN_CLAUSE_CHUNK]))
        rows += [_decode(r) for r in conn.execute(query)]
    return rows


class Store:
    """Requests and feedback in one database (`url`: any SQLAlchemy URL; SQLite and PostgreSQL are tested). Safe to
    share between threads; each process opens its own Store (an engine does not survive a fork)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = _engine(url)
        self.dialect = self.engine.dialect.name
        memory = self.dialect == "sqlite" and (make_url(url).database or ":memory:") == ":memory:"
        self._lock = threading.Lock() if memory else nullcontext()
        self._create_tables()

    def _create_tables(self) -> None:
        # Several processes may start on a new database at once: whoever loses the race to CREATE sees an error,
        # and the next look finds the tables.
        for attempt in range(5):
            try:
                metadata.create_all(self.engine)
                return
            except sa.exc.DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    @contextmanager
    def _begin(self, lock: str | None = None) -> Iterator[sa.Connection]:
        """A transaction, committed when the block ends; `lock` orders the writers of that table on PostgreSQL."""
        with self._lock, self.engine.begin() as conn:
            if lock is not None and self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_LOCK[lock])))
            yield conn

    # writing

    def record(self, row: dict) -> int:
        """Store one finished request; returns its seq. The row is committed (durable) when this returns."""
        if not row.get("id"):
            raise ValueError("request row: missing field 'id'")
        unknown = sorted(set(row) - set(REQUEST_DEFAULTS) - {"id", "created"})
        if unknown:
            raise ValueError(f"request row {row['id']!r}: unknown fields {unknown}")
        values = {**REQUEST_DEFAULTS, "created": time.time(), **row}
        try:
            with self._begin("requests") as conn:
                return conn.execute(requests_table.insert().values(_encode(values))).inserted_primary_key[0]
        except sa.exc.IntegrityError:
            if self.get(row["id"]) is not None:
                raise ValueError(f"request {row['id']!r} is already recorded") from None
            raise

    def add_feedback(self, response_id: str, rating: int, reason: str | None = None, meta: dict | None = None) -> dict:
        """Store a rating (+1 good, -1 bad) of the answer `response_id`; returns the stored feedback row."""
        if isinstance(rating, bool) or rating not in (1, -1):
            raise ValueError(f"feedback on {response_id!r}: rating must be 1 or -1, not {rating!r}")
        created, meta_text = time.time(), json.dumps(meta or {})
        reason = None if reason is None else reason.replace("\x00", "\ufffd")
        # One INSERT ... SELECT ... WHERE EXISTS: the check and the write are one statement, so SQLite never has to
        # upgrade a read transaction to a write one (which fails at once, without waiting, when another writer won).
        source = sa.select(
            sa.literal(response_id, sa.String), sa.literal(created, sa.Float), sa.literal(rating, sa.Integer),
            sa.literal(reason, sa.Text), sa.literal(meta_text, sa.Text),
        ).where(sa.exists().where(requests_table.c.id == response_id))
        insert = feedback_table.insert().from_select(["response_id", "created", "rating", "reason", "meta"], source)
        with self._begin("feedback") as conn:
            seq = conn.execute(insert.returning(feedback_table.c.seq)).scalar()
        if seq is None:
            raise KeyError(response_id)
        return {"seq": seq, "response_id": response_id, "created": created, "rating": rating, "reason": reason,
                "meta": meta or {}}

    def set_watermark(self, name: str, value: dict) -> None:
        """Remember how far the reader `name` got ({"requests": seq, "feedback": seq})."""
        values = {"name": name, "requests": int(value.get("requests", 0)), "feedback": int(value.get("feedback", 0)),
                  "updated": time.time()}
        insert = (postgresql if self.dialect == "postgresql" else sqlite).insert(watermarks_table).values(values)
        upsert = insert.on_conflict_do_update(
            index_elements=["name"],
            set_={k: insert.excluded[k] for k in ("requests", "feedback", "updated")},
        )
        with self._begin() as conn:
            conn.execute(upsert)

    def purge(self, older_than_s: float) -> int:
        """Delete the requests created more than `older_than_s` seconds ago, and their feedback; returns how many
        requests."""
        old = sa.select(requests_table.c.id).where(requests_table.c.created < time.time() - older_than_s)
        with self._begin() as conn:
            conn.execute(feedback_table.delete().where(feedback_table.c.response_id.in_(old)))
            return conn.execute(requests_table.delete().where(requests_table.c.id.in_(old))).rowcount

    # reading

    def get(self, response_id: str) -> dict | None:
        """The request `response_id` with its "feedback" list (oldest first), or None."""
        with self._begin() as conn:
            row = conn.execute(requests_table.select().where(requests_table.c.id == response_id)).first()
            return self._with_feedback(conn, [_decode(row)])[0] if row is not None else None

    def feedback(self, response_ids: list[str]) -> dict[str, dict]:
        """The latest feedback row of each of `response_ids` that has one."""
        latest: dict[str, dict] = {}
        with self._begin() as conn:
            for row in self._feedback_of(conn, list(response_ids)):
                latest[row["response_id"]] = row
        return latest

    def requests(self, after: int = 0, until: int | None = None) -> list[dict]:
        """The requests with `after < seq <= until` (no upper bound without `until`), oldest first, with feedback."""
        query = requests_table.select().where(requests_table.c.seq > after).order_by(requests_table.c.seq)
        if until is not None:
            query = query.where(requests_table.c.seq <= until)
        with self._begin() as conn:
            return self._with_feedback(conn, [_decode(r) for r in conn.execute(query)])

    def feedback_since(self, after: int = 0, until: int | None = None) -> list[dict]:
        """The feedback rows with `after < seq <= until`, oldest first, each with its "request" (as `get` gives)."""
        query = feedback_table.select().where(feedback_table.c.seq > after).order_by(feedback_table.c.seq)
        if until is not None:
            query = query.where(feedback_table.c.seq <= until)
        with self._begin() as conn:
            rows = [_decode(r) for r in conn.execute(query)]
            found = _select_in(conn, requests_table.c.id, sorted({r["response_id"] for r in rows}))
            by_id = {r["id"]: r for r in self._with_feedback(conn, found)}
        return [{**r, "request": by_id.get(r["response_id"])} for r in rows]

    def last_seq(self) -> dict:
        """{"requests": the highest request seq, "feedback": the highest feedback seq} (0 for an empty table)."""
        with self._begin() as conn:
            # feedback first: a request is committed before any feedback on it, so a window never holds a rating
            # whose request falls into the next window (READ COMMITTED reads each statement's own snapshot)
            feedback = conn.execute(sa.select(sa.func.max(feedback_table.c.seq))).scalar() or 0
            requests = conn.execute(sa.select(sa.func.max(requests_table.c.seq))).scalar() or 0
            return {"requests": requests, "feedback": feedback}

    def watermark(self, name: str) -> dict:
        """How far the reader `name` got: {"requests": seq, "feedback": seq}, zeros when never set."""
        marks = watermarks_table.c
        with self._begin() as conn:
            row = conn.execute(sa.select(marks.requests, marks.feedback).where(marks.name == name)).first()
        return {"requests": row.requests, "feedback": row.feedback} if row else {"requests": 0, "feedback": 0}

    def export_jsonl(self, path: Path | str, after: int = 0, until: int | None = None) -> int:
        """Write every request with `after < seq <= until` (default: the last), with its feedback, to `path` as JSONL
        (complete or absent, never half-written); returns how many."""
        until, count = self.last_seq()["requests"] if until is None else until, 0
        with atomic_file(path, "wb") as f:
            # Pages of seqs keep memory flat however big the store is; `until` makes the export one snapshot.
            for start in range(after, until, EXPORT_PAGE):
                for row in self.requests(after=start, until=min(until, start + EXPORT_PAGE)):
                    f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
                    count += 1
        return count

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _feedback_of(self, conn: sa.Connection, response_ids: list[str]) -> list[dict]:
        return sorted(_select_in(conn, feedback_table.c.response_id, response_ids), key=lambda r: r["seq"])

    def _with_feedback(self, conn: sa.Connection, rows: list[dict]) -> list[dict]:
        by_id: dict[str, list[dict]] = {r["id"]: [] for r in rows}
        for fb in self._feedback_of(conn, list(by_id)):
            by_id[fb["response_id"]].append(fb)
        return [{**r, "feedback": by_id[r["id"]]} for r in rows]
