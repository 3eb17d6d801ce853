"""SQLite (WAL) job store shared by the API process and the worker processes.

States: queued -> running -> done | failed | cancelled; a running job found by a restarted
service (its worker died with the service) is marked interrupted and queued again, and its
edit resumes from the trained-model cache where training had checkpointed. A job whose worker
died under a running service is queued again once (``attempts`` counts claims), then failed:
a job that kills its worker cannot loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

TERMINAL = ("done", "failed", "cancelled")
LOG_LINES = 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    log TEXT NOT NULL DEFAULT '[]',
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    interrupted INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cancel_at REAL,
    worker INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created);
"""
# Columns added after the first release: a store created by it gets them on open.
ADDED = {"cancel_at": "REAL", "worker": "INTEGER"}
# Claims of one job before a dead worker fails it instead of queueing it again.
MAX_ATTEMPTS = 2


class JobStore:
    """One SQLite file; every method opens a short transaction, so processes can share it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, kind in ADDED.items():
                if name not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (opened once: status polls stay cheap), in autocommit mode."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=30000")
            # WAL makes a commit durable at the next checkpoint; a crash loses at most the last
            # progress update, never the store.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        yield db

    @staticmethod
    def _row(row: Optional[sqlite3.Row]) -> Optional[dict]:
        if row is None:
            return None
        job = dict(row)
        job["request"] = json.loads(job["request"])
        job["log"] = json.loads(job["log"])
        job["result"] = json.loads(job["result"]) if job["result"] else None
        job["interrupted"] = bool(job["interrupted"])
        job["cancel_requested"] = bool(job["cancel_requested"])
        return job

    def create(self, request: dict) -> dict:
        job_id = uuid.uuid4().hex[:16]
        now = time.time()
        with self._connect() as db:
            db.execute("INSERT INTO jobs (id, created, updated, state, request) VALUES (?, ?, ?, 'queued', ?)",
                       (job_id, now, now, json.dumps(request)))
        return self.get(job_id)

    def get(self, job_id: str) -> Optional[dict]:
        with self._connect() as db:
            return self._row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def list(self, limit: int = 50) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created DESC, rowid DESC LIMIT ?", (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def queue_length(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]

    def claim(self, worker: Optional[int] = None) -> Optional[dict]:
        """Atomically take the oldest queued job and mark it running on ``worker`` (a pid)."""
        now = time.time()
        with self._connect() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'running', started = ?, updated = ?, attempts = attempts + 1, worker = ? "
                "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, rowid LIMIT 1) "
                "AND state = 'queued' RETURNING *", (now, now, worker)).fetchone()
        return self._row(row)

    def progress(self, job_id: str, fraction: float, stage: str, message: str) -> None:
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT log, message FROM jobs WHERE id = ?", (job_id,)).fetchone()
            log = json.loads(row["log"]) if row else []
            if message and (not log or log[-1]["message"] != message):
                log = (log + [{"time": now, "stage": stage, "message": message}])[-LOG_LINES:]
            db.execute("UPDATE jobs SET progress = MAX(progress, ?), stage = ?, message = ?, log = ?, updated = ? "
                       "WHERE id = ? AND state = 'running'",
                       (float(fraction), stage, message, json.dumps(log), now, job_id))
            db.execute("COMMIT")

    def finish(self, job_id: str, state: str, *, result: Optional[dict] = None, error: Optional[str] = None) -> bool:
        """Record a running job's end; False if it had already ended (the supervisor cancelled
        or failed it first)."""
        now = time.time()
        progress = "1.0" if state == "done" else "progress"
        with self._connect() as db:
            cursor = db.execute(f"UPDATE jobs SET state = ?, result = ?, error = ?, finished = ?, updated = ?, "
                                f"progress = {progress} WHERE id = ? AND state = 'running'",
                                (state, json.dumps(result) if result is not None else None, error, now, now, job_id))
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str) -> Optional[dict]:
        """Cancel a queued job at once; ask a running one to stop at its next step."""
        now = time.time()
        with self._connect() as db:
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, updated = ?, cancel_requested = 1 "
                       "WHERE id = ? AND state = 'queued'", (now, now, job_id))
            db.execute("UPDATE jobs SET cancel_requested = 1, cancel_at = COALESCE(cancel_at, ?), updated = ? "
                       "WHERE id = ? AND state = 'running'", (now, now, job_id))
        return self.get(job_id)

    def add_downloaded(self, job_id: str, size: int) -> None:
        """Count ``size`` more bytes downloaded in the job record's ``transfer`` (kept in its
        stored request)."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET request = json_set(request, '$.transfer.downloaded_bytes', "
                       "json_extract(request, '$.transfer.downloaded_bytes') + ?) WHERE id = ?", (int(size), job_id))

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def recover(self) -> list[str]:
        """At service start: running jobs lost their worker; mark them interrupted and queue them
        again (those the user had asked to cancel are cancelled)."""
        now = time.time()
        with self._connect() as db:
            db.execute("UPDATE jobs SET state = 'cancelled', error = 'cancelled by the user', finished = ?, "
                       "updated = ?, worker = NULL WHERE state = 'running' AND cancel_requested = 1", (now, now))
            rows = db.execute("UPDATE jobs SET state = 'queued', interrupted = 1, updated = ?, worker = NULL, "
                              "stage = 'interrupted', message = 'service restarted; queued again' "
                              "WHERE state = 'running' RETURNING id", (now,)).fetchall()
        return [r[0] for r in rows]

    def running_on(self, worker: int) -> list[dict]:
        """The jobs a worker process (pid) holds."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running' AND worker = ?", (worker,)).fetchall()
        return [self._row(r) for r in rows]

    def overdue_cancels(self, limit_s: float) -> list[dict]:
        """Running jobs asked to stop more than ``limit_s`` seconds ago."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running' AND cancel_requested = 1 AND cancel_at < ?",
                              (time.time() - limit_s,)).fetchall()
        return [self._row(r) for r in rows]

    def worker_lost(self, job_id: str, reason: str) -> Optional[str]:
        """A running job's worker died: queue it again if it has attempts left, else fail it with
        ``reason``. Returns the new state (None if the job was no longer running)."""
        now = time.time()
        with self._connect() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'queued', stage = 'requeued', updated = ?, worker = NULL, "
                "message = ? || ': queued again (attempt ' || (attempts + 1) || ' of ' || ? || ')' "
                "WHERE id = ? AND state = 'running' AND attempts < ? AND cancel_requested = 0 RETURNING state",
                (now, reason, MAX_ATTEMPTS, job_id, MAX_ATTEMPTS)).fetchone()
            if row is not None:
                return row[0]
            row = db.execute(
                "UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'failed' END, "
                "error = CASE WHEN cancel_requested = 1 THEN 'cancelled by the user' ELSE ? END, "
                "finished = ?, updated = ?, worker = NULL WHERE id = ? AND state = 'running' RETURNING state",
                (f"{reason}, on each of its {MAX_ATTEMPTS} attempts: not retried again. The edit may need "
                 "more memory than the machine has (try a smaller ROI or --max-side)", now, now, job_id)).fetchone()
        return row[0] if row is not None else None

    def force_cancel(self, job_id: str) -> bool:
        """Mark a running job cancelled without its worker (which is being stopped)."""
        now = time.time()
        with self._connect() as db:
            cursor = db.execute("UPDATE jobs SET state = 'cancelled', error = 'cancelled by the user', finished = ?, "
                                "updated = ?, worker = NULL WHERE id = ? AND state = 'running'", (now, now, job_id))
        return cursor.rowcount == 1
