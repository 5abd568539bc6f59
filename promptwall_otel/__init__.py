"""Feed PromptWall from any OpenTelemetry pipeline.

``configure()`` for code, ``OTEL_TRACES_EXPORTER=promptwall`` for zero code,
``promptwall-otel receive`` for collectors, ``promptwall-otel serve`` for a
local PromptWall-compatible backend.
"""

from .exporter import PromptWallSpanExporter
from .logs import PromptWallLogProcessor
from .mapping import MappingOptions
from .processor import PromptWallSpanProcessor
from .record import MAX_BATCH, Event, Stage, apply_defaults, validate_event
from .sampler import GenAIRecordingSampler
from .version import __version__
from .wiring import configure

__all__ = [
    "Event",
    "GenAIRecordingSampler",
    "MAX_BATCH",
    "MappingOptions",
    "PromptWallLogProcessor",
    "PromptWallSpanExporter",
    "PromptWallSpanProcessor",
    "Stage",
    "__version__",
    "apply_defaults",
    "configure",
    "validate_event",
]
