"""A separate process that signs in as one user and moves deals back and forth between two stages.

Run by tests/crm/test_deal_concurrency.py as ``python -m tests.deal_mover <json>``: every process waits
for the same start time, then posts its moves through the real view (``/crm/deals/<pk>/move/``) against
the test database, and prints one JSON line: the status and message of every move.
"""

import json
import os
import sys
import time


def main(spec: dict) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = spec["database"]
    import django

    django.setup()
    from django.test import Client

    from accounts.models import User
    from crm.models import Deal

    client = Client(raise_request_exception=False)
    client.force_login(User.objects.get(pk=spec["user"]))
    versions = dict(Deal.objects.filter(pk__in=spec["deals"]).values_list("pk", "version"))
    time.sleep(max(0.0, spec["start_at"] - time.time()))
    results = []
    for stage in spec["stages"]:
        for pk in spec["deals"]:
            data = {"stage": stage, "version": versions[pk]}
            response = client.post(f"/crm/deals/{pk}/move/", data, headers={"HX-Request": "true"})
            # The messages this request added (the ones of earlier requests were not shown yet).
            texts = [str(m) for m in response.wsgi_request._messages._queued_messages]
            results.append({"deal": pk, "stage": stage, "status": response.status_code, "messages": texts})
            versions[pk] = Deal.objects.values_list("version", flat=True).get(pk=pk)
    print(json.dumps(results))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
