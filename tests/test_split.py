"""`newsletter split`: sections found, given to topics, nothing lost or repeated, drafts written safely."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.cli import main
from newsletter.errors import LessonError
from newsletter.split import LessonDraft, lesson_drafts, parse_article, read_article, split_article, write_drafts
from newsletter.split.weeks import balance, merge_tiny

ROOT = Path(__file__).resolve().parent.parent
RUNNING = ROOT / "lessons" / "source" / "running-and-muscle.txt"
HOUSEPLANTS = Path(__file__).resolve().parent / "fixtures" / "articles" / "houseplants.md"
SEVEN_TOPICS = ["muscle", "knees", "brain", "mood", "sleep", "immunity", "longevity"]
RUNNING_DEBRIS = {",", "8–11 minutes", "Leave a comment", "Trending"}
HOUSEPLANT_DEBRIS = {",", "5 min read", "Share", "Leave a comment", "Trending"}
LEAD_PHRASE = re.compile(r"^(?:\*\*)?[^:*]{1,60}:(?:\*\*)?\s+")


def normalise(text: str) -> str:
    return " ".join(text.split())


def article_units(path: Path, debris: set[str]) -> list[str]:
    """The article's paragraphs and list items, read independently of the splitter.

    Plain-text headings are the short lines (the bundled article's paragraphs are all long); Markdown
    headings start with `#`. For a "Lead phrase:" item only the text after the phrase counts, with its first
    letter capitalised as the draft prints it.
    """
    text = path.read_text(encoding="utf-8")
    units: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or lines[0] in debris or lines[0].startswith("#"):
            continue
        if path.suffix == ".txt" and len(lines) == 1 and len(lines[0]) <= 80:
            continue
        items: list[list[str]] = []
        for line in lines:
            if re.match(r"^[•*-]\s", line):
                items.append([line[1:].strip()])
            elif items:
                items[-1].append(line)
            else:
                units.append(normalise(" ".join(lines)))
                break
        for item in items:
            joined = normalise(" ".join(item))
            lead = LEAD_PHRASE.match(joined)
            if lead:
                rest = joined[lead.end() :]
                joined = rest[:1].upper() + rest[1:]
            units.append(joined)
    return units


def draft_units(drafts: list[LessonDraft]) -> list[str]:
    """Every paragraph and list item of the drafts' bodies (headings dropped)."""
    units = []
    for draft in drafts:
        for line in draft.body.splitlines():
            if line.strip() and not line.startswith("#"):
                units.append(normalise(line.removeprefix("- ")))
    return units


def headings(body: str) -> list[tuple[int, str]]:
    return [(len(m[1]), m[2]) for m in re.finditer(r"^(#+) (.+)$", body, re.MULTILINE)]


def front_matter(text: str) -> dict[str, object]:
    _, front, _ = text.split("+++\n", 2)
    return tomllib.loads(front)


@pytest.fixture
def running_text() -> str:
    return read_article(RUNNING)


@pytest.fixture
def seven_drafts(running_text: str) -> list[LessonDraft]:
    return split_article(running_text, SEVEN_TOPICS)


def test_named_topics_give_one_draft_each_in_the_given_order(seven_drafts: list[LessonDraft]) -> None:
    assert [draft.slug for draft in seven_drafts] == SEVEN_TOPICS
    assert [draft.week for draft in seven_drafts] == list(range(1, 8))
    assert seven_drafts[0].filename == "01-muscle.md"
    assert seven_drafts[6].filename == "07-longevity.md"
    assert [draft.title for draft in seven_drafts] == [
        "Running and Muscle Mass: Gain or Loss?",
        "Stronger Knees (Really!) and Healthier Joints",
        "Brain Power Boost",
        "Mood and Mental Health Perks",
        "Better Sleep Quality",
        "Stronger Immunity",
        "Disease Prevention & Longevity",
    ]


def test_every_paragraph_of_the_article_lands_in_exactly_one_draft(seven_drafts: list[LessonDraft]) -> None:
    expected = article_units(RUNNING, RUNNING_DEBRIS)
    assert len(expected) == 17  # 3 summary bullets, 5 muscle paragraphs, intro, 6 benefits, 2 conclusion
    assert Counter(draft_units(seven_drafts)) == Counter(expected)


def test_sections_matching_no_topic_join_their_neighbours(seven_drafts: list[LessonDraft]) -> None:
    by_slug = {draft.slug: draft for draft in seven_drafts}
    assert by_slug["muscle"].sources == (
        "Summary",
        "Running and Muscle Mass: Gain or Loss?",
        "Sprinting & HIIT – Muscle Builders?",
        "Long-Distance Running – Muscle Burn or Muscle Earn?",
    )
    assert by_slug["knees"].sources[0] == "Surprising Benefits of Running Beyond Cardio"
    assert by_slug["longevity"].sources == ("Disease Prevention & Longevity", "Conclusion")
    assert by_slug["brain"].sources == ("Brain Power Boost",)


def test_page_debris_is_dropped(seven_drafts: list[LessonDraft]) -> None:
    everything = "\n".join(draft.to_markdown() for draft in seven_drafts)
    for debris in ("8–11 minutes", "Leave a comment", "Trending"):
        assert debris not in everything
    assert "\n,\n" not in everything
    assert "Can You Have" not in everything  # the article's title heads no text, so no draft repeats it


def test_drafts_have_loadable_front_matter_and_an_email_shaped_body(seven_drafts: list[LessonDraft]) -> None:
    for draft in seven_drafts:
        data = front_matter(draft.to_markdown())
        assert data["week"] == draft.week
        assert data["slug"] == draft.slug
        assert data["title"] == draft.title
        subject, preheader = str(data["subject"]), str(data["preheader"])
        assert subject.startswith(f"Lesson {draft.week}: ")
        assert len(subject) <= 78
        assert 0 < len(preheader) <= 140
        first_line = next(line for line in draft.body.splitlines() if line and not line.startswith("#"))
        first_sentence = re.split(r"(?<=[.?!])\s", first_line.removeprefix("- "))[0]
        assert normalise(preheader) != normalise(first_sentence)
        assert str(data["summary"])
        levels = [level for level, _ in headings(draft.body)]
        assert min(levels) == 2
        assert all(later <= earlier + 1 for earlier, later in zip([1, *levels], levels, strict=False))
        assert headings(draft.body)[-2:] == [(2, "Key takeaways"), (2, "Try this week")]


def test_a_lead_item_nests_under_its_list_heading_when_both_are_in_one_draft(
    seven_drafts: list[LessonDraft],
) -> None:
    knees, brain = seven_drafts[1], seven_drafts[2]
    assert headings(knees.body)[:2] == [
        (2, "Surprising Benefits of Running Beyond Cardio"),
        (3, "Stronger Knees (Really!) and Healthier Joints"),
    ]
    # The brain draft opens with its own lead item, which the email already prints as the title.
    assert headings(brain.body) == [(2, "Key takeaways"), (2, "Try this week")]
    assert normalise(brain.body).startswith("That morning run is like a cup of coffee for your brain.")


def test_without_topics_one_topic_is_proposed_per_section_and_lead_item(running_text: str) -> None:
    drafts = split_article(running_text)
    assert [draft.slug for draft in drafts] == [
        "running-muscle-mass",
        "sprinting-hiit",
        "long-distance-running",
        "stronger-knees-healthier-joints",
        "brain-power-boost",
        "mood-mental-health-perks",
        "better-sleep-quality",  # "Stronger Immunity" (110 words) joined its shorter neighbour
        "disease-prevention-longevity",
    ]
    assert drafts[6].sources == ("Better Sleep Quality", "Stronger Immunity")
    assert all(draft.words >= 120 for draft in drafts)
    assert drafts[1].title == "Sprinting & HIIT – Muscle Builders?"
    assert drafts[0].sources[0] == "Summary"
    assert drafts[-1].sources[-1] == "Conclusion"
    assert Counter(draft_units(drafts)) == Counter(article_units(RUNNING, RUNNING_DEBRIS))


def test_a_markdown_article_splits_by_its_headings_and_lead_items() -> None:
    drafts = split_article(read_article(HOUSEPLANTS), ["light", "water", "soil"])
    light, water, soil = drafts
    assert [draft.title for draft in drafts] == ["Light Comes First", "Watering Without Drowning", "Soil and Repotting"]
    assert light.sources == (
        "Keeping Houseplants Alive: A Practical Guide",
        "Introduction",
        "Light Comes First",
        "Reading a Window",
    )
    assert (3, "Reading a Window") in headings(light.body)
    assert "- Bright direct light suits cacti and succulents.\n- Bright indirect light" in light.body
    # "Check before you pour" names no topic, so it follows the heading above its list.
    assert [text for _, text in headings(water.body)[:3]] == [
        "Check before you pour",
        "Water deeply, then wait",
        "Seasonal rhythm",
    ]
    assert "Push a finger 2 cm into the pot and water only when it feels dry at that depth." in water.body
    assert water.body.index("A moisture meter helps") > water.body.index("Plants drink far less")
    assert soil.sources == ("Soil and Repotting", "Final Thoughts")
    assert "[RHS houseplant pages](https://www.rhs.org.uk/plants/types/houseplants)" in soil.body
    assert Counter(draft_units(drafts)) == Counter(article_units(HOUSEPLANTS, HOUSEPLANT_DEBRIS))
    for debris in HOUSEPLANT_DEBRIS - {","}:
        assert debris not in "".join(draft.body for draft in drafts)


def test_a_markdown_article_without_topics_gets_topics_from_sections_and_lead_items() -> None:
    drafts = split_article(read_article(HOUSEPLANTS))
    # Each lead item (about 20 words) is too short for a week: they merge, under the heading of their list.
    assert [draft.slug for draft in drafts] == ["light-comes-first", "watering-without-drowning"]
    assert drafts[1].title == "Watering Without Drowning"
    assert drafts[1].sources[:4] == (
        "Watering Without Drowning",
        "Check before you pour",
        "Water deeply, then wait",
        "Seasonal rhythm",
    )
    assert Counter(draft_units(drafts)) == Counter(article_units(HOUSEPLANTS, HOUSEPLANT_DEBRIS))


@pytest.mark.parametrize(
    ("text", "topics", "message"),
    [
        ("", None, "notes.md: is empty"),
        ("  \n\n", SEVEN_TOPICS, "notes.md: is empty"),
        (",\n\n5 min read\n\nLeave a comment\n", None, "is empty once page debris is removed"),
        ("Just one paragraph, no headings at all.\n", None, "no section headings"),
        ("## Sleep\n\nRest well.\n", ["sleep", "astronomy"], "topic 'astronomy' matches no heading"),
        ("## Sleep\n\nRest well.\n", ["sleep", "bedtime"], "'bedtime' only matches headings"),
        ("## Sleep\n\nRest well.\n", ["sleep", "sleep"], "repeated: sleep"),
        ("## Sleep\n\nRest well.\n", ["Sleep Well"], "must be a slug"),
    ],
)
def test_bad_input_raises_a_lesson_error_that_says_what_is_wrong(
    text: str, topics: list[str] | None, message: str
) -> None:
    with pytest.raises(LessonError, match=re.escape(message)):
        split_article(text, topics, source="notes.md")


def test_an_unknown_topic_error_lists_the_headings_to_choose_from(running_text: str) -> None:
    with pytest.raises(LessonError) as caught:
        split_article(running_text, ["muscle", "astronomy"])
    assert "'Brain Power Boost'" in str(caught.value)


def test_read_article_names_the_line_of_a_byte_that_is_not_utf8(tmp_path: Path) -> None:
    article = tmp_path / "latin1.txt"
    article.write_bytes("Heading\n\nCaf\u00e9 au lait.\n".encode("latin-1"))
    with pytest.raises(LessonError, match=r"latin1\.txt line 3: is not UTF-8 text \(byte 0xe9\)"):
        read_article(article)
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(LessonError, match="binary"):
        read_article(binary)


def test_write_drafts_refuses_to_overwrite_and_writes_nothing_then(
    tmp_path: Path, seven_drafts: list[LessonDraft]
) -> None:
    out = tmp_path / "drafts"
    written = write_drafts(seven_drafts, out)
    assert [path.name for path in written] == [draft.filename for draft in seven_drafts]
    assert written[0].read_text(encoding="utf-8") == seven_drafts[0].to_markdown()
    written[3].unlink()
    written[0].write_text("edited by hand\n", encoding="utf-8")
    with pytest.raises(LessonError, match=r"01-muscle\.md: already exists"):
        write_drafts(seven_drafts, out)
    assert not written[3].exists()
    assert written[0].read_text(encoding="utf-8") == "edited by hand\n"
    write_drafts(seven_drafts, out, force=True)
    assert written[0].read_text(encoding="utf-8") == seven_drafts[0].to_markdown()
    assert written[3].exists()


def test_toml_special_characters_in_headings_survive_front_matter(tmp_path: Path) -> None:
    text = '## Say "no" to C:\\ drives\n\nBackslashes and "quotes" stay intact.\n'
    (draft,) = split_article(text)
    assert front_matter(draft.to_markdown())["title"] == 'Say "no" to C:\\ drives'


WORDS = st.sampled_from(["river", "stone", "maple", "cloud", "amber", "lantern", "harbor", "meadow"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(WORDS, min_size=1, max_size=3, unique=True),
            st.lists(st.lists(WORDS, min_size=4, max_size=12), min_size=1, max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_no_paragraph_is_ever_lost_or_repeated(
    sections: list[tuple[list[str], list[list[str]], bool]],
) -> None:
    lines, expected = [], []
    for number, (heading_words, paragraphs, as_lead_items) in enumerate(sections):
        lines.append(f"## {' '.join(heading_words).title()} {number}\n")
        for words in paragraphs:
            sentence = " ".join(words).capitalize() + "."
            lines.append(f"- {words[0].title()} {number}: {sentence}\n" if as_lead_items else f"{sentence}\n")
            expected.append(sentence)
    text = "\n".join(lines)
    proposed = split_article(text)
    assert Counter(draft_units(proposed)) == Counter(expected)
    first_heading_word = sections[0][0][0]
    named = split_article(text, [first_heading_word])
    assert len(named) == 1
    assert Counter(draft_units(named)) == Counter(expected)


def test_cli_writes_the_drafts_and_lists_them(tmp_path: Path) -> None:
    out = tmp_path / "lessons"
    result = CliRunner().invoke(main, ["split", str(RUNNING), "--out", str(out), "--topics", ",".join(SEVEN_TOPICS)])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == [
        *(f"{n:02d}-{slug}.md" for n, slug in enumerate(SEVEN_TOPICS, 1)),
        "series.toml",
    ]
    assert "Wrote 7 lesson drafts" in result.output
    assert "07-longevity.md  Disease Prevention & Longevity" in result.output
    assert "from: Disease Prevention & Longevity; Conclusion" in result.output


def test_cli_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "lessons"
    args = ["split", str(HOUSEPLANTS), "--out", str(out), "--topics", "light, water, soil"]
    assert CliRunner().invoke(main, args).exit_code == 0
    (out / "02-water.md").write_text("my edits\n", encoding="utf-8")
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1
    assert "already exists" in refused.output
    assert "--force" in refused.output
    assert (out / "02-water.md").read_text(encoding="utf-8") == "my edits\n"
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "02-water.md").read_text(encoding="utf-8").startswith('+++\nweek = 2\nslug = "water"\n')


@pytest.mark.parametrize(
    ("content", "topics", "message"),
    [
        (b"", None, "is empty"),
        (b"Heading\n\n\xff\xfe broken\n", None, "line 3: is not UTF-8 text"),
        (HOUSEPLANTS.read_bytes(), "light,astronomy", "topic 'astronomy' matches no heading"),
    ],
)
def test_cli_reports_bad_articles_with_exit_code_1(
    tmp_path: Path, content: bytes, topics: str | None, message: str
) -> None:
    article = tmp_path / "article.md"
    article.write_bytes(content)
    args = ["split", str(article), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*args, "--topics", topics] if topics else args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "article.md" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["split", str(RUNNING)], "Missing option '--out'"),
        (["split", "no-such-article.txt", "--out", "x"], "does not exist"),
        (["split", str(RUNNING), "--out", "x", "--topics", "Muscle Gain"], "is not a slug"),
        (["split", str(RUNNING), "--out", "x", "--topics", " , "], "name at least one topic"),
    ],
)
def test_cli_usage_errors_exit_with_code_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output


def test_cli_help_explains_the_command() -> None:
    result = CliRunner().invoke(main, ["split", "--help"])
    assert result.exit_code == 0
    for phrase in ("ARTICLE", "--out", "--topics", "--force", "Lead phrase:", "Key takeaways"):
        assert phrase in result.output


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "articles"
GARDEN = FIXTURES / "vegetable-garden.md"
MORNING = FIXTURES / "morning-pages.txt"
INTERVALS = FIXTURES / "interval-plan.txt"
# Each fixture with its page debris and (plain text only) the lines that are headings.
SHAPES = {
    "vegetable-garden.md": (
        {
            "Skip to content",
            "We use cookies to improve your experience. By continuing to browse, you agree to our use of cookies.",
            "Accept all cookies",
            "8 min read",
            "Share this",
            "Subscribe",
            "Leave a comment",
            "Related posts",
        },
        set(),
    ),
    "morning-pages.txt": ({"Share", "Loading...", "Like this:"}, set()),
    "interval-plan.txt": (
        {"5 min read", "Leave a comment"},
        {"Interval Training for Beginners", "Why Intervals Work", "Your First Session", "Progressing Week by Week"}
        | {"Recovery"},
    ),
    "houseplants.md": (HOUSEPLANT_DEBRIS, set()),
    "running-and-muscle.txt": (RUNNING_DEBRIS, set()),
}
MARKER = re.compile(r"^(?:[-*•]|\d+[.)]|>)(?:\s+|$)")


def article_text(path: Path) -> str:
    """The article's words in order, read without the splitter: no debris, headings, markers or lead phrases."""
    debris, plain_headings = SHAPES[path.name]
    words: list[str] = []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        if not line or line in debris or line.startswith("#") or line in plain_headings:
            continue
        if path.name == RUNNING.name and len(line) <= 80:
            continue  # the bundled article's headings are its short lines
        marker = MARKER.match(line)
        text = line[marker.end() :] if marker else line
        lead = LEAD_PHRASE.match(text) if marker and line[0] in "-*•" else None
        if lead and len(text[: lead.end()].split()) <= 11:
            text = text[lead.end() :][:1].upper() + text[lead.end() + 1 :]
        words += text.split()
    return " ".join(words)


def drafts_text(drafts: list[LessonDraft]) -> str:
    """The drafts' words in week order, without headings or markers."""
    words: list[str] = []
    for draft in drafts:
        for raw in draft.body.splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                marker = MARKER.match(line)
                words += (line[marker.end() :] if marker else line).split()
    return " ".join(words)


@pytest.mark.parametrize(
    ("name", "weeks"),
    # An article without headings is split only by --weeks.
    [(name, weeks) for name in SHAPES for weeks in (None, 2, 3) if weeks or name != MORNING.name],
)
def test_every_line_lands_once_in_article_order(name: str, weeks: int | None) -> None:
    path = FIXTURES / name if name != RUNNING.name else RUNNING
    drafts = split_article(read_article(path), weeks=weeks)
    assert drafts_text(drafts) == article_text(path)
    if weeks is not None:
        assert len(drafts) == weeks


def test_an_article_without_headings_needs_weeks_and_is_cut_at_paragraphs() -> None:
    text = read_article(MORNING)
    with pytest.raises(LessonError, match="use --weeks N"):
        split_article(text)
    drafts = split_article(text, weeks=3)
    assert drafts[0].title == "Every morning, before coffee and before the phone, write…"
    assert drafts[0].slug == "every-morning-before-coffee"
    assert len({draft.slug for draft in drafts}) == 3
    # The pull quote is a quote, and the debris is gone.
    assert "> “The pages are not art. They are not even writing.”" in "".join(draft.body for draft in drafts)
    with pytest.raises(LessonError, match="has 6 paragraph"):
        split_article(text, weeks=7)


def test_lists_quotes_and_nested_headings_keep_their_shape() -> None:
    (first, second) = split_article(read_article(GARDEN))
    assert "> The best fertiliser is the gardener’s shadow.\n>\n> — Old proverb" in first.body
    assert (
        "- Lettuce, spinach and chard tolerate light shade.\n"
        "  - In midsummer they even prefer it, as it slows bolting.\n"
        "  - Shade cloth helps where there is no shade.\n"
        "- Root crops sit in between."
    ) in first.body
    assert "1. Clear the weeds and loosen the top 20 cm with a fork.\n2. Spread 5 cm" in first.body
    # The lesson's title (its h1) is its main section's heading: the sub-headings follow it at h2.
    assert first.title == "Planning the Beds"
    assert headings(first.body)[:3] == [(2, "Sunlight"), (2, "Soil"), (3, "Testing the soil")]
    assert "## A Year in the Vegetable Garden" not in first.body  # the article's title names the series
    assert "> Sow in haste, thin at leisure." in second.body
    numbered = split_article(read_article(INTERVALS), weeks=3)[1]
    assert "1. Warm up with ten minutes of easy jogging.\n2. Run hard" in numbered.body


def test_a_standalone_line_before_a_heading_stays_text() -> None:
    drafts = split_article(read_article(INTERVALS), weeks=3)
    session = drafts[1]
    assert session.title == "Your First Session"
    assert session.body.splitlines()[-5] == "Go by feel"
    assert "## Go by feel" not in "".join(draft.body for draft in drafts)


def test_tiny_sections_merge_and_weeks_balance_lengths(running_text: str) -> None:
    for weeks in (2, 3, 4, 5):
        sizes = [draft.words for draft in split_article(running_text, weeks=weeks)]
        assert len(sizes) == weeks
        assert max(sizes) <= 1.6 * min(sizes), sizes
    assert split_article(running_text, weeks=1)[0].words == sum(d.words for d in split_article(running_text))


def test_weeks_and_topics_do_not_mix(running_text: str) -> None:
    with pytest.raises(LessonError, match="not both"):
        split_article(running_text, ["muscle"], weeks=2)


@pytest.mark.parametrize("name", [name for name in SHAPES if name != MORNING.name])
def test_preheader_and_summary_are_not_the_opening_sentence(name: str) -> None:
    path = FIXTURES / name if name != RUNNING.name else RUNNING
    for draft in split_article(read_article(path)):
        opening = normalise(re.split(r"(?<=[.?!])\s", MARKER.sub("", draft.body.lstrip().splitlines()[0]))[0])
        if opening.startswith("#"):
            continue
        assert normalise(draft.preheader) != opening, draft.slug
        assert normalise(draft.summary) != opening, draft.slug
        assert draft.preheader != draft.summary, draft.slug


def test_a_summing_up_sentence_becomes_the_summary(running_text: str) -> None:
    knees = split_article(running_text, SEVEN_TOPICS)[1]
    assert (
        knees.summary
        == "Running can strengthen your joints and connective tissues, keeping you mobile and limber longer."
    )


def test_non_breaking_spaces_become_plain_spaces(running_text: str) -> None:
    assert "\u00a0" in running_text
    assert not any("\u00a0" in draft.to_markdown() for draft in split_article(running_text))


def test_cli_reports_what_went_where_and_writes_series_toml(tmp_path: Path) -> None:
    out = tmp_path / "lessons"
    result = CliRunner().invoke(main, ["split", str(GARDEN), "--out", str(out), "--weeks", "2"])
    assert result.exit_code == 0, result.output
    assert "01-planning-beds.md  Planning the Beds  (232 words)" in result.output
    assert "from: A Year in the Vegetable Garden; Planning the Beds; Sunlight; Soil; Testing the soil" in result.output
    assert "“A Year in the Vegetable Garden”, names the series" in result.output
    assert "Dropped 8 line(s) of page debris:" in result.output
    assert "line 5: We use cookies" in result.output and "line 61: Subscribe" in result.output
    series = tomllib.loads((out / "series.toml").read_text(encoding="utf-8"))
    assert series["title"] == "A Year in the Vegetable Garden"
    assert series["slug"] == "year-vegetable-garden"
    assert series["description"] == "A vegetable garden rewards patience more than talent."
    assert (out / series["source"]).resolve() == GARDEN
    # Splitting another article into the same folder keeps the series but points it at the new source.
    series_file = out / "series.toml"
    series_file.write_text(series_file.read_text(encoding="utf-8").replace("A Year in", "My Year in"), "utf-8")
    again = CliRunner().invoke(main, ["split", str(HOUSEPLANTS), "--out", str(out), "--force"])
    assert again.exit_code == 0, again.output
    assert f"Pointed `source` at the article in {series_file}" in again.output
    updated = tomllib.loads(series_file.read_text(encoding="utf-8"))
    assert updated["title"] == "My Year in the Vegetable Garden"
    assert (out / updated["source"]).resolve() == HOUSEPLANTS
    assert "also holds 01-planning-beds.md, 02-sowing-planting.md" in again.output  # not replaced: named


def test_cli_refuses_weeks_with_topics() -> None:
    result = CliRunner().invoke(main, ["split", str(RUNNING), "--out", "x", "--weeks", "2", "--topics", "muscle"])
    assert result.exit_code == 2
    assert "not both" in result.output


def test_merge_tiny_and_balance_group_consecutive_units() -> None:
    assert merge_tiny([300, 40, 200, 30, 250]) == [[0], [1, 2, 3], [4]]
    assert merge_tiny([50, 60]) == [[0, 1]]
    assert merge_tiny([]) == []
    assert balance([100, 100, 100, 100], 2) == [[0, 1], [2, 3]]
    assert balance([400, 50, 50, 50, 50, 400], 3) == [[0], [1, 2, 3, 4], [5]]
    with pytest.raises(ValueError):
        balance([1, 2], 3)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=25), st.integers(1, 25))
def test_balanced_and_merged_groups_cover_every_unit_once_in_order(words: list[int], weeks: int) -> None:
    groupings = [merge_tiny(words)]
    if weeks <= len(words):
        groupings.append(balance(words, weeks))
        assert len(groupings[-1]) == weeks
    for groups in groupings:
        assert [unit for group in groups for unit in group] == list(range(len(words)))
        assert all(groups)
    merged = groupings[0]
    assert len(merged) == 1 or all(sum(words[unit] for unit in group) >= 120 for group in merged)


def test_an_empty_markdown_heading_is_kept_as_a_line_of_text() -> None:
    (draft,) = split_article("## Tools\n\nA fork and a rake.\n\n## One more thing\n\n## Last\n\nRest.\n", weeks=1)
    assert "One more thing" in draft.body.splitlines()
    assert "## One more thing" not in draft.body


@pytest.mark.parametrize(
    ("line", "dropped"),
    [
        ("We use cookies to personalise content and ads.", True),
        ("This website uses cookies. Accept or manage your choices.", True),
        ("Click to share on Facebook (Opens in new window)", True),
        ("- Share this", True),
        ("3 Comments", True),
        ("Cookies and cream is the best flavour, and we use cookies in the recipe.", False),
        ("Subscribe to a seed catalogue: it is the best winter reading there is.", False),
        ("Share the harvest with your neighbours.", False),
    ],
)
def test_page_debris_is_whole_lines_of_page_furniture_only(line: str, dropped: bool) -> None:
    article = parse_article(f"## Notes\n\nA first paragraph.\n\n{line}\n", "notes.md")
    assert ([d.text for d in article.debris] == [line]) is dropped
    assert (line.lstrip("- ") in drafts_text(lesson_drafts(article, weeks=1))) is not dropped
