import pytest

from crm.models import Deal
from tests.factories import make_deal

pytestmark = pytest.mark.django_db


def test_deal_create_starts_open_in_first_stage():
    deal = make_deal()
    assert deal.status == Deal.Status.OPEN
    assert deal.stage.name == "Lead in"
    assert deal.stage_changes.count() == 1
