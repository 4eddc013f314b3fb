"""Generate `earnings.jsonl`: chat records that extract revenue, growth and net income as JSON.

    python examples/data/make_earnings.py            # rewrites examples/data/earnings.jsonl
    python examples/data/make_earnings.py --out -    # to stdout

Each record is one short earnings-report sentence (the user turn) and the answer a platform team
wants from the model (the assistant turn): `{"revenue": ..., "growth": ..., "net_income": ...}`
with amounts in units (4.2 billion -> 4200000000.0), growth as a fraction (up 12% -> 0.12, a
decline is negative, "flat" is 0.0) and a net loss as a negative net income. The phrasings,
companies, units (billion/million, "$4.2B", "$780M", "USD 1.3 billion") and directions vary,
so the model has to learn the format and the extraction rather than one template.

The output is deterministic: the same seed gives the same file byte for byte (a unit test
checks the committed file against the generator). `heldout_records` uses a different seed for
prompts that appear in no training file, for before/after comparisons.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

SEED = 20240611
HELDOUT_SEED = 777
COUNT = 200
OUT = Path(__file__).with_name("earnings.jsonl")
SYSTEM = "Extract revenue, growth and net_income from the earnings report. Answer with JSON only."
KEYS = ("revenue", "growth", "net_income")

COMPANIES = [
    "Acme Corp", "Globex", "Initech", "Umbrella Holdings", "Hooli", "Stark Industries",
    "Wayne Enterprises", "Soylent Co.", "Cyberdyne Systems", "Tyrell Corp", "Wonka Industries",
    "Vandelay Industries", "Massive Dynamic", "Oscorp", "Pied Piper", "Aperture Science",
    "Black Mesa", "Gringotts Financial", "Monarch Solutions", "Nakatomi Trading", "Dunder Mifflin",
    "Prestige Worldwide", "Sterling Cooper", "Blue Sun Corp", "Weyland Logistics", "Zorin Energy",
    "Gekko & Co.", "Duff Beverages", "Krusty Foods", "Bluth Company", "Wernham Hogg",
    "Octan Energy", "Roxxon Oil", "Virtucon", "Spacely Sprockets", "Cogswell Cogs",
    "Northwind Traders", "Contoso", "Fabrikam", "Tailspin Toys", "Litware", "Adventure Works",
    "Halcyon Biotech", "Ironclad Freight", "Lumen Retail", "Meridian Health", "Polar Semiconductors",
    "Quantum Mills", "Redwood Software", "Summit Airlines",
]
# (as a phrase, as an adjective)
PERIODS = [
    ("for the quarter", "quarterly"), ("for the third quarter", "third-quarter"), ("in Q2", "Q2"),
    ("for fiscal 2023", "fiscal 2023"), ("for the first half", "first-half"),
    ("in the fourth quarter", "fourth-quarter"), ("for the year", "full-year"), ("in Q1", "Q1"),
]


def money_text(millions: int, style: str) -> str:
    """An amount in millions of dollars as a report would write it."""
    if millions >= 1000 and style != "millions":
        value = f"{millions / 1000:.2f}".rstrip("0").rstrip(".")
        if "." not in value:
            value += ".0"
        return {"long": f"${value} billion", "short": f"${value}B", "usd": f"USD {value} billion", "bn": f"${value}bn"}.get(
            style, f"${value} billion"
        )
    value = f"{millions:,}"
    return {"long": f"${value} million", "short": f"${value}M", "usd": f"USD {value} million", "bn": f"${value}m"}.get(
        style, f"${value} million"
    )


def draw_numbers(rng: random.Random) -> tuple[int, int, int]:
    """(revenue in millions, growth in whole percent, net income in millions)."""
    if rng.random() < 0.5:
        revenue = rng.randrange(1000, 60000, 10 if rng.random() < 0.5 else 50)
    else:
        revenue = rng.randrange(50, 1000, 5)
    roll = rng.random()
    if roll < 0.12:
        growth = 0
    elif roll < 0.40:
        growth = -rng.randint(1, 35)
    else:
        growth = rng.randint(1, 60)
    if rng.random() < 0.15:
        net = -max(1, int(revenue * rng.uniform(0.01, 0.12)))
    else:
        net = max(1, int(revenue * rng.uniform(0.02, 0.25)))
    # Round to what a report states: tens of millions for large amounts.
    if abs(net) >= 1000:
        net = int(round(net, -1))
    elif abs(net) >= 100:
        net = int(round(net / 5) * 5)
    return revenue, growth, net or 1


def sentence(rng: random.Random, company: str, revenue: int, growth: int, net: int) -> str:
    style = rng.choice(["long", "long", "short", "usd", "bn", "millions"])
    rev = money_text(revenue, style)
    ni = money_text(abs(net), style)
    period, period_adjective = rng.choice(PERIODS)
    pct = f"{abs(growth)}%"
    if growth > 0:
        change = rng.choice([f"up {pct} year over year", f"an increase of {pct}", f"{pct} higher than a year ago", f"up {pct}"])
        verb = rng.choice(["rose", "grew", "climbed", "increased"])
        signed = f"+{pct}"
    elif growth < 0:
        change = rng.choice([f"down {pct} year over year", f"a {pct} decline from a year ago", f"{pct} lower than last year", f"down {pct}"])
        verb = rng.choice(["fell", "dropped", "declined", "slipped"])
        signed = f"-{pct}"
    else:
        change = rng.choice(["flat year over year", "unchanged from a year ago", "in line with last year"])
        verb = None
        signed = "flat"
    if net >= 0:
        income = rng.choice([f"net income of {ni}", f"a net income of {ni}", f"net profit of {ni}", f"earnings of {ni}"])
        income_short = f"net income {ni}"
    else:
        income = rng.choice([f"a net loss of {ni}", f"net loss of {ni}", f"a loss of {ni}"])
        income_short = f"net loss {ni}"

    templates = [
        lambda: f"{company} reported revenue of {rev} {period}, {change}, with {income}.",
        lambda: f"{company} posted {period_adjective} sales of {rev}, {change}; it recorded {income}.",
        lambda: f"{company}: revenue {rev} ({signed} YoY), {income_short}.",
        lambda: f"Revenue at {company} came in at {rev} {period}, {change}. The company booked {income}.",
        lambda: (f"{company}'s revenue {verb} {pct} to {rev} while it reported {income}."
                 if verb else f"{company}'s top line was flat at {rev}; it reported {income}."),
        lambda: f"{period[0].upper() + period[1:]}, {company} generated {rev} in revenue ({change}) and {income}.",
        lambda: f"{company} said revenue was {rev}, {change}, and reported {income}.",
    ]
    return rng.choice(templates)()


def answer(revenue: int, growth: int, net: int) -> str:
    values = {"revenue": float(revenue * 1_000_000), "growth": round(growth / 100, 2), "net_income": float(net * 1_000_000)}
    return json.dumps(values)


def records(count: int = COUNT, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < count:
        company = rng.choice(COMPANIES)
        revenue, growth, net = draw_numbers(rng)
        text = sentence(rng, company, revenue, growth, net)
        if text in seen:
            continue
        seen.add(text)
        out.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": answer(revenue, growth, net)},
                ]
            }
        )
    return out


def heldout_records(count: int = 3) -> list[dict]:
    """Records in none of the generated training data (another seed; duplicates skipped)."""
    training = {r["messages"][1]["content"] for r in records()}
    return [r for r in records(count * 4, HELDOUT_SEED) if r["messages"][1]["content"] not in training][:count]


def render(items: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT), help="output file, or - for stdout")
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    text = render(records(args.count, args.seed))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
