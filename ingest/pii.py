"""PII recognisers that need no model: patterns, then a checksum or a structural check.

Everything here works on UTF-8 bytes with ASCII-only classes, so a finding's ``start`` and
``end`` are byte offsets into the UTF-8 encoding of the text, and a redaction is a splice of
bytes. A finding carries its kind and span, never the value.

Scanning is two-staged for speed. Cheap *triggers* (one byte-class translation, a few
literal-prefixed regexes and plain substring searches, all C-level) say where a recogniser
could possibly match; the recognisers then run only in small windows around those places,
each family as one alternation in priority order. On upload the triggers and windows run on
the raw JSONL chunk itself (``scan_jsonl_chunk``): outside escapes a JSON string holds the
content's own bytes, so most lines are never decoded for PII at all; a line is decoded and
scanned content by content when a window holds a backslash, when the line holds a secret's
literal, or when it escapes printable ASCII (the one way JSON could hide a trigger). Tests
hold both paths to the same answers on every example of the labelled set.

National identifiers with a defined check (documented in ``NATIONAL_ID_SCHEMES``):
Spanish DNI/NIE (mod 23 letter), Brazilian CPF (two mod 11 digits), Indian Aadhaar
(Verhoeff), French NIR (97 - n mod 97 key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

RECOGNISER_SET_NAME = "tunegate-pii"
RECOGNISER_SET_REVISION = 1

# --- the kinds -----------------------------------------------------------------------------

EMAIL = "email"
PHONE = "phone"
PAYMENT_CARD = "payment_card"
IBAN = "iban"
IPV4 = "ipv4"
IPV6 = "ipv6"
US_SSN = "us_ssn"
ES_DNI = "es_dni"
BR_CPF = "br_cpf"
IN_AADHAAR = "in_aadhaar"
FR_NIR = "fr_nir"
AWS_ACCESS_KEY = "aws_access_key"
AWS_SECRET_KEY = "aws_secret_key"  # noqa: S105 - a kind's name
PRIVATE_KEY = "private_key"
JWT = "jwt"
BEARER_TOKEN = "bearer_token"  # noqa: S105 - a kind's name

NATIONAL_ID_SCHEMES = {
    ES_DNI: "Spain DNI (8 digits) / NIE (X|Y|Z + 7 digits): check letter = table[n mod 23]",
    BR_CPF: "Brazil CPF NNN.NNN.NNN-DD: two mod-11 check digits (formatted form only)",
    IN_AADHAAR: "India Aadhaar NNNN NNNN NNNN (first digit 2-9): Verhoeff check digit",
    FR_NIR: "France NIR (15 digits, Corsica 2A/2B): key = 97 - (first 13 digits mod 97)",
}

# Resolution order when two validated findings overlap: the more specific kind wins.
PRIORITY = (
    PRIVATE_KEY,
    JWT,
    AWS_SECRET_KEY,
    AWS_ACCESS_KEY,
    BEARER_TOKEN,
    IBAN,
    PAYMENT_CARD,
    FR_NIR,
    BR_CPF,
    IN_AADHAAR,
    ES_DNI,
    US_SSN,
    EMAIL,
    PHONE,
    IPV4,
    IPV6,
)
KINDS = PRIORITY
_RANK = {kind: rank for rank, kind in enumerate(PRIORITY)}


def placeholder(kind: str) -> bytes:
    return b"[" + kind.upper().encode() + b"]"


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """One recognised value: its kind and UTF-8 byte span in the text it was found in."""

    kind: str
    start: int
    end: int


# --- checksums -----------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SC": 31,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
}


def iban_valid(compact: str) -> bool:
    """ISO 13616: country length, then the rearranged number mod 97 must be 1."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_valid(compact: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter)."""
    body, letter = compact[:-1], compact[-1].upper()
    if body[0] in "XYZ":
        body = str("XYZ".index(body[0])) + body[1:]
    return body.isdigit() and len(body) == 8 and _DNI_LETTERS[int(body) % 23] == letter


def cpf_valid(digits: str) -> bool:
    if len(digits) != 11 or len(set(digits)) == 1:
        return False
    values = [ord(c) - 48 for c in digits]
    for check_at in (9, 10):
        total = sum(v * (check_at + 1 - i) for i, v in enumerate(values[:check_at]))
        if (total * 10) % 11 % 10 != values[check_at]:
            return False
    return True


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_valid(digits: str) -> bool:
    check = 0
    for position, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][ord(char) - 48]]
    return check == 0


def nir_valid(compact: str) -> bool:
    body, key = compact[:13], compact[13:]
    body = body.replace("2A", "19").replace("2B", "18")
    return body.isdigit() and key.isdigit() and 97 - int(body) % 97 == int(key)


# --- recognisers ---------------------------------------------------------------------------

Validator = Callable[[bytes, "re.Match[bytes]"], "tuple[int, int] | None"]


@dataclass(frozen=True)
class Recogniser:
    kind: str
    pattern: re.Pattern[bytes]
    validate: Validator
    trigger: str  # which trigger family opens a window for this recogniser


def _whole(_text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    return match.span()


def _digits(raw: bytes) -> str:
    return re.sub(rb"\D", b"", raw).decode()


_DATE = re.compile(rb"\d{1,4}([./-])\d{1,2}\1\d{1,4}")


_GROUP_BEFORE = re.compile(rb"\d[ .-]\Z")
_GROUP_AFTER = re.compile(rb"[ .-]\d")


def _phone(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    raw = match.group()
    digits = _digits(raw)
    if _DATE.fullmatch(raw):
        return None
    # A tail of a longer grouped number (an invalid IBAN, an id) is not a phone number.
    start, end = match.span()
    if _GROUP_BEFORE.search(text, max(0, start - 2), start) or _GROUP_AFTER.match(text, end):
        return None
    if raw.startswith(b"+"):
        ok = 8 <= len(digits) <= 15
    elif raw.startswith(b"0"):
        ok = (
            9 <= len(digits) <= 12
            and not raw.startswith(b"00")
            and re.search(rb"[ .-]", raw) is not None
        )
    else:  # North American: area code and exchange never start with 0 or 1
        ok = len(digits) == 10 and digits[0] > "1" and digits[3] > "1"
    return match.span() if ok else None


_CARD_PREFIXES = (
    ((4,), (13, 16, 19)),
    (tuple(range(51, 56)) + tuple(range(2221, 2721)), (16,)),
    ((34, 37), (15,)),
    ((6011, 65) + tuple(range(644, 650)), (16, 17, 18, 19)),
    (tuple(range(3528, 3590)), (16, 17, 18, 19)),
    ((36, 38, 39) + tuple(range(300, 306)), (14, 15, 16, 17, 18, 19)),
    ((62,), (16, 17, 18, 19)),
)
_CARD_GROUPINGS = {
    (4, 4, 4, 4),
    (4, 6, 5),
    (4, 6, 4),
    (4, 4, 4, 4, 3),
    (4, 4, 4, 4, 2),
    (4, 4, 4, 1),
    (4, 4, 4, 2),
    (4, 4, 4, 3),
}


def _card_network_accepts(digits: str) -> bool:
    for prefixes, lengths in _CARD_PREFIXES:
        if len(digits) in lengths and any(digits.startswith(str(p)) for p in prefixes):
            return True
    return False


def _payment_card(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    """The longest leading run of whole digit groups that is a plausible, Luhn-valid card."""
    raw = match.group()
    separators = set(re.findall(rb"[ -]", raw))
    if len(separators) > 1:
        return None
    groups = re.split(rb"[ -]", raw) if separators else [raw]
    for count in range(len(groups), 0, -1):
        digits = b"".join(groups[:count]).decode()
        if not 13 <= len(digits) <= 19:
            continue
        if separators and tuple(len(g) for g in groups[:count]) not in _CARD_GROUPINGS:
            continue
        if luhn_valid(digits) and _card_network_accepts(digits):
            end = match.start() + len(b" ".join(groups[:count]))
            return match.start(), end
    return None


def _iban(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    raw = match.group()
    expected = IBAN_LENGTHS.get(raw[:2].decode())
    if expected is None:
        return None
    taken = 0
    for index, byte in enumerate(raw):
        if byte != 0x20:
            taken += 1
            if taken == expected:
                compact = raw[: index + 1].replace(b" ", b"").decode()
                end = match.start() + index + 1
                if end < len(text) and text[end : end + 1].isalnum():
                    return None
                return (match.start(), end) if iban_valid(compact) else None
    return None


_VERSION_CONTEXT = re.compile(rb"\b(?:version|release|build|ver\.?)\s*$", re.IGNORECASE)


def _ipv4(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    if _VERSION_CONTEXT.search(text, max(0, match.start() - 12), match.start()):
        return None
    return match.span()


def _ipv6(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    raw = match.group().decode()
    try:
        ipaddress.IPv6Address(raw.split("%", 1)[0])
    except ValueError:
        return None
    groups = [g for g in re.split(r"[:.]", raw.split("%", 1)[0]) if g]
    return match.span() if len(groups) >= 3 else None


def _es_dni(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    compact = re.sub(rb"[ -]", b"", match.group()).decode()
    return match.span() if dni_valid(compact) else None


def _br_cpf(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    return match.span() if cpf_valid(_digits(match.group())) else None


_AADHAAR_CONTEXT = re.compile(rb"(?:aadhaa?r|uidai|\buid)\b", re.IGNORECASE)


def _in_aadhaar(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    raw = match.group()
    if raw.isdigit() and not _AADHAAR_CONTEXT.search(
        text, max(0, match.start() - 40), match.start()
    ):
        return None  # twelve bare digits are too often an order or account number
    return match.span() if verhoeff_valid(_digits(raw)) else None


def _fr_nir(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    compact = match.group().replace(b" ", b"").decode()
    return match.span() if nir_valid(compact) else None


def _jwt(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    header = match.group().split(b".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return None
    return match.span() if isinstance(decoded, dict) and "alg" in decoded else None


def _token_group(text: bytes, match: re.Match[bytes]) -> tuple[int, int] | None:
    token = match.group("token")
    if not (re.search(rb"\d", token) and re.search(rb"[A-Za-z]", token)):
        return None
    return match.span("token")


def _compile(pattern: bytes) -> re.Pattern[bytes]:
    return re.compile(pattern, re.VERBOSE)


# Trigger families: DIGITS (a dense run of digits, or a dotted quad), AT ('@'), COLON (a
# hex group between colons, or '::') and one literal per secret kind.
DIGITS, AT, COLON = "digits", "at", "colon"

RECOGNISERS: tuple[Recogniser, ...] = (
    Recogniser(
        EMAIL,
        _compile(rb"""
        (?<![A-Za-z0-9._%+\x80-\xff-]) [A-Za-z0-9._%+\x80-\xff-]{1,64} @
        (?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+
        [A-Za-z]{2,24} (?![A-Za-z0-9-])
    """),
        _whole,
        AT,
    ),
    Recogniser(
        PHONE,
        _compile(rb"""
        (?<![\w+./#-])
        (?: \+\d{1,3} [ .-]? (?:\(\d{1,4}\) [ .-]?)? \d{1,4} (?:[ .-]?\d{1,4}){1,5}
          | \(\d{3}\) [ ]? \d{3} [ .-] \d{4}
          | \d{3} (?P<nanp_sep>[ .-]) \d{3} (?P=nanp_sep) \d{4}
          | 0\d{1,4} (?:[ .-]?\d{2,4}){2,4}
        )
        (?![\w-]|\.\d)
    """),
        _phone,
        DIGITS,
    ),
    Recogniser(
        PAYMENT_CARD,
        _compile(rb"""
        (?<![\w.-]) \d (?:[ -]?\d){12,22} (?![\w-]|\.\d)
    """),
        _payment_card,
        DIGITS,
    ),
    Recogniser(
        IBAN,
        _compile(rb"""
        (?<![A-Za-z0-9]) [A-Z]{2}\d{2} (?:[ ]?[A-Z0-9]){10,30}
    """),
        _iban,
        DIGITS,
    ),
    Recogniser(
        IPV4,
        _compile(rb"""
        (?<![\w.]) (?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)
        (?!\w|\.\d)
    """),
        _ipv4,
        DIGITS,
    ),
    Recogniser(
        IPV6,
        _compile(rb"""
        (?<![\w:.]) (?:[0-9A-Fa-f]{1,4}:|:){1,7}
        (?:(?:\d{1,3}\.){3}\d{1,3} | [0-9A-Fa-f]{1,4} | :)
        (?:%[0-9A-Za-z]{1,16})? (?![\w:])
    """),
        _ipv6,
        COLON,
    ),
    Recogniser(
        US_SSN,
        _compile(rb"""
        (?<![\w.-]) (?!000|666|9\d\d)\d{3} (?P<ssn_sep>[ -]) (?!00)\d{2} (?P=ssn_sep)
        (?!0000)\d{4} (?![\w-]|\.\d)
    """),
        _whole,
        DIGITS,
    ),
    Recogniser(
        ES_DNI,
        _compile(rb"""
        (?<![\w-]) (?:[XYZ][ -]?\d{7}|\d{8}) [ -]? [A-Za-z] (?![\w-])
    """),
        _es_dni,
        DIGITS,
    ),
    Recogniser(
        BR_CPF,
        _compile(rb"""
        (?<![\w./-]) \d{3}\.\d{3}\.\d{3}-\d{2} (?![\w-]|\.\d)
    """),
        _br_cpf,
        DIGITS,
    ),
    Recogniser(
        IN_AADHAAR,
        _compile(rb"""
        (?<![\w.-]) [2-9]\d{3} (?:(?P<uid_sep>[ -])\d{4}(?P=uid_sep)\d{4} | \d{8}) (?![\w-]|\.\d)
    """),
        _in_aadhaar,
        DIGITS,
    ),
    Recogniser(
        FR_NIR,
        _compile(rb"""
        (?<![\w.-]) [12][ ]?\d{2}[ ]?\d{2}[ ]?(?:\d{2}|2[AB])[ ]?\d{3}[ ]?\d{3}[ ]?\d{2}
        (?![\w-]|\.\d)
    """),
        _fr_nir,
        DIGITS,
    ),
    Recogniser(
        AWS_ACCESS_KEY,
        _compile(rb"""
        (?<![A-Za-z0-9]) (?:AKIA|ASIA)[A-Z0-9]{16} (?![A-Za-z0-9])
    """),
        _whole,
        "AKIA",
    ),
    Recogniser(
        AWS_SECRET_KEY,
        _compile(rb"""
        (?:aws_secret_access_key|AWS_SECRET_ACCESS_KEY) ["']? \s* [:=] \s* ["']?
        (?P<token>[A-Za-z0-9/+]{40}) (?![A-Za-z0-9/+])
    """),
        _token_group,
        "secret_access_key",
    ),
    Recogniser(
        PRIVATE_KEY,
        _compile(rb"""
        -----BEGIN[ ](?P<label>(?:[A-Z0-9]+[ ])*PRIVATE[ ]KEY(?:[ ]BLOCK)?)-----
        [\s\S]*? (?:-----END[ ](?P=label)-----|(?=\x00)|\Z)
    """),
        _whole,
        "-----BEGIN",
    ),
    Recogniser(
        JWT,
        _compile(rb"""
        (?<![\w-]) eyJ[A-Za-z0-9_-]{8,} \. eyJ[A-Za-z0-9_-]{4,} \. [A-Za-z0-9_-]* (?![\w-])
    """),
        _jwt,
        "eyJ",
    ),
    Recogniser(
        BEARER_TOKEN,
        _compile(rb"""
        (?<![A-Za-z]) (?:Bearer|bearer) \s+ (?P<token>[A-Za-z0-9\-._~+/]{20,}=*)
        (?![A-Za-z0-9\-._~+/=])
    """),
        _token_group,
        "earer",
    ),
)

_LITERAL_TRIGGERS = {
    b"secret_access_key": "secret_access_key",
    b"SECRET_ACCESS_KEY": "secret_access_key",
    b"-----BEGIN": "-----BEGIN",
    b"earer": "earer",
}
# In JSON, escaped printable ASCII could spell any trigger: such a line is always decoded.
_ESCAPED_ASCII = re.compile(rb"\\u00[2-7][0-9A-Fa-f]")

# One translation serves every class-based trigger: digits -> '0', upper case -> 'A',
# lower case -> 'a', '+' -> 'p', phone and card separators -> '_', '.' kept, rest -> 'x'.
_CLASS_TABLE = bytes(
    48
    if 48 <= b <= 57
    else 65
    if 65 <= b <= 90
    else 97
    if 97 <= b <= 122
    else 112
    if b == 43
    else 95
    if b in b" -()"
    else 46
    if b == 46
    else 120
    for b in range(256)
)
# Each digit recogniser needs one of: 9+ digits with at most two separators between
# neighbours, 7 adjacent digits (DNI/NIE), '+' and 7 digits (international phone), or a
# dotted quad (IPv4). Dates (8 digits in groups) open nothing. Each regex starts with one
# literal byte, which the regex engine skips to with a plain byte search, and is tried only
# at the first digit of a group ("(?<!00)").
_DIGIT_RUNS = (
    re.compile(rb"0(?<!00)(?:(?:[_.p]{0,2}0){8}|0{6}|0{0,2}\.0{1,3}\.0{1,3}\.0)"),
    re.compile(rb"p[_.]{0,2}0(?:[_.]{0,2}0){6}"),
)
# AKIA/ASIA keys are 20 upper-case letters and digits starting with four letters; a JWT's
# payload segment starts ".eyJ" (base64 of '{"'), which reads ".aaA" in classes.
_CLASS_LITERALS = ((re.compile(rb"AAAA[A0]{16}"), "AKIA"), (re.compile(rb"\.aaA"), "eyJ"))
_HEX_COLON = re.compile(rb":(?::|[0-9A-Fa-f]{1,4}:)")

# How far before and after its trigger a match can reach. DIGITS: an IBAN starts at most
# ~10 bytes before its first long digit run ("GB82 WEST 1234...") and ends ~14 after it;
# AT: an email's local part is at most 64 bytes; COLON: an IPv6 address is at most 45.
_MARGIN = {DIGITS: (16, 32), AT: (72, 8), COLON: (48, 48)}


# What every member of a family needs where it starts (no word byte before, one of a few
# first bytes): tested once per position, it lets the alternation skip most positions of a
# window, inside numbers included.
_FIRST_BYTES = {DIGITS: rb"(?<!\w)(?=[0-9A-Z+(])", COLON: rb"(?<![\w:.])(?=[0-9A-Fa-f:])"}


def _combined(family: str) -> tuple[re.Pattern[bytes], dict[str, Recogniser]]:
    """One alternation of the family's recognisers, in priority order, each a named group."""
    members = sorted((r for r in RECOGNISERS if r.trigger == family), key=lambda r: _RANK[r.kind])
    source = b"|".join(b"(?P<%s>%s)" % (r.kind.encode(), r.pattern.pattern) for r in members)
    return re.compile(b"%s(?:%s)" % (_FIRST_BYTES[family], source), re.VERBOSE), {
        r.kind: r for r in members
    }


_COMBINED = {family: _combined(family) for family in _FIRST_BYTES}
_EMAIL = next(r for r in RECOGNISERS if r.kind == EMAIL)
# The local part that ends where the search window ends (at the '@'), at most 64 bytes.
_LOCAL_PART = re.compile(rb"(?<![A-Za-z0-9._%+\x80-\xff-])[A-Za-z0-9._%+\x80-\xff-]{1,64}\Z")
_WHOLE_TEXT = {r.trigger: r for r in RECOGNISERS if r.trigger not in _MARGIN}


def recogniser_set_version() -> str:
    """Name, revision and a digest of every pattern: the lineage of a redaction names it."""
    digest = hashlib.sha256()
    for recogniser in RECOGNISERS:
        digest.update(recogniser.kind.encode() + b"\0" + recogniser.pattern.pattern + b"\0")
    return f"{RECOGNISER_SET_NAME}/{RECOGNISER_SET_REVISION}+{digest.hexdigest()[:12]}"


RECOGNISER_SET_VERSION = recogniser_set_version()


# --- triggers ------------------------------------------------------------------------------


def _trigger_spans(data: bytes) -> Iterable[tuple[str, int, int]]:
    """(family, start, end) of every place a recogniser could match."""
    classes = data.translate(_CLASS_TABLE)
    for pattern in _DIGIT_RUNS:
        for match in pattern.finditer(classes):
            yield DIGITS, match.start(), match.end()
    for pattern, family in _CLASS_LITERALS:
        for match in pattern.finditer(classes):
            yield family, match.start(), match.end()
    start = data.find(b"@")
    while start != -1:
        yield AT, start, start + 1
        start = data.find(b"@", start + 1)
    for match in _HEX_COLON.finditer(data):
        yield COLON, match.start(), match.end()
    for needle, family in _LITERAL_TRIGGERS.items():
        start = data.find(needle)
        while start != -1:
            yield family, start, start + len(needle)
            start = data.find(needle, start + 1)


_TOKEN_TAIL = re.compile(rb"[^\s\"]{0,256}")


def _windows(
    spans: list[tuple[int, int]], margin: tuple[int, int], low: int, high: int, data: bytes
) -> list[tuple[int, int]]:
    """Trigger spans widened by ``margin`` inside [low, high), merged; each end pushed past
    the token it cuts, because a regex's lookahead stops at ``endpos``. (Lookbehind sees
    before ``pos``, so the start needs no such care.)"""
    before, after = margin
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        start, end = max(low, start - before), min(high, end + after)
        tail = _TOKEN_TAIL.match(data, end, high)
        end = tail.end() if tail else end
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _scan_window(data: bytes, family: str, start: int, end: int) -> list[PiiFinding]:
    if family == AT:
        return _scan_emails(data, start, end)
    combined, members = _COMBINED[family]
    found: list[PiiFinding] = []
    position = start
    while match := combined.search(data, position, end):
        kind = match.lastgroup
        assert kind is not None
        span = members[kind].validate(data, match)
        if span is not None:
            found.append(PiiFinding(kind, *span))
        else:  # a lower-priority recogniser may still match from here
            for other in members.values():
                if other.kind == kind:
                    continue
                alternative = other.pattern.match(data, match.start(), end)
                if alternative and (span := other.validate(data, alternative)):
                    found.append(PiiFinding(other.kind, *span))
                    break
        position = match.start() + 1
    return found


def _scan_emails(data: bytes, start: int, end: int) -> list[PiiFinding]:
    found: list[PiiFinding] = []
    at = data.find(b"@", start, end)
    while at != -1:
        local = _LOCAL_PART.search(data, max(start, at - 64), at)
        if local is not None:
            match = _EMAIL.pattern.match(data, local.start(), end)
            if match is not None:
                found.append(PiiFinding(EMAIL, *match.span()))
        at = data.find(b"@", at + 1, end)
    return found


def scan_bytes(data: bytes) -> list[PiiFinding]:
    """Validated, non-overlapping findings in UTF-8 ``data``, in text order."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for family, start, end in _trigger_spans(data):
        spans.setdefault(family, []).append((start, end))
    if not spans:
        return []
    candidates: list[PiiFinding] = []
    for family, family_spans in spans.items():
        if family in _MARGIN:
            for start, end in _windows(family_spans, _MARGIN[family], 0, len(data), data):
                candidates.extend(_scan_window(data, family, start, end))
        else:
            recogniser = _WHOLE_TEXT[family]
            for match in recogniser.pattern.finditer(data):
                span = recogniser.validate(data, match)
                if span is not None:
                    candidates.append(PiiFinding(recogniser.kind, *span))
    return _resolve_overlaps(candidates)


@dataclass
class ChunkPii:
    """PII of a raw JSONL chunk, per line index: ``findings`` from scanning the raw bytes
    (spans are chunk offsets) and ``decode`` for lines that must be scanned content by
    content instead (a secret's literal, a backslash escape near a trigger)."""

    findings: dict[int, list[PiiFinding]]
    decode: set[int]


_NO_SPANS = np.zeros((0, 2), dtype=np.int64)


def _span_array(pattern: re.Pattern[bytes], data: bytes) -> np.ndarray:
    spans = [match.span() for match in pattern.finditer(data)]
    return np.array(spans, dtype=np.int64) if spans else _NO_SPANS


def scan_jsonl_chunk(chunk: bytes, line_starts: Sequence[int]) -> ChunkPii:
    """``line_starts[i]`` is where line i begins; one more entry marks the end.

    Outside escapes, a JSON string's bytes are the content's UTF-8 bytes, and the JSON
    around a string ('"', ':', ',') is a boundary to every pattern, just as the start and
    end of the content are, so the windowed recognisers run on the raw chunk directly.
    Window arithmetic is vectorised: Python runs once per window, not per trigger."""
    starts = np.asarray(line_starts, dtype=np.int64)
    data = np.frombuffer(chunk, dtype=np.uint8)
    classes = chunk.translate(_CLASS_TABLE)

    def line_of(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(starts, positions, side="right") - 1

    decode: set[int] = set()
    for pattern, _family in _CLASS_LITERALS:
        decode.update(line_of(_span_array(pattern, classes)[:, 0]).tolist())
    for needle in _LITERAL_TRIGGERS:
        position = chunk.find(needle)
        while position != -1:
            decode.add(int(line_of(np.array([position]))[0]))
            position = chunk.find(needle, position + 1)
    decode.update(line_of(_span_array(_ESCAPED_ASCII, chunk)[:, 0]).tolist())

    at = np.flatnonzero(data == 64)
    triggers = {
        DIGITS: np.concatenate([_span_array(p, classes) for p in _DIGIT_RUNS]),
        AT: np.stack([at, at + 1], axis=1),
        COLON: _span_array(_HEX_COLON, chunk),
    }
    if not any(spans.size for spans in triggers.values()):
        return ChunkPii(findings={}, decode=decode)
    backslashes = np.flatnonzero(data == 92)
    found: dict[int, list[PiiFinding]] = {}
    for family, spans in triggers.items():
        if not spans.size:
            continue
        lines = line_of(spans[:, 0])
        before, after = _MARGIN[family]
        low, high = starts[lines], starts[lines + 1] - 1
        window_start = np.maximum(low, spans[:, 0] - before)
        window_end = np.minimum(high, spans[:, 1] + after)
        order = np.argsort(window_start, kind="stable")
        lines, window_start, window_end = lines[order], window_start[order], window_end[order]
        opens = np.r_[True, window_start[1:] > np.maximum.accumulate(window_end)[:-1]]
        first = np.flatnonzero(opens)
        lines, window_start = lines[first], window_start[first]
        window_end = np.maximum.reduceat(window_end, first)
        escaped = np.searchsorted(backslashes, window_end) > np.searchsorted(
            backslashes, window_start
        )
        decode.update(lines[escaped].tolist())
        for line, start, end, line_end in zip(
            lines[~escaped].tolist(),
            window_start[~escaped].tolist(),
            window_end[~escaped].tolist(),
            high[order][first][~escaped].tolist(),
            strict=True,
        ):
            if line not in decode:
                # push the end past the token it cuts: lookahead stops at endpos
                tail = _TOKEN_TAIL.match(chunk, end, line_end)
                if tail is not None and tail.end() > end:
                    if chunk.find(b"\\", end, tail.end()) != -1:
                        decode.add(line)
                        continue
                    end = tail.end()
                hits = _scan_window(chunk, family, start, end)
                if hits:
                    found.setdefault(line, []).extend(hits)
    return ChunkPii(
        findings={
            line: _resolve_overlaps(items) for line, items in found.items() if line not in decode
        },
        decode=decode,
    )


def _resolve_overlaps(candidates: list[PiiFinding]) -> list[PiiFinding]:
    unique = set(candidates)
    ranked = sorted(unique, key=lambda f: (_RANK[f.kind], f.start - f.end, f.start))
    kept: list[PiiFinding] = []
    for finding in ranked:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


_CONTENT_SEPARATOR = b"\n\x00\n"  # no pattern matches across it


def scan_contents(contents: Sequence[bytes]) -> list[list[PiiFinding]]:
    """Findings per content, scanned as one text (one pass of triggers, not one each)."""
    joined = _CONTENT_SEPARATOR.join(contents)
    starts = list(accumulate((len(c) + len(_CONTENT_SEPARATOR) for c in contents[:-1]), initial=0))
    per_content: list[list[PiiFinding]] = [[] for _ in contents]
    for finding in scan_bytes(joined):
        which = bisect_right(starts, finding.start) - 1
        base = starts[which]
        end = min(finding.end, base + len(contents[which]))
        per_content[which].append(PiiFinding(finding.kind, finding.start - base, end - base))
    return per_content


def scan_text(text: str) -> list[PiiFinding]:
    """Findings in ``text``; spans are byte offsets into ``text.encode()``."""
    return scan_bytes(text.encode("utf-8", "surrogatepass"))


def redact_bytes(data: bytes, findings: Sequence[PiiFinding]) -> bytes:
    """Each finding replaced by its typed placeholder, e.g. ``[EMAIL]``."""
    pieces: list[bytes] = []
    cursor = 0
    for finding in findings:
        pieces.append(data[cursor : finding.start])
        pieces.append(placeholder(finding.kind))
        cursor = finding.end
    pieces.append(data[cursor:])
    return b"".join(pieces)


def redact_text(text: str) -> tuple[str, list[PiiFinding]]:
    data = text.encode()
    findings = scan_bytes(data)
    if not findings:
        return text, findings
    return redact_bytes(data, findings).decode(), findings
