"""Builds labelled.jsonl: texts with gold PII spans (character offsets) and hard negatives.

Values with checksums are computed here independently of ingest.pii (check
digits by formula), and published test values (card test numbers, IBAN examples from the
ISO 13616 registry, the Woolworth SSN) are mixed in. Hard negatives look like PII but are
not: dates, times, prices, versions, order and tracking ids, ISBNs, UUIDs, git hashes,
invalid-checksum card/IBAN/national-id numbers, invalid SSN areas, MAC addresses, octets
over 255, "bearer of bad news", a certificate block. A few real formats the recognisers do
not cover (bare 10-digit and 7-digit
North American phone numbers) are labelled too, so recall
is measured, not assumed.

Run: python tests/data/pii/build_labelled.py  (deterministic; rewrites labelled.jsonl)
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("labelled.jsonl")
rng = random.Random(20261128)


def luhn_complete(body: str) -> str:
    digits = [int(c) for c in body]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return body + str((10 - total % 10) % 10)


def card(prefix: str, length: int, grouping: tuple[int, ...] | None, sep: str = " ") -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    digits = luhn_complete(body)
    if not grouping:
        return digits
    parts, i = [], 0
    for size in grouping:
        parts.append(digits[i : i + size])
        i += size
    return sep.join(parts)


def iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    compact = f"{country}{check:02d}{bban}"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def dni() -> str:
    number = rng.randrange(10_000_000, 99_999_999)
    return f"{number}{'TRWAGMYFPDXBNJZSQVHLCKE'[number % 23]}"


def nie() -> str:
    lead = rng.choice("XYZ")
    number = rng.randrange(1_000_000, 9_999_999)
    value = int(str("XYZ".index(lead)) + f"{number:07d}")
    return f"{lead}{number:07d}{'TRWAGMYFPDXBNJZSQVHLCKE'[value % 23]}"


def cpf() -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        if len(set(digits)) > 1:
            break
    for size in (9, 10):
        total = sum(d * (size + 1 - i) for i, d in enumerate(digits[:size]))
        digits.append((total * 10) % 11 % 10)
    s = "".join(map(str, digits))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"


_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]
_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def aadhaar(valid: bool = True) -> str:
    body = str(rng.randrange(2, 10)) + "".join(str(rng.randrange(10)) for _ in range(10))
    c = 0
    for i, ch in enumerate(reversed(body)):
        c = _D[c][_P[(i + 1) % 8][int(ch)]]
    check = _INV[c] if valid else (_INV[c] + 1) % 10
    s = body + str(check)
    return f"{s[:4]} {s[4:8]} {s[8:]}"


def nir(valid: bool = True) -> str:
    body = (
        f"{rng.choice('12')}{rng.randrange(50, 99)}{rng.randrange(1, 13):02d}"
        f"{rng.randrange(1, 96):02d}{rng.randrange(1, 999):03d}{rng.randrange(1, 999):03d}"
    )
    key = 97 - int(body) % 97
    key = key if valid else (key % 97) + 1
    return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key:02d}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt() -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": str(rng.randrange(10**9)), "iat": 1700000000}).encode())
    signature = b64url(bytes(rng.randrange(256) for _ in range(32)))
    return f"{header}.{payload}.{signature}"


def token(length: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    while True:
        t = "".join(rng.choice(alphabet) for _ in range(length))
        if any(c.isdigit() for c in t) and any(c.isalpha() for c in t):
            return t


NAMES = [
    "john.smith",
    "maria_garcia",
    "wei.chen",
    "fatima.k",
    "l.mueller",
    "ana+news",
    "o.hassan",
    "zoë.müller",
]
DOMAINS = ["example.com", "mail.example.org", "acme.co.uk", "corp.example.net", "uni.example.edu"]


def email() -> str:
    return f"{rng.choice(NAMES)}{rng.randrange(100)}@{rng.choice(DOMAINS)}"


def phone() -> str:
    a, b, c = rng.randrange(201, 989), rng.randrange(201, 989), rng.randrange(1000, 9999)
    return rng.choice(
        [
            f"+1 ({a}) {b}-{c}",
            f"({a}) {b}-{c}",
            f"{a}-{b}-{c}",
            f"{a}.{b}.{c}",
            f"+44 20 {rng.randrange(7000, 7999)} {rng.randrange(1000, 9999)}",
            f"+33 1 {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}",  # noqa: E501
            f"0{rng.randrange(1, 9)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}",  # noqa: E501
            f"+49 30 {rng.randrange(1000000, 99999999)}",
            f"020 {rng.randrange(7000, 7999)} {rng.randrange(1000, 9999)}",
            f"+33 (0)1 {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}",  # noqa: E501
            f"+41 44 {rng.randrange(200, 999)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}",
        ]
    )


def ipv4() -> str:
    return rng.choice(
        [
            f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",  # noqa: E501
        ]
    )


def ipv6() -> str:
    groups = [f"{rng.randrange(65536):x}" for _ in range(8)]
    return rng.choice(
        [
            ":".join(groups),
            f"2001:db8::{groups[0]}:{groups[1]}",
            f"fe80::{groups[2]}:{groups[3]}:{groups[4]}",
            f"2001:0db8:85a3:0000:0000:8a2e:0370:{rng.randrange(4096, 65535):04x}",
        ]
    )


def ssn() -> str:
    return f"{rng.randrange(1, 665):03d}-{rng.randrange(1, 99):02d}-{rng.randrange(1, 9999):04d}"


def private_key() -> str:
    body = "\n".join(token(64) for _ in range(3))
    label = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


def aws_key() -> str:
    return rng.choice(["AKIA", "ASIA"]) + "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)
    )


POSITIVES = {
    "email": (email, ["Contact me at {v} if anything changes.", "Email: {v}", "cc {v}, thanks"]),
    "phone": (phone, ["Call me on {v} after five.", "Phone: {v}", "my number is {v}."]),
    "payment_card": (
        lambda: rng.choice(
            [
                card("4", 16, (4, 4, 4, 4)),
                card("4", 16, None),
                card("5" + str(rng.randint(1, 5)), 16, (4, 4, 4, 4), "-"),
                card("37", 15, (4, 6, 5)),
                card("6011", 16, (4, 4, 4, 4)),
                "4111 1111 1111 1111",
                "5555 5555 5555 4444",
                "3782 822463 10005",
                card("2221", 16, (4, 4, 4, 4)),
            ]
        ),
        ["Charge card {v} please.", "card number: {v}", "I paid with {v} yesterday."],
    ),
    "iban": (
        lambda: rng.choice(
            [
                iban("DE", f"{rng.randrange(10**17, 10**18)}"),
                iban("GB", "WEST" + f"{rng.randrange(10**13, 10**14)}"),
                iban("NL", "ABNA" + f"{rng.randrange(10**9, 10**10)}"),
                iban("FR", f"{rng.randrange(10**22, 10**23)}"),
                "DE89 3704 0044 0532 0130 00",
                "GB82 WEST 1234 5698 7654 32",
            ]
        ),
        ["Transfer to IBAN {v} today.", "Account: {v}", "wire it to {v} please"],
    ),
    "ipv4": (ipv4, ["The server at {v} is down.", "ssh admin@host via {v}", "blocked ip {v}"]),
    "ipv6": (ipv6, ["Reach the node on {v} now.", "address {v} timed out", "ipv6: {v}"]),
    "us_ssn": (
        lambda: rng.choice([ssn(), "078-05-1120"]),
        ["SSN {v} on file.", "social security number: {v}"],
    ),
    "es_dni": (lambda: rng.choice([dni(), nie()]), ["DNI {v} del cliente.", "NIE: {v}"]),
    "br_cpf": (cpf, ["CPF {v} cadastrado.", "meu CPF é {v}"]),
    "in_aadhaar": (aadhaar, ["Aadhaar {v} linked.", "UID: {v}"]),
    "fr_nir": (nir, ["Numéro de sécurité sociale {v}.", "NIR {v}"]),
    "aws_access_key": (aws_key, ["export AWS_ACCESS_KEY_ID={v}", "key id {v} leaked"]),
    "aws_secret_key": (
        lambda: token(40),
        ["aws_secret_access_key = {v}", "AWS_SECRET_ACCESS_KEY={v}"],
    ),
    "private_key": (private_key, ["Here is the key:\n{v}\nkeep it safe", "{v}"]),
    "jwt": (jwt, ["Authorization: Bearer {v}", "token={v}&next=1", "the session jwt is {v}"]),
    "bearer_token": (
        lambda: token(rng.randrange(24, 48)),
        ["Authorization: Bearer {v}", "use bearer {v} for the API"],
    ),
}

NEGATIVES = [
    lambda: (
        f"Released on {rng.randrange(2019, 2027)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}."  # noqa: E501
    ),
    lambda: (
        f"Meeting at {rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d} tomorrow."  # noqa: E501
    ),
    lambda: (
        f"Upgrade to version {rng.randrange(1, 9)}.{rng.randrange(20)}.{rng.randrange(20)}.{rng.randrange(99)}."  # noqa: E501
    ),
    lambda: f"Order ORD-{rng.randrange(2019, 2027)}-{rng.randrange(100000, 999999)} shipped.",
    lambda: f"Tracking number 1Z{rng.randrange(10**15, 10**16)} is in transit.",
    lambda: f"The total was ${rng.randrange(1000, 99999):,}.{rng.randrange(100):02d}.",
    lambda: (
        f"ISBN 978-{rng.randrange(10)}-{rng.randrange(100, 999)}-{rng.randrange(10000, 99999)}-{rng.randrange(10)}"  # noqa: E501
    ),
    lambda: (
        f"request id {rng.randrange(16**8):08x}-{rng.randrange(16**4):04x}-4{rng.randrange(16**3):03x}-a{rng.randrange(16**3):03x}-{rng.randrange(16**12):012x}"  # noqa: E501
    ),
    lambda: f"commit {rng.randrange(16**40):040x} fixed it",
    lambda: (
        f"Card 4111 1111 1111 {rng.choice(['1112', '1113', '1114', '1115'])} was declined (bad number)."  # noqa: E501
    ),
    lambda: f"Invoice {rng.randrange(10**15, 10**16)} is overdue.",
    lambda: "IBAN DE00 3704 0044 0532 0130 00 has a bad check digit.",
    lambda: (
        f"Invalid SSN {rng.choice(['000', '666', '912'])}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)} rejected."  # noqa: E501
    ),
    lambda: f"MAC 00:1A:{rng.randrange(16, 255):02X}:3C:4D:{rng.randrange(16, 255):02X} on port 3.",
    lambda: (
        f"Not an address: {rng.randrange(256, 999)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}."  # noqa: E501
    ),
    lambda: "He was the bearer of bad news again.",
    lambda: "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    lambda: "Write to me at user@localhost or ping @maria on chat.",
    lambda: f"Aadhaar-like {aadhaar(valid=False)} fails Verhoeff.",
    lambda: f"NIR-like {nir(valid=False)} has the wrong key.",
    lambda: (
        f"Room {rng.randrange(100, 999)}, floor {rng.randrange(1, 30)}, call ext. {rng.randrange(1000, 9999)}."  # noqa: E501
    ),
    lambda: f"Coordinates 48.{rng.randrange(10**6)}, 2.{rng.randrange(10**6)} near the river.",
    lambda: "Use std::vector and a::b in C++.",
    lambda: f"Lot {rng.randrange(10**6, 10**7)}-{rng.randrange(100, 999)} passed QA.",
    lambda: "The AKIA prefix marks AWS key ids; eyJ starts many tokens.",
    lambda: "Order flowers at 1-800-FLOWERS before noon.",
    lambda: (
        f"We shipped {rng.randrange(1, 9)} {rng.randrange(100, 999)} {rng.randrange(100, 999)} {rng.randrange(100, 999)} units."  # noqa: E501
    ),
    lambda: (
        f"Logged at {rng.randrange(2019, 2027)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d} UTC."  # noqa: E501
    ),
]
UNCOVERED = [  # real PII in formats the recognisers do not cover: counted against recall
    (
        "phone",
        lambda: f"{rng.randrange(201, 989)}{rng.randrange(201, 989)}{rng.randrange(1000, 9999)}",
        "call {v} now",
    ),
    ("phone", lambda: f"555-{rng.randrange(100, 199):04d}", "ring {v} today"),
]


def compose(parts: list[tuple[str, str | None, str | None]]) -> dict:
    """parts: (template or text, kind or None, value or None)."""
    text, spans = "", []
    for template, kind, value in parts:
        if text:
            text += " "
        if kind is None:
            text += template
            continue
        head, tail = template.split("{v}")
        start = len(text) + len(head)
        text += head + value + tail
        spans.append({"start": start, "end": start + len(value), "type": kind})
    return {"text": text, "spans": spans}


def main() -> None:
    examples = []
    for kind, (make, templates) in POSITIVES.items():
        for _ in range(14):
            parts = [(rng.choice(templates), kind, make())]
            if rng.random() < 0.5:
                parts.insert(rng.randrange(2), (rng.choice(NEGATIVES)(), None, None))
            if rng.random() < 0.3:
                other = rng.choice(list(POSITIVES))
                other_make, other_templates = POSITIVES[other]
                parts.append((rng.choice(other_templates), other, other_make()))
            examples.append(compose(parts))
    for _ in range(150):
        parts = [(rng.choice(NEGATIVES)(), None, None) for _ in range(rng.randrange(1, 3))]
        examples.append(compose(parts))
    for kind, make, template in UNCOVERED:
        for _ in range(4):
            examples.append(compose([(template, kind, make())]))
    rng.shuffle(examples)
    OUT.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    print(f"{len(examples)} examples -> {OUT}")


if __name__ == "__main__":
    main()
