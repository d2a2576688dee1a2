"""Demo task: extract five fields from invoice text into one fixed JSON shape.

Synthetic but realistic: the invoices come in several layouts with distractors (customer vs
vendor, subtotal and VAT vs total, issue vs due date) and mixed date and amount spellings,
while the answer is always the same normalised JSON. A base model rarely produces that exact
shape unprompted; a small adapter learns it. Generation is deterministic per seed.

    python -m trainer demo-task write OUT_DIR        # train.jsonl (500), validation.jsonl (50)
    python -m trainer demo-task run BASE_DIR OUT_DIR # fine-tune, print the three scores
"""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from trainer.spec import EvalSpec, Hyperparameters, TrainSpec

SYSTEM_PROMPT = (
    "Extract the invoice fields and answer with JSON only, keys in this order: vendor, "
    "invoice_number, date (issue date, YYYY-MM-DD), currency (ISO code), total (amount due, "
    "two decimals)."
)
FIELDS = ("vendor", "invoice_number", "date", "currency", "total")

_VENDOR_STEMS = (
    "Nordwind",
    "Bluefield",
    "Kestrel",
    "Aurora",
    "Ironbridge",
    "Silverline",
    "Harbor",
    "Meridian",
    "Oakridge",
    "Pinecrest",
    "Redstone",
    "Summit",
    "Tidewater",
    "Vantage",
    "Westbrook",
    "Alder",
    "Brightwater",
    "Cobalt",
    "Elmstead",
    "Foxglove",
    "Granite",
    "Highmoor",
    "Juniper",
    "Lakeside",
    "Marlow",
    "Northgate",
    "Orchard",
    "Quarry",
)
_VENDOR_TRADES = (
    "Logistics",
    "Office Supplies",
    "Consulting",
    "Print Works",
    "Software",
    "Catering",
    "Electrical",
    "Cleaning Services",
    "Translations",
    "Freight",
    "Design Studio",
    "Hardware",
)
_VENDOR_FORMS = ("GmbH", "Ltd", "LLC", "AG", "S.A.", "B.V.", "Inc.", "SARL")
_CUSTOMERS = (
    "Acme Retail Group",
    "Helios Medical",
    "Calder Foods",
    "Mosaic Media",
    "Pioneer Labs",
    "Quantum Textiles",
    "Riverside Clinic",
    "Stellar Freight",
    "Union Bakery",
    "Zenith Motors",
)
_ITEMS = (
    "Consulting hours",
    "Delivery charge",
    "Paper A4, 10 boxes",
    "Software licence",
    "Maintenance visit",
    "Catering for 20",
    "Translation, 12 pages",
    "Cable set",
    "Design revisions",
    "Storage fee",
    "Toner cartridges",
    "Travel expenses",
)
_CURRENCIES = {
    "EUR": ("EUR", "€"),
    "USD": ("USD", "$"),
    "GBP": ("GBP", "£"),
    "CHF": ("CHF", "CHF "),
}
_VAT_RATES = (Decimal("0.19"), Decimal("0.20"), Decimal("0.077"), Decimal("0.21"), Decimal("0"))
_CENT = Decimal("0.01")


def _vendor(rng: random.Random) -> str:
    return f"{rng.choice(_VENDOR_STEMS)} {rng.choice(_VENDOR_TRADES)} {rng.choice(_VENDOR_FORMS)}"


def _invoice_number(rng: random.Random, year: int) -> str:
    style = rng.randrange(4)
    if style == 0:
        return f"INV-{year}-{rng.randrange(1, 9999):04d}"
    if style == 1:
        return f"{rng.randrange(100000, 999999)}"
    if style == 2:
        return (
            f"{rng.choice('ABCDEFGHKLMNPRSTUVW')}{rng.randrange(10, 99)}/{rng.randrange(100, 9999)}"
        )
    return f"R{year % 100:02d}-{rng.randrange(1000, 99999)}"


def _date_text(date: dt.date, rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return date.isoformat()
    if style == 1:
        return f"{date.day} {date.strftime('%B')} {date.year}"
    if style == 2:
        return f"{date.strftime('%B')} {date.day}, {date.year}"
    return f"{date.day:02d}.{date.month:02d}.{date.year}"


def _amount_formatter(currency: str, rng: random.Random):
    """One spelling of amounts per invoice, as a real document would keep."""
    code, symbol = _CURRENCIES[currency]
    european_decimals = currency == "EUR" and rng.random() < 0.5
    placement = rng.randrange(3)

    def spell(amount: Decimal) -> str:
        plain = f"{amount:,.2f}"
        if european_decimals:
            plain = plain.replace(",", "_").replace(".", ",").replace("_", ".")
        if placement == 0:
            return f"{symbol}{plain}"
        return f"{plain} {code}" if placement == 1 else f"{code} {plain}"

    return spell


def _invoice(rng: random.Random) -> tuple[str, dict[str, str]]:
    vendor = _vendor(rng)
    customer = rng.choice(_CUSTOMERS)
    issued = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randrange(730))
    due = issued + dt.timedelta(days=rng.choice((14, 30, 45, 60)))
    number = _invoice_number(rng, issued.year)
    currency = rng.choice(tuple(_CURRENCIES))
    lines = [
        (item, Decimal(rng.randrange(2000, 250000)) / 100)
        for item in rng.sample(_ITEMS, rng.randint(1, 3))
    ]
    subtotal = sum((price for _, price in lines), Decimal(0))
    vat_rate = rng.choice(_VAT_RATES)
    vat = (subtotal * vat_rate).quantize(_CENT, rounding=ROUND_HALF_UP)
    total = subtotal + vat

    money = _amount_formatter(currency, rng)
    item_lines = "\n".join(f"- {item}: {money(price)}" for item, price in lines)
    layout = rng.randrange(4)
    if layout == 0:
        text = (
            f"INVOICE\nFrom: {vendor}\nBill to: {customer}\nInvoice no.: {number}\n"
            f"Invoice date: {_date_text(issued, rng)}\nDue date: {_date_text(due, rng)}\n"
            f"{item_lines}\nSubtotal: {money(subtotal)}\nVAT: {money(vat)}\n"
            f"Total due: {money(total)}"
        )
    elif layout == 1:
        text = (
            f"{vendor} invoices {customer} under reference {number}, issued on "
            f"{_date_text(issued, rng)}. Net amount {money(subtotal)} plus VAT of {money(vat)}; "
            f"the total of {money(total)} is payable by {_date_text(due, rng)}."
        )
    elif layout == 2:
        text = (
            f"Customer: {customer}\nSupplier: {vendor}\nDocument #{number}\n"
            f"Payable until {_date_text(due, rng)} (issued {_date_text(issued, rng)})\n"
            f"{item_lines}\nAmount due {money(total)} incl. VAT {money(vat)}"
        )
    else:
        text = (
            f"Dear {customer},\nplease find our invoice {number} dated {_date_text(issued, rng)}.\n"
            f"{item_lines}\nTotal (incl. tax): {money(total)}, due {_date_text(due, rng)}.\n"
            f"Kind regards,\n{vendor}"
        )
    answer = {
        "vendor": vendor,
        "invoice_number": number,
        "date": issued.isoformat(),
        "currency": currency,
        "total": f"{total:.2f}",
    }
    return text, answer


def answer_json(answer: dict[str, str]) -> str:
    return json.dumps({key: answer[key] for key in FIELDS}, ensure_ascii=False)


def generate_examples(*, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` chat examples in OpenAI format, each with a distinct invoice number."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    examples: list[dict[str, Any]] = []
    seen_numbers: set[str] = set()
    while len(examples) < count:
        text, answer = _invoice(rng)
        if answer["invoice_number"] in seen_numbers:
            continue
        seen_numbers.add(answer["invoice_number"])
        examples.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": answer_json(answer)},
                ]
            }
        )
    return examples


def write_demo_files(
    out_dir: str | Path, *, n_train: int = 500, n_validation: int = 50, seed: int = 2024
) -> tuple[Path, Path]:
    """Training and held-out JSONL files that share no invoice number."""
    examples = generate_examples(count=n_train + n_validation, seed=seed)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    train_path, validation_path = directory / "train.jsonl", directory / "validation.jsonl"
    for path, part in ((train_path, examples[:n_train]), (validation_path, examples[n_train:])):
        path.write_text("".join(json.dumps(example, ensure_ascii=False) + "\n" for example in part))
    return train_path, validation_path


def demo_spec(base_model_dir: str | Path, out_dir: str | Path, *, n_epochs: int = 1) -> TrainSpec:
    """The demo run: SmolLM2-135M-Instruct learns the invoice task in one CPU-sized epoch."""
    directory = Path(out_dir)
    train_path, validation_path = write_demo_files(directory / "data")
    return TrainSpec(
        base_model_dir=str(base_model_dir),
        training_file=str(train_path),
        validation_file=str(validation_path),
        output_dir=str(directory / "run"),
        hyperparameters=Hyperparameters(
            n_epochs=n_epochs, batch_size=8, learning_rate_multiplier=5
        ),
        evaluation=EvalSpec(max_new_tokens=96, generation_batch_size=16, few_shot_examples=3),
        seed=2024,
    )
