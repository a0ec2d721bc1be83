"""The templates' small formatting filters (crm.templatetags.crm_format)."""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone, translation

from crm.templatetags.crm_format import ago, share


def test_ago_says_just_now_for_the_last_minute_not_zero_minutes():
    now = timezone.now()
    assert ago(now - timedelta(seconds=20)) == "just now"
    assert ago(now - timedelta(minutes=5)) == "5\u00a0minutes ago"
    assert ago(None) == ""
    with translation.override("zh-hans"):
        assert ago(now) == "刚刚"


def test_share_keeps_one_decimal_and_never_rounds_a_failure_to_zero():
    assert share(1, 500) == "0.2 %"
    assert share(1, 2000) == "< 0.1 %"
    assert share(0, 2000) == "0.0 %"
    assert share(250, 1000) == "25.0 %"
    assert share(3, 0) == "—" and share("x", 3) == "—"
    assert share(Decimal("12345"), Decimal("100000")) == "12.3 %"
