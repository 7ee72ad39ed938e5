from decimal import Decimal

from core.service.remote import num, signed


def test_money_keeps_cents_from_one_up_and_significant_digits_below():
    assert num(Decimal("1234.5")) == "1,234.50"
    assert num(Decimal("-12.3")) == "-12.30"
    assert num(Decimal("0")) == "0.00"
    assert num(None) == "-"
    # a BTC-quoted account: small amounts keep four significant digits instead of reading 0.00
    assert num(Decimal("0.000123456")) == "0.0001235"
    assert num(Decimal("-0.004")) == "-0.004000"
    assert signed(Decimal("0.00052")) == "+0.0005200"
