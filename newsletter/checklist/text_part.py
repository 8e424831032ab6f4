"""Checklist item 28: the plain-text part reads well on its own."""

from __future__ import annotations

import re

from newsletter.checklist.verdict import Verdict, judge
from newsletter.checklist.wire import WireEmail

TEXT_COLUMNS = 78
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_ENTITY = re.compile(r"&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")
_URL = re.compile(r"(?:https?://|mailto:)\S+")


def plain_text(wire: WireEmail) -> Verdict:
    text = wire.text
    problems = []
    if not text.strip():
        return judge(["the text part is empty"], "")
    # A subscriber may be called "<b>Bo</b>": in plain text that is just their name.
    name = wire.recipient_name
    tag = _TAG.search(text.replace(name, "") if name else text)
    if tag:
        problems.append(f"the text part holds an HTML tag {tag.group(0)[:40]!r}")
    entity = _ENTITY.search(text)
    if entity:
        problems.append(f"the text part holds an HTML entity {entity.group(0)!r}")
    for number, line in enumerate(text.splitlines(), 1):
        # A URL may not be broken, so only the words around it count against the width.
        words_only = len(line) - sum(len(url) for url in _URL.findall(line))
        if len(line) > TEXT_COLUMNS and words_only > TEXT_COLUMNS:
            problems.append(f"text line {number} is {len(line)} columns, expected at most {TEXT_COLUMNS}")
            break
    action = wire.expected.call_to_action
    if action and action.lower() not in text.lower():
        problems.append(f"the text part lacks the call to action {action!r}")
    if wire.expected.expect_unsubscribe and wire.unsubscribe_url not in text:
        problems.append("the text part lacks the unsubscribe URL of List-Unsubscribe")
    return judge(problems, f"{len(text.splitlines())} lines, wrapped at {TEXT_COLUMNS}, with the unsubscribe URL")
