"""Seed the default sales pipeline, per-priority SLA hours and the company settings row."""

from django.db import migrations
from django.utils.translation import gettext_noop

# Names are stored in English; PipelineStage.__str__ translates them (hence gettext_noop).
DEFAULT_STAGES = [
    # name, order, probability %, kind
    (gettext_noop("Lead in"), 10, 10, "open"),
    (gettext_noop("Qualified"), 20, 25, "open"),
    (gettext_noop("Proposal"), 30, 50, "open"),
    (gettext_noop("Negotiation"), 40, 75, "open"),
    (gettext_noop("Won"), 90, 100, "won"),
    (gettext_noop("Lost"), 99, 0, "lost"),
]

SLA_HOURS = [
    # priority, first response, resolution
    ("urgent", 1, 8),
    ("high", 4, 24),
    ("normal", 8, 72),
    ("low", 24, 120),
]


def seed(apps, schema_editor):
    Pipeline = apps.get_model("crm", "Pipeline")
    PipelineStage = apps.get_model("crm", "PipelineStage")
    SlaPolicy = apps.get_model("crm", "SlaPolicy")
    CompanySettings = apps.get_model("crm", "CompanySettings")
    pipeline, _ = Pipeline.objects.get_or_create(name="Sales", defaults={"is_default": True})
    for name, order, probability, kind in DEFAULT_STAGES:
        PipelineStage.objects.get_or_create(
            pipeline=pipeline, order=order, defaults={"name": name, "probability": probability, "kind": kind}
        )
    for priority, first_response, resolution in SLA_HOURS:
        SlaPolicy.objects.get_or_create(
            priority=priority, defaults={"first_response_hours": first_response, "resolution_hours": resolution}
        )
    CompanySettings.objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("crm", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
