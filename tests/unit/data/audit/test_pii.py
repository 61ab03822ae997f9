"""PII detectors: checksums against published test numbers, planted values found, look-alikes not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from assay.data.audit import AuditContext, AuditData, AuditSplit, run_audit
from assay.data.audit.pii import find_pii, iban_valid, luhn_valid

# The card networks' published test numbers (all pass Luhn).
VALID_CARDS = [
    "4111111111111111",  # Visa
    "4012888888881881",  # Visa
    "4222222222222",  # Visa, 13 digits
    "5555555555554444",  # Mastercard
    "5105105105105100",  # Mastercard
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # American Express
    "371449635398431",  # American Express
    "6011111111111117",  # Discover
    "6011000990139424",  # Discover
    "3530111333300000",  # JCB
    "30569309025904",  # Diners Club
]
# Published example IBANs (ECBS / national banking associations' documentation).
VALID_IBANS = [
    "GB82 WEST 1234 5698 7654 32",
    "GB29 NWBK 6016 1331 9268 19",
    "DE89 3704 0044 0532 0130 00",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "BE68 5390 0754 7034",
    "CH93 0076 2011 6238 5295 7",
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "NO93 8601 1117 947",
]


def _altered(number: str) -> str:
    """The same number with its last digit changed: Luhn and mod 97 both catch any one-digit change."""
    last = next(k for k in range(len(number) - 1, -1, -1) if number[k].isdigit())
    return number[:last] + str((int(number[last]) + 1) % 10) + number[last + 1 :]


@pytest.mark.parametrize("number", VALID_CARDS)
def test_luhn_accepts_published_test_cards_and_rejects_one_digit_changes(number: str) -> None:
    assert luhn_valid(number)
    assert not luhn_valid(_altered(number))


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_iban_checksum_accepts_published_examples_and_rejects_changes(iban: str) -> None:
    assert iban_valid(iban)
    assert not iban_valid(_altered(iban))
    assert not iban_valid(iban.replace(" ", "")[:-1])  # wrong length for the country


def test_luhn_reference_values() -> None:
    # The Luhn example of ISO/IEC 7812-1 Annex B and its neighbours.
    assert luhn_valid("79927398713")
    assert not any(luhn_valid(f"7992739871{d}") for d in range(10) if d != 3)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe+news@example.co.uk today", "email"),
        ("call +44 20 7946 0958 after six", "phone"),
        ("call (555) 123-4567", "phone"),
        ("card 4111 1111 1111 1111 exp 12/30", "payment_card"),
        ("card 5555-5555-5555-4444", "payment_card"),
        ("pay to DE89 3704 0044 0532 0130 00 please", "iban"),
        ("server at 192.168.10.254 answered", "ip_address"),
        ("server at 2001:db8::8a2e:370:7334 answered", "ipv6_address"),
        ("ssn 123-45-6789", "national_id"),
        ("NI number AB 12 34 56 C", "national_id_uk"),
    ],
)
def test_each_detector_finds_its_kind(text: str, kind: str) -> None:
    assert kind in find_pii(text)


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "order 1234567890123",  # 13 digits, fails Luhn
        "pay to DE89 3704 0044 0532 0130 01",  # fails mod 97
        "version 999.300.1.2",  # an octet above 255
        "ssn 000-12-3456",  # never issued
        "the meeting is at 10:30",
        "no personal data at all",
    ],
)
def test_look_alikes_are_not_flagged_as_cards_ibans_ips_or_ids(text: str) -> None:
    found = find_pii(text)
    assert not set(found) & {"payment_card", "iban", "ip_address", "national_id"}


def _table_with_pii(seed: int = 0) -> tuple[AuditData, dict[str, set[str]]]:
    rng = np.random.default_rng(seed)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "it",
        "rains",
        "in",
        "spring",
    ]
    n = 200
    notes = [" ".join(rng.choice(words, 8)) for _ in range(n)]
    planted: dict[str, set[str]] = {"email": set(), "payment_card": set(), "invalid_card": set()}
    for k in rng.choice(n, 60, replace=False)[:20]:
        notes[k] += f" contact user{k}@example.org"
        planted["email"].add(f"train-{k}")
    rows = rng.permutation([k for k in range(n) if f"train-{k}" not in planted["email"]])
    for r, k in enumerate(rows[:12]):
        notes[k] += f" card {VALID_CARDS[r]}"
        planted["payment_card"].add(f"train-{k}")
    for r, k in enumerate(rows[12:24]):
        notes[k] += f" ref {_altered(VALID_CARDS[r])}"
        planted["invalid_card"].add(f"train-{k}")
    frame = pd.DataFrame({"note": notes, "value": rng.normal(size=n)})
    split = AuditSplit(
        ids=np.char.add("train-", np.arange(n).astype(str)),
        labels=rng.integers(0, 2, n),
        x=frame[["value"]].to_numpy(np.float32),
        frame=frame,
    )
    data = AuditData("pii", "table", {"train": split}, ["a", "b"], "pii", text_columns=["note"])
    return data, planted


def test_planted_emails_and_valid_cards_are_found_invalid_cards_are_not() -> None:
    data, planted = _table_with_pii()
    result = run_audit(AuditContext(data), ["pii"])
    email = result.get("pii_email[train]")
    card = result.get("pii_payment_card[train]")
    assert email.details["count"] == 20 and card.details["count"] == 12
    assert email.value == pytest.approx(20 / 200)
    assert email.ci_low < 0.1 < email.ci_high
    assert set(email.details["examples"]) <= planted["email"]
    assert set(card.details["examples"]) <= planted["payment_card"]
    assert not set(card.details["examples"]) & planted["invalid_card"]
    assert card.details["columns"] == {"note": 12}


def test_the_report_never_holds_the_values_found() -> None:
    data, _ = _table_with_pii()
    result = run_audit(AuditContext(data), ["pii"])
    text = json.dumps([m.to_dict() for m in result.measurements])
    assert "@example.org" not in text
    assert not any(card in text for card in VALID_CARDS)
