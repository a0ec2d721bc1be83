"""A webhook's ``data``: the record as the API shows it (the same schema), so that a receiver reads one
format whichever way it learns about a change."""

from typing import Any

from crm.models import Customer, Deal, Ticket


def customer_data(customer: Customer) -> dict[str, Any]:
    from crm.api.customers import CustomerOut

    return CustomerOut.from_orm(customer).model_dump(mode="json")


def deal_data(deal: Deal) -> dict[str, Any]:
    from crm.api.deals import DealOut

    return DealOut.from_orm(deal).model_dump(mode="json")


def ticket_data(ticket: Ticket) -> dict[str, Any]:
    from crm.api.tickets import TicketOut

    return TicketOut.from_orm(ticket).model_dump(mode="json")
