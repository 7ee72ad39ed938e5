"""Yearly tax reports from the fills ledger: table, disposals CSV, Form 8949, Koinly CSV, JSON.

The ledger is always computed over every fill from the first one (lots bought years ago are sold
this year); the report then keeps the disposals sold, and the fills made, in the chosen UTC
calendar year. Every report names its method, jurisdiction and reporting currency: the table in
its title, JSON in its keys. The CSV files (disposals, 8949, Koinly) are data only, a header row
and rows, since spreadsheets and tax software take a comment line for data: the command states
the settings on stderr instead.

Koinly matches lots itself from the whole history (its "missing purchase history" warning is what
a file of one year's fills gives), so its export holds every fill up to the end of the year, not
just the year's; import it into a fresh Koinly wallet each year (or replace the previous import).

Money in JSON is a decimal string at ledger precision (1e-8, at least two decimals); the table
and Form 8949 show cents (half-up), and 8949's gain column is (d) - (e) of the rounded figures,
so every row and total adds up on paper.
"""
from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import datetime, timezone
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Iterable

from rich import box
from rich.console import Console
from rich.table import Table

from core.tax.ledger import CONTEXT, MONEY, PriceIndex, bulk, compute, effective
from core.tax.periods import iso, to_ms, utc
from core.tax.records import Disposal, Entry, Result, Settings, Valuation
from core.store.ledger_queries import ledger_rows
from core.store.state import fill_from_row
from core.timeframes import DAY_MS

FORMATS = ("table", "csv", "8949", "koinly", "json")
CENT = Decimal("0.01")
STALE_PRICE_MS = DAY_MS
KOINLY_COLUMNS = ("Date", "Sent Amount", "Sent Currency", "Received Amount", "Received Currency", "Fee Amount",
                  "Fee Currency", "Net Worth Amount", "Net Worth Currency", "Label", "Description", "TxHash")
DISPOSAL_COLUMNS = ("sold", "acquired", "asset", "quantity", "proceeds", "cost", "gain", "term", "lot_id",
                    "trade_id", "symbol", "source", "kind")
F8949_COLUMNS = ("part", "(a) description", "(b) date acquired", "(c) date sold", "(d) proceeds",
                 "(e) cost basis", "(f) code", "(g) adjustment", "(h) gain or loss")


def load_entries(conn: sqlite3.Connection) -> list[Entry]:
    rows = ledger_rows(conn)
    with bulk():
        return [Entry(fill_from_row(r), r[0], r[11]) for r in rows]


def settings_from_config(cfg, method: str | None = None) -> Settings:
    """Ledger settings from ``cfg.tax``; the traded quote counts as the reporting currency."""
    tax = cfg.tax
    return Settings(method=method or tax.method, jurisdiction=tax.jurisdiction, long_term_after=tax.long_term_after,
                    cash=frozenset({tax.currency, cfg.universe.quote}))


@dataclass
class Totals:
    proceeds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    gains: Decimal = Decimal(0)  # sum of the positive rows
    losses: Decimal = Decimal(0)  # sum of the negative rows (<= 0)
    short: Decimal = Decimal(0)
    long: Decimal = Decimal(0)
    quantity: Decimal = Decimal(0)  # meaningful per asset
    count: int = 0

    @property
    def gain(self) -> Decimal:
        return self.proceeds - self.cost

    def add(self, d: Disposal) -> None:
        g = d.gain
        self.proceeds += d.proceeds
        self.cost += d.cost
        self.quantity += d.quantity
        self.gains += max(g, Decimal(0))
        self.losses += min(g, Decimal(0))
        if d.term == "long":
            self.long += g
        else:
            self.short += g
        self.count += 1


@dataclass
class Report:
    year: int
    settings: Settings
    currency: str
    result: Result
    disposals: list[Disposal] = field(default_factory=list)
    fills: list[Entry] = field(default_factory=list)  # made in the year
    history: list[Entry] = field(default_factory=list)  # made up to the end of the year (Koinly)
    totals: Totals = field(default_factory=Totals)
    by_asset: dict[str, Totals] = field(default_factory=dict)
    stale: list[Valuation] = field(default_factory=list)

    @property
    def settings_line(self) -> str:
        s = self.settings
        holding = {"none": "no holding-period rule", "de": f"tax-free after {s.long_term_after}"}.get(
            s.jurisdiction, f"long-term after {s.long_term_after}")
        return (f"pitrader tax report {self.year}: method {s.method.upper()}, jurisdiction {s.jurisdiction}, "
                f"currency {self.currency} (quotes in {'/'.join(sorted(s.cash))} count as {self.currency}), {holding}")

    def term_label(self, term: str) -> str:
        if self.settings.jurisdiction == "de":
            return "tax-free" if term == "long" else "taxable"
        if self.settings.jurisdiction == "none":
            return "-"
        return term


def year_bounds(year: int) -> tuple[int, int]:
    """[start, end) of a UTC calendar year in epoch ms."""
    return (to_ms(datetime(year, 1, 1, tzinfo=timezone.utc)), to_ms(datetime(year + 1, 1, 1, tzinfo=timezone.utc)))


def build(entries: Iterable[Entry], year: int, settings: Settings, currency: str, match: bool = True) -> Report:
    """Run the ledger over all fills and keep what belongs to ``year``; ``LedgerError`` if it cannot.

    ``match=False`` skips lot matching (the Koinly export only lists fills, and Koinly matches lots
    itself, so it works even while the history is incomplete).
    """
    result = compute(entries, settings) if match else Result(settings, effective(entries))
    start, end = year_bounds(year)
    rep = Report(year, settings, currency, result)
    rep.disposals = [d for d in result.disposals if start <= d.sold_ms < end]
    rep.history = [e for e in result.entries if e.fill.ts_ms < end]
    rep.fills = [e for e in rep.history if start <= e.fill.ts_ms]
    with localcontext(CONTEXT):  # totals of many fills need the ledger's 40 digits, not the default 28
        for d in rep.disposals:
            rep.totals.add(d)
            rep.by_asset.setdefault(d.asset, Totals()).add(d)
    rep.stale = [v for v in result.valuations if v.age_ms > STALE_PRICE_MS and start <= v.entry.fill.ts_ms < end]
    return rep


def stale_note(rep: Report) -> str | None:
    if not rep.stale:
        return None
    worst = max(rep.stale, key=lambda v: v.age_ms)
    return (f"note: {len(rep.stale)} valuation(s) used a price over a day older than the trade (oldest: "
            f"{worst.asset} {worst.price} from {worst.age_ms / DAY_MS:.1f} days before fill "
            f"#{worst.entry.id} on {iso(worst.entry.fill.ts_ms)}); import trades of that asset near those times")


# --- formatting ---------------------------------------------------------------------------------

def money(d: Decimal) -> str:
    """Ledger precision, trailing zeros dropped but at least cents: 24975.00, 0.12345678."""
    d = d.quantize(MONEY) if d else Decimal(0).quantize(MONEY)
    whole, _, frac = format(d, "f").partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def cents(d: Decimal) -> Decimal:
    return d.quantize(CENT, rounding=ROUND_HALF_UP) + 0  # + 0 turns -0.00 into 0.00


def amount(d: Decimal) -> str:
    """A quantity as plain digits: 0.5, 10, 0.00000100 -> 0.000001."""
    return format(d.normalize(), "f") if d else "0"


def _csv(rows: Iterable[Iterable], header: Iterable[str]) -> str:
    """A header row and the rows, nothing else (no comment line: importers read it as data)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def render_json(rep: Report) -> str:
    """The DESIGN.md contract; one disposal per line (json's indenting encoder is slow on 100k rows)."""
    t = rep.totals
    head = {"year": rep.year, "method": rep.settings.method, "jurisdiction": rep.settings.jurisdiction,
            "currency": rep.currency,
            "totals": {"proceeds": money(t.proceeds), "cost": money(t.cost), "gain": money(t.gain),
                       "short_term_gain": money(t.short), "long_term_gain": money(t.long)}}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    rows = ",\n".join("    " + json.dumps(
        {"trade_id": d.trade_id, "asset": d.asset, "quantity": amount(d.quantity), "acquired": iso(d.acquired_ms),
         "sold": iso(d.sold_ms), "proceeds": money(d.proceeds), "cost": money(d.cost), "gain": money(d.gain),
         "term": d.term}) for d in rep.disposals)
    return "{\n" + "\n".join(lines) + '\n  "disposals": [' + (f"\n{rows}\n  " if rows else "") + "]\n}\n"


def render_csv(rep: Report) -> str:
    rows = ((iso(d.sold_ms), iso(d.acquired_ms), d.asset, amount(d.quantity), money(d.proceeds), money(d.cost),
             money(d.gain), rep.term_label(d.term), d.lot_id, d.trade_id, d.symbol, d.source, d.kind)
            for d in rep.disposals)
    return _csv(rows, DISPOSAL_COLUMNS)


def _us_date(ts_ms: int) -> str:
    return utc(ts_ms).strftime("%m/%d/%Y")


def render_8949(rep: Report) -> str:
    """Form 8949: Part I (short-term) rows then Part II (long-term), each closed by its totals."""
    rows = []
    for part, term in (("I", "short"), ("II", "long")):
        tot_d = tot_e = Decimal(0)
        for d in (d for d in rep.disposals if d.term == term):
            p, c = cents(d.proceeds), cents(d.cost)
            tot_d, tot_e = tot_d + p, tot_e + c
            rows.append((part, f"{amount(d.quantity)} {d.asset}", _us_date(d.acquired_ms), _us_date(d.sold_ms),
                         p, c, "", "", p - c))
        rows.append((part, f"Total Part {part} ({term}-term)", "", "", tot_d, tot_e, "", "", tot_d - tot_e))
    return _csv(rows, F8949_COLUMNS)


def render_koinly(rep: Report) -> str:
    """Koinly universal CSV of every fill up to the end of the year (Koinly needs the purchases of
    earlier years to match this year's sales): gross amounts sent and received, the fee apart."""
    prices = PriceIndex(rep.result.entries, rep.settings.cash)
    rows = []
    for e in rep.history:
        f = e.fill
        base, _, quote = f.symbol.partition("/")
        gross = f.quantity * f.price
        sent, received = ((gross, quote), (f.quantity, base)) if f.side == "buy" else ((f.quantity, base),
                                                                                       (gross, quote))
        if quote in rep.settings.cash:
            worth = money(gross)
        else:
            found = prices.at(quote, f.ts_ms)
            worth = money(gross * found[0]) if found else ""
        desc = f"pitrader {f.source} {f.side} {f.symbol} trade {f.trade_id}" + (f" order {f.order_id}"
                                                                                 if f.order_id else "")
        rows.append((utc(f.ts_ms).strftime("%Y-%m-%d %H:%M:%S UTC"), amount(sent[0]), sent[1], amount(received[0]),
                     received[1], amount(f.fee) if f.fee else "", f.fee_asset if f.fee else "", worth,
                     rep.currency if worth else "", "", desc, ""))
    return _csv(rows, KOINLY_COLUMNS)


def render_table(rep: Report, console: Console) -> None:
    """Per-asset summary and the year's totals (the full list of disposals is --format csv)."""
    with localcontext(CONTEXT):
        _render_table(rep, console)


def _render_table(rep: Report, console: Console) -> None:
    s, t, cur = rep.settings, rep.totals, rep.currency
    short_label, long_label = {"de": ("taxable", "tax-free")}.get(s.jurisdiction, ("short-term", "long-term"))
    table = Table(title=f"Tax report {rep.year}: {s.method.upper()}, jurisdiction {s.jurisdiction}, {cur}",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("asset", "sales", "quantity", "proceeds", "cost", "gain"):
        table.add_column(name, justify="left" if name == "asset" else "right", no_wrap=True)
    for asset in sorted(rep.by_asset):
        a = rep.by_asset[asset]
        table.add_row(asset, str(a.count), amount(a.quantity), _fmt(a.proceeds), _fmt(a.cost), _signed(a.gain))
    if not rep.disposals:
        table.add_row("-", "0", "", "", "", "")
    console.print(table)
    totals = Table.grid(padding=(0, 2))
    totals.add_column()
    totals.add_column(justify="right", no_wrap=True)
    rows = [("proceeds", _fmt(t.proceeds)), ("cost", _fmt(t.cost)), ("gains", _fmt(t.gains)),
            ("losses", _fmt(t.losses)), ("net gain", _signed(t.gain))]
    if s.jurisdiction != "none":
        rows += [(short_label, _signed(t.short)), (long_label, _signed(t.long))]
    for label, value in rows:
        totals.add_row(f"{label} ({cur})", value)
    console.print(totals)
    console.print(rep.settings_line, soft_wrap=True, highlight=False)
    if s.jurisdiction == "none":
        console.print("no holding-period rule: every gain is reported as short-term in csv/8949/json")
    if not rep.disposals:
        console.print(f"no disposals in {rep.year} ({len(rep.fills)} fill(s) that year)")
    note = stale_note(rep)
    if note:
        console.print(f"[yellow]{note}[/]", soft_wrap=True)


def _fmt(d: Decimal) -> str:
    return f"{cents(d):,.2f}"


def _signed(d: Decimal) -> str:
    c = cents(d)
    return f"{c:+,.2f}" if c else "0.00"


def render_text(rep: Report, fmt: str, width: int = 120) -> str:
    """Any format as text (the table rendered without colours, e.g. for --output)."""
    with localcontext(CONTEXT):
        if fmt == "table":
            console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
            render_table(rep, console)
            return console.file.getvalue()
        return {"csv": render_csv, "8949": render_8949, "koinly": render_koinly, "json": render_json}[fmt](rep)
