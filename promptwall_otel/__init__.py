"""Feed PromptWall from any OpenTelemetry pipeline."""

from .record import MAX_BATCH, Event, Stage, apply_defaults, validate_event
from .version import __version__

__all__ = ["Event", "MAX_BATCH", "Stage", "__version__", "apply_defaults", "validate_event"]
