"""Delivery to ``/v1/events``: encoding, HTTP, the sending worker, the spool. Knows nothing about spans."""

from .encoding import RecordEncoder
from .http import EventsClient
from .spool import MemorySpool, Spool
from .worker import SendingWorker

__all__ = ["EventsClient", "MemorySpool", "RecordEncoder", "SendingWorker", "Spool"]
