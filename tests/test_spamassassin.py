"""SpamAssassin scores every email of the course under 1.0, on the bytes `newsletter render --format eml` writes.

Local tests only (`spamassassin -L`: no DNS blocklists, no network), with an empty user configuration, so the
score is the content's alone: HTML rules such as HTML_FONT_LOW_CONTRAST, header and body rules. Debian's
`spamassassin` package provides the command; locally the test skips without it, under CI=true it fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import IN_CI

from newsletter.cli import main
from newsletter.project import Project

pytestmark = pytest.mark.slow

MAX_SCORE = 1.0
SLUGS = ["confirmation", "muscle", "knees", "brain", "mood", "sleep", "immunity", "longevity", "trails"]
_STATUS = re.compile(r"^X-Spam-Status: (?:Yes|No), score=(-?\d+(?:\.\d+)?) required=\S+(.*?)(?=^\S)", re.M | re.S)


@pytest.fixture(scope="session")
def spamassassin() -> str:
    command = shutil.which("spamassassin")
    if command is None:
        message = "the SpamAssassin test needs `spamassassin` (apt-get install -y spamassassin; CI installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return command


def spam_score(command: str, raw: bytes, home: Path) -> tuple[float, str]:
    """SpamAssassin's score for one message and the rules that fired, with local tests only."""
    prefs = home / "user_prefs"
    prefs.touch()
    result = subprocess.run(
        [command, "-L", "-t", "-p", str(prefs)],
        input=raw,
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    status = _STATUS.search(result.stdout.decode("utf-8", errors="replace"))
    assert status, result.stdout[-2000:]
    return float(status[1]), " ".join(status[2].split())


@pytest.mark.parametrize("slug", SLUGS)
def test_every_email_scores_under_one(
    spamassassin: str, rich_project: Project, project_dir: Path, tmp_path: Path, slug: str
) -> None:
    config = str(project_dir / "config.toml")
    rendered = CliRunner().invoke(main, ["--config", config, "render", slug, "--format", "eml"])
    assert rendered.exit_code == 0, rendered.output
    score, rules = spam_score(spamassassin, rendered.stdout_bytes, tmp_path)
    assert score < MAX_SCORE, f"{slug} scores {score}: {rules}"
    assert "HTML_FONT_LOW_CONTRAST" not in rules
