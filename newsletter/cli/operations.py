"""Commands of this family (filled in as the family is built)."""

from __future__ import annotations

import click

commands: list[click.Command] = []
