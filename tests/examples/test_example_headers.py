"""What the example reads from and adds to a submitted message, byte for byte.

``with_unsubscribe_headers`` prepends List-Unsubscribe (and List-Unsubscribe-Post) and takes out
the ones the message brought; ``clevertap_meta`` finds X-CleverTap_META without parsing the
message. Both work on the bytes as submitted; the relayed copies are checked end to end in
test_example_integration.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The gateway runs as a script: its modules import each other by bare name.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "integration"))

from core import clevertap_meta, with_unsubscribe_headers

URL = "http://127.0.0.1:8080/u/tok"
MAILTO = "unsubscribe+tok@sut.test"
ADDED = (
    b"List-Unsubscribe: <http://127.0.0.1:8080/u/tok>, <mailto:unsubscribe+tok@sut.test>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
)
BODY = b"\r\nHello.\r\nList-Unsubscribe: <mailto:in-the-body@brand.test>\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@brand.test\r\nSubject: x\r\n" + BODY,
        b"From: a@brand.test\nSubject: x\n\nbare LF line ends\n",
        b"From: a@brand.test\r\nSubject: no body\r\n",
        b"",
    ],
)
def test_a_message_without_the_headers_follows_them_untouched(raw: bytes) -> None:
    assert with_unsubscribe_headers(raw, URL, MAILTO) == ADDED + raw


def test_the_headers_a_message_brought_are_replaced_folded_lines_and_all() -> None:
    raw = (
        b"From: a@brand.test\r\n"
        b"list-unsubscribe: <https://brand.test/u/1>,\r\n"
        b"\t<mailto:u@brand.test>\r\n"
        b"Subject: x\r\n"
        b"LIST-UNSUBSCRIBE-POST : List-Unsubscribe=One-Click\r\n"
        b"X-List-Unsubscribe-Note: kept, a different header\r\n" + BODY
    )
    assert with_unsubscribe_headers(raw, URL, MAILTO) == ADDED + (
        b"From: a@brand.test\r\n"
        b"Subject: x\r\n"
        b"X-List-Unsubscribe-Note: kept, a different header\r\n" + BODY
    )


def test_without_one_click_only_rfc_2369_is_added() -> None:
    raw = b"Subject: x\r\n" + BODY
    added = with_unsubscribe_headers(raw, URL, MAILTO, one_click=False)
    assert added == ADDED.splitlines(keepends=True)[0] + raw


@pytest.mark.parametrize(
    ("raw", "meta"),
    [
        (b"Subject: x\r\nX-CleverTap_META: abc==\r\n" + BODY, "abc=="),
        (b"x-clevertap_meta:  a\r\n b\r\n\tc\r\n" + BODY, "a b\tc"),
        (b"Subject: x\r\n" + b"\r\nX-CleverTap_META: in the body\r\n", None),
        (b"Subject: x\r\n", None),
    ],
)
def test_the_meta_is_read_as_submitted_only_unfolded(raw: bytes, meta: str | None) -> None:
    assert clevertap_meta(raw) == meta
