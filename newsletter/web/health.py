"""`GET /healthz` and `GET /metrics`: is this process well, and what the ledger and the sender are doing.

`/healthz` answers 200 with status "ok", or 503 with status "degraded" and the problems in words: the
database does not answer, the last dispatch tick failed, or nothing has happened for several tick
intervals. A process that serves pages without ticking (`newsletter serve`) is judged on the database only.
`/metrics` is the Prometheus text format: the ledger gauges read from the database at each scrape, and this
process's counters; when the database does not answer, the counters are still served.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.errors import NewsletterError
from newsletter.metrics import CONTENT_TYPE, LedgerGauges, ProcessMetrics, exposition
from newsletter.operations import ledger_gauges
from newsletter.project import Project

NO_STORE = {"Cache-Control": "no-store"}


def _database_problem(project: Project) -> str | None:
    """Ask the database for `SELECT 1`; return what went wrong, or None."""
    try:
        # A raw DB-API connection runs the probe outside a transaction: on SQLite a session would take the
        # write lock (BEGIN IMMEDIATE) and a probe must not queue behind a sender's writes.
        connection = project.db.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        finally:
            connection.close()
    except Exception as error:  # the driver's own error classes differ by backend; any failure means "down"
        return f"the database does not answer: {error}"
    return None


def health_routes(project: Project, metrics: ProcessMetrics) -> list[Route]:
    """The two routes; mount them on the web app of any process that has a `ProcessMetrics`."""

    def healthz(request: Request) -> Response:
        database_problem = _database_problem(project)
        snapshot = metrics.snapshot()
        problems = ([database_problem] if database_problem else []) + snapshot.problems()
        age = snapshot.last_tick_age
        body = {
            "status": "degraded" if problems else "ok",
            "database_reachable": database_problem is None,
            "tick_seconds": snapshot.tick_seconds,
            "last_tick_at": snapshot.last_tick_at.isoformat() if snapshot.last_tick_at else None,
            "last_tick_age_seconds": round(age, 3) if age is not None else None,
            "last_tick_error": snapshot.last_tick_error,
            "problems": problems,
        }
        return JSONResponse(body, status_code=503 if problems else 200, headers=NO_STORE)

    def metrics_text(request: Request) -> Response:
        snapshot = metrics.snapshot()
        try:
            ledger = ledger_gauges(project, snapshot.taken_at)
        except (SQLAlchemyError, NewsletterError):
            ledger = LedgerGauges(reachable=False)
        return PlainTextResponse(exposition(snapshot, ledger), media_type=CONTENT_TYPE, headers=NO_STORE)

    return [
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/metrics", metrics_text, methods=["GET"], name="metrics"),
    ]
