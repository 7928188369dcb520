"""Page tokens and page sizes shared by every list and search RPC."""

from __future__ import annotations

import pytest

from cohort.platform.errors import InvalidArgument
from cohort.platform.paging import MAX_PAGE_SIZE, check_page_size, decode_page_token, encode_page_token


def test_a_token_round_trips_for_its_own_query_only():
    token = encode_page_token(["jobs", "acme", {"state": 2}], ["2026-11-20T10:00:00+00:00", "job-7"])
    assert decode_page_token(token, ["jobs", "acme", {"state": 2}]) == ["2026-11-20T10:00:00+00:00", "job-7"]
    assert decode_page_token("", ["jobs", "acme"]) is None
    with pytest.raises(InvalidArgument, match="different query") as caught:
        decode_page_token(token, ["jobs", "globex", {"state": 2}])
    assert caught.value.field == "page_token"


@pytest.mark.parametrize("token", ["garbage!", "e30", "W10", "x" * 5000])
def test_a_malformed_token_names_the_field(token):
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, ["scope"])
    assert caught.value.field == "page_token"


@pytest.mark.parametrize("size", [0, -1, MAX_PAGE_SIZE + 1, True, 2.5])
def test_page_size_bounds(size):
    with pytest.raises(InvalidArgument) as caught:
        check_page_size(size)
    assert caught.value.field == "page_size"
    assert check_page_size(MAX_PAGE_SIZE) == MAX_PAGE_SIZE
