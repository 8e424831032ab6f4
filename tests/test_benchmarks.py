"""The benchmark scripts run on a tiny N and write results that add up; no timing is asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow
BENCHMARKS = REPO / "benchmarks"


def run_benchmark(script: str, tmp_path: Path, *arguments: str) -> dict[str, Any]:
    """Run one script in its own process and return the JSON it wrote."""
    output = tmp_path / f"{script}.json"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")}
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), *arguments, "--output", str(output)],
        env=environment,
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    result: dict[str, Any] = json.loads(output.read_text())
    assert result["benchmark"] == script and result["machine"]["cpus"] >= 1
    return result


def test_send_throughput_sends_every_message_once_and_compares_with_raw_smtp(tmp_path: Path) -> None:
    result = run_benchmark("send_throughput", tmp_path, "--subscribers", "40", "--connections", "2")
    assert result["sink_received"] == {"raw": 40, "end_to_end": 40}
    assert result["ledger_week_one"] == {"sent": 40} and result["duplicates"] == 0
    assert result["raw"]["connections"] == 2 and result["end_to_end"]["per_process"][0]["sent"] == 40
    raw_over_end_to_end = result["raw"]["seconds"] / result["end_to_end"]["seconds"]
    assert result["ratio"] == pytest.approx(raw_over_end_to_end, abs=0.002)  # both rounded to milliseconds
    assert 10 < result["sender_peak_rss_mb"] < 1000
    assert result["message_bytes"] > 10_000  # a real lesson, not a stub


@pytest.mark.postgres
def test_senders_on_postgresql_split_the_backlog_without_duplicates(tmp_path: Path, postgres_server_url: str) -> None:
    url = postgres_server_url
    arguments = ("--subscribers", "60", "--connections", "2", "--processes", "2", "--batch-size", "5")
    result = run_benchmark("send_throughput", tmp_path, "--db", "postgresql", "--database-url", url, *arguments)
    per_process = result["end_to_end"]["per_process"]
    assert [run["sent"] + run["skipped"] for run in per_process] and sum(run["sent"] for run in per_process) == 60
    assert result["sink_received"] == {"raw": 60, "end_to_end": 60} and result["duplicates"] == 0
    assert result["raw"]["connections"] == 4 and result["postgresql"]


def test_plan_query_finds_nothing_due_claims_the_due_batch_and_claimers_take_each_row_once(tmp_path: Path) -> None:
    arguments = ("--subscribers", "400", "--due", "25", "--completed", "0.5", "--claimers", "1,2", "--backlog", "100")
    result = run_benchmark("plan_query", tmp_path, *arguments, "--batch", "10")
    assert result["completed_subscribers"] == 200
    assert result["first_claim"]["due"] == 25 and result["nothing_due"]["min_ms"] > 0
    for run, processes in zip(result["claimers"], (1, 2), strict=True):
        assert run["processes"] == processes and run["claimed_twice"] == 0
        assert sum(run["per_process"]) == run["rows"] >= 100


@pytest.mark.postgres
def test_plan_query_runs_on_postgresql(tmp_path: Path, postgres_server_url: str) -> None:
    url = postgres_server_url
    arguments = ("--subscribers", "300", "--due", "20", "--claimers", "2", "--backlog", "60", "--batch", "7")
    result = run_benchmark("plan_query", tmp_path, "--db", "postgresql", "--database-url", url, *arguments)
    assert result["first_claim"]["due"] == 20 and result["postgresql"]
    assert result["claimers"][0]["claimed_twice"] == 0 and result["claimers"][0]["rows"] >= 60


def test_render_speed_measures_each_way_and_says_why_node_is_missing(tmp_path: Path) -> None:
    result = run_benchmark("render_speed", tmp_path, "--messages", "30", "--full-renders", "3")
    assert result["per_subscriber_per_second"] > 0 and result["everything_again_per_second"] > 0
    assert result["mjml_python_compile_per_second"] > 0 and result["message_bytes"] > 10_000
    node = result["node_mjml"]
    installed = (BENCHMARKS / "node" / "node_modules" / "mjml").is_dir()
    assert ("skipped" not in node) == installed, node
    if installed:
        assert node["loop_per_second"] > 0 and node["per_email_over_a_pipe_per_second"] > 0


def test_rate_limiter_keeps_its_bound_and_counts_every_call(tmp_path: Path) -> None:
    result = run_benchmark("rate_limiter", tmp_path, "--clients", "50,300", "--calls", "2000", "--memory-keys", "500")
    assert [run["clients"] for run in result["runs"]] == [50, 300]
    for run in result["runs"]:
        assert run["keys_kept"] == min(run["clients"], result["max_keys"]) and run["calls_per_second"] > 0
        assert 0 < run["allowed"] <= run["calls"]
    assert 50 < result["bytes_per_key"] < 2000


@pytest.mark.parametrize("file_format", ["generic", "mailchimp"])
def test_import_speed_imports_every_row_and_plans_every_reader_who_is_not_suppressed(
    tmp_path: Path, file_format: str
) -> None:
    result = run_benchmark("import_speed", tmp_path, "--rows", "400", "--format", file_format)
    assert result["subscribers"] == 400 and result["summary"].startswith(f"{file_format}.csv (utf-8")
    assert result["suppressed_rows"] == (40 if file_format == "mailchimp" else 0)
    assert result["planned_deliveries"] == 400 - result["suppressed_rows"]
    assert result["rows_per_second"] == pytest.approx(400 / result["seconds"], rel=0.01)
    assert 10 < result["peak_rss_mb"] < 1000 and result["file_bytes"] > 400 * 20
