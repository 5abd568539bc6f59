"""Feed PromptWall from any OpenTelemetry pipeline.

``configure()`` for code, ``OTEL_TRACES_EXPORTER=promptwall`` for zero code,
``promptwall-otel receive`` for collectors, ``promptwall-otel serve`` for a
local PromptWall-compatible backend.
"""

from . import compiled

compiled.install()  # first: a compiled module that does not match its source must never be imported

from .exporter import PromptWallSpanExporter  # noqa: E402
from .logs import PromptWallLogProcessor  # noqa: E402
from .mapping import MappingOptions  # noqa: E402
from .processor import PromptWallSpanProcessor  # noqa: E402
from .record import MAX_BATCH, Event, Stage, apply_defaults, validate_event  # noqa: E402
from .sampler import GenAIRecordingSampler  # noqa: E402
from .version import __version__  # noqa: E402
from .wiring import configure  # noqa: E402

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
