"""Personal data in text: e-mail addresses, phone numbers, payment cards, IBANs, IP addresses, national ids.

Each detector is a pattern plus, where the format has one, its checksum: a payment card number must pass
the Luhn check, an IBAN the ISO 13616 mod-97 check with its country's length; an IPv4 address has four
octets up to 255, an IPv6 address must parse. National-id patterns (US SSN with its never-issued ranges
excluded, UK National Insurance number) are patterns only. The report gives counts and example ids, never
the values found.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

import numpy as np

from assay.data.audit.findings import rate_finding
from assay.data.audit.registry import AuditContext, register
from assay.measurement import Measurement

# ISO 13616 IBAN lengths per country (the SWIFT registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits."""
    if not digits.isdigit():
        return False
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch)
        if k % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616: known country, its length, and mod 97 of the rearranged number equal to 1."""
    iban = re.sub(r"\s", "", candidate).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", iban) or IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
# International (+CC ...) or a national number with an area code in parentheses or separators.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}"
    r"|\(\d{2,4}\)[\s.-]?\d{3,4}[\s.-]?\d{3,4}"
    r"|\b\d{3}[.-]\d{3}[.-]\d{4})(?![\w])"
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![:\w])")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_NINO = re.compile(
    r"\b(?![DFIQUV])[A-CEGHJ-PR-TW-Z](?![DFIQUVO])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)


def _card_ok(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _ipv4_ok(match: str) -> bool:
    return all(int(octet) <= 255 for octet in match.split("."))


def _ipv6_ok(match: str) -> bool:
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _phone_ok(match: str) -> bool:
    return 7 <= sum(ch.isdigit() for ch in match) <= 15


# name -> (pattern, validator of one match)
DETECTORS: dict[str, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "email": (_EMAIL, lambda m: True),
    "phone": (_PHONE, _phone_ok),
    "payment_card": (_CARD, _card_ok),
    "iban": (_IBAN, iban_valid),
    "ip_address": (_IPV4, _ipv4_ok),
    "ipv6_address": (_IPV6, _ipv6_ok),
    "national_id": (_SSN, lambda m: True),
    "national_id_uk": (_NINO, lambda m: True),
}


def find_pii(text: str) -> dict[str, int]:
    """How many valid matches of each kind ``text`` holds (kinds with none left out).

    Card numbers are matched before phone numbers, and a card's digits are not counted again as a phone.
    """
    found: dict[str, int] = {}
    taken: list[tuple[int, int]] = []
    for kind in (
        "email",
        "iban",
        "payment_card",
        "national_id",
        "national_id_uk",
        "ip_address",
        "ipv6_address",
        "phone",
    ):
        pattern, valid = DETECTORS[kind]
        for m in pattern.finditer(text):
            if any(m.start() < stop and start < m.end() for start, stop in taken):
                continue
            if valid(m.group()):
                found[kind] = found.get(kind, 0) + 1
                taken.append((m.start(), m.end()))
    return found


def scan(texts: Iterable[object]) -> dict[str, np.ndarray]:
    """Per kind, a boolean per text: does it hold at least one valid match (missing values hold none)."""
    rows = [find_pii(t) if isinstance(t, str) else {} for t in texts]
    return {kind: np.array([kind in r for r in rows], dtype=bool) for kind in DETECTORS}


@register(
    "pii", "e-mail, phone, payment card (Luhn), IBAN (mod 97), IP address, national-id patterns", ("table",)
)
def pii(ctx: AuditContext) -> list[Measurement]:
    out: list[Measurement] = []
    columns = [c for c in ctx.data.text_columns]
    if not columns:
        return [Measurement.skipped("pii", "data", "no text columns to scan")]
    totals: dict[str, int] = {}
    for split_name, split in ctx.data.splits.items():
        assert split.frame is not None
        any_hit = {kind: np.zeros(split.n, bool) for kind in DETECTORS}
        per_column: dict[str, dict[str, int]] = {}
        for column in columns:
            hits = scan(split.frame[column].tolist())
            for kind, mask in hits.items():
                any_hit[kind] |= mask
                if mask.any():
                    per_column.setdefault(kind, {})[column] = int(mask.sum())
        for kind, mask in any_hit.items():
            totals[kind] = totals.get(kind, 0) + int(mask.sum())
            out.append(
                rate_finding(
                    f"pii_{kind}[{split_name}]",
                    int(mask.sum()),
                    split.n,
                    f"share of {split_name} rows whose text columns hold a valid {kind.replace('_', ' ')}",
                    check="pii",
                    examples=split.ids[mask][:12].tolist(),
                    columns=per_column.get(kind, {}),
                    split=split_name,
                )
            )
    ctx.extra["pii_counts"] = totals
    return out
