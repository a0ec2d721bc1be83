"""Webhooks: signed HTTP callbacks for changes in the CRM, through a transactional outbox.

``services.webhook_emit`` writes one ``WebhookDelivery`` per subscription that listens, in the transaction
of the change, so that a change that rolls back sends nothing and a change that commits is never lost. A
Celery task delivers it after the commit; a beat task picks up whatever is due (a retry, or a delivery
whose worker died). ``signing`` follows Standard Webhooks; ``targets`` refuses private addresses.
"""
