"""Page debris: the lines a web page wraps around an article, which no lesson should carry.

A line is debris only when all of it is: stray punctuation, a reading time ("8–11 minutes", "5 min read"),
a sharing, comment or subscription prompt ("Share this", "Leave a comment", "Subscribe"), navigation
("Skip to content", "Read more", "Related posts"), an advertisement label, or a cookie banner ("We use
cookies…", "Accept all cookies"). Everything dropped is reported with its line, so an editor can see it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PROMPTS = (
    r"leave a (?:comment|reply)|\d+ (?:comments?|responses?|replies)|comments?|reply|like this:?|loading\.{0,3}|like"
    r"|share(?: this(?: article| post| story| page)?)?(?: on \w+)?|click to (?:share|print|email)[^.]{0,40}"
    r"|tweet(?: this)?|pin it|print(?: this)?|email(?: this)?|facebook|twitter|linkedin|pinterest|whatsapp|x"
    r"|subscribe(?: now| today| for free| to (?:our|the) newsletter)?"
    r"|(?:sign up|join|get) (?:for |to )?(?:our|the) newsletter|follow us(?: on \w+)?"
    r"|trending(?: now)?|advertisement|sponsored(?: content)?|ad|skip to (?:main )?content|menu|search|back to top"
    r"|read more|continue reading|related(?: posts| articles| stories)?|you may also like|more from \w+(?: \w+)?"
    r"|accept(?: all)?(?: cookies)?|reject(?: all)?|cookie (?:settings|policy|preferences)"
    r"|manage (?:cookie )?preferences"
)
_DEBRIS = re.compile(
    rf"^(?:[\s,.;:|•·*_=~–—-]*|\d+(?:\s*[–-]\s*\d+)?\s*(?:min|mins|minutes?)(?:\s+read)?|(?:{_PROMPTS})[.!…]?)$",
    re.IGNORECASE,
)
_COOKIE_BANNER = re.compile(
    r"^(?:we use cookies|this (?:web)?site uses cookies|by (?:continuing to (?:use|browse)|using) this (?:web)?site"
    r"|we and our partners (?:use|store))",
    re.IGNORECASE,
)
BANNER_MAX_CHARS = 400


@dataclass(frozen=True)
class Debris:
    """One line of the article dropped as page debris."""

    line: int
    text: str


def is_debris(line: str) -> bool:
    """Whether the whole line is page furniture rather than article text."""
    text = line.strip().lstrip("•*-").strip()
    if not line.strip():
        return False
    if _DEBRIS.match(text):
        return True
    return len(text) <= BANNER_MAX_CHARS and bool(_COOKIE_BANNER.match(text)) and "cookie" in text.lower()
