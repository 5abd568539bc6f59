"""Delivery to ``/v1/events``: HTTP, retries, spool. Knows nothing about spans."""

from .delivery import Delivery
from .http import EventsClient
from .spool import Spool

__all__ = ["Delivery", "EventsClient", "Spool"]
