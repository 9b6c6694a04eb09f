"""The address check's fast path must agree with the full validator on every input it takes."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from harness import addresses
from harness.addresses import address_problem

DOMAINS = st.sampled_from(
    [
        "example.com",
        "x.test",
        "mail.example.org",
        "localhost",
        "x.local",
        "example.invalid",
        "-bad.com",
        "bad-.com",
        "a..b.com",
        "x",
        "xn--bcher-kva.example",
        "b\u00fccher.example",
        "[192.0.2.1]",
        "a" * 64 + ".com",
        "com",
    ]
)
LOCALS = st.text(
    alphabet=st.sampled_from("abcXYZ019_+-.!#$%&'*/=?^`{|}~\"\\ @\u00e9"), min_size=0, max_size=70
)


@given(local=LOCALS, domain=DOMAINS)
@example(local="x" * 64, domain="example.com")
@example(local="x" * 65, domain="example.com")
@example(local="a..b", domain="example.com")
@example(local=".a", domain="example.com")
@example(local="a.", domain="example.com")
@example(local="Abc019", domain="example.com")  # letters and digits: no pattern needed
@example(local="\u00e9t\u00e9", domain="example.com")  # letters, not ASCII: the validator's
def test_fast_path_agrees_with_the_full_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert (address_problem(address) is None) == (addresses._full_problem(address) is None)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("user@example.com", None),
        ("a+tag@x.test", None),
        ("x" * 65 + "@example.com", "too long before the @-sign"),
        ("a@localhost", "should have a period"),
        ("a@x.local", "special-use or reserved name"),
        ("a..b@example.com", "two periods in a row"),
    ],
)
def test_verdicts(address: str, problem: str | None) -> None:
    found = address_problem(address)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
