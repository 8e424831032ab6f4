"""Zone names: which are places, what the others mean, and offsets typed where a zone belongs."""

from __future__ import annotations

import pytest

from newsletter.errors import ScheduleValueError
from newsletter.schedule import parse_timezone
from newsletter.zones import aliases, caveat, form_zones, offset_hint


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "US/Eastern", "Asia/Calcutta", "UTC", "Etc/UTC"])
def test_places_their_other_names_and_utc_need_no_caveat(zone: str) -> None:
    assert caveat(zone) is None


@pytest.mark.parametrize(
    ("zone", "said"),
    [
        ("EST", "time zone 'EST' is UTC−5 all year, without daylight saving, while America/New_York moves to UTC−4"),
        ("HST", "time zone 'HST' is UTC−10 all year, without daylight saving: choose the zone of a city, such as"),
        ("CET", "time zone 'CET' follows one set of daylight-saving rules (UTC+1 in winter, UTC+2 in summer)"),
        ("Etc/GMT+2", "Etc/GMT+2 is 2 hours behind UTC, and UTC+2 is Etc/GMT-2"),
    ],
)
def test_a_zone_that_is_not_a_place_says_what_it_means(zone: str, said: str) -> None:
    found = caveat(zone)
    assert found is not None and said in found


@pytest.mark.parametrize("typed", ["GMT+2", "UTC+2", "UTC +2", "+02:00"])
def test_an_offset_is_explained_and_never_corrected_to_another_zone(typed: str) -> None:
    with pytest.raises(ScheduleValueError) as caught:
        parse_timezone(typed)
    message = str(caught.value)
    assert f"{typed!r} is an offset from UTC, not a time zone" in message
    assert "for UTC+2 all year: 'Africa/Maputo'" in message and "Etc/GMT-2 is UTC+2 all year" in message
    assert "did you mean" not in message and "GMT+0" not in message
    assert offset_hint("Europe/Berlin") is None and offset_hint("+15:00") is None


@pytest.mark.parametrize("name", ["Factory", "localtime", "posixrules"])
def test_files_of_the_zone_database_that_are_not_zones_are_refused(name: str) -> None:
    with pytest.raises(ScheduleValueError, match="expected an IANA zone name"):
        parse_timezone(name)


def test_a_typo_gets_the_place_it_was_probably_meant_to_be() -> None:
    with pytest.raises(ScheduleValueError, match=r"\(did you mean 'Europe/Berlin'\?\)"):
        parse_timezone("Europe/Berln")


def test_the_forms_offer_utc_and_places_and_map_other_names_onto_them() -> None:
    offered = form_zones()
    assert offered[0] == "UTC" and "Europe/Kyiv" in offered and "Asia/Kolkata" in offered
    assert not {"Europe/Kiev", "Asia/Calcutta", "US/Eastern", "EST", "CET", "Etc/GMT+2"} & set(offered)
    assert aliases()["Europe/Kiev"] == "Europe/Kyiv" and aliases()["Etc/UTC"] == "UTC"
