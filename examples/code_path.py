"""The code path: ``promptwall_otel.configure()`` beside the official OpenAI instrumentation.

Your LLM calls stay as they are. Needs PROMPTWALL_API_KEY and PROMPTWALL_BASE_URL
(the demo points them at the local backend), and OPENAI_BASE_URL/OPENAI_API_KEY
(the demo points them at the fake LLM server in examples/fake_llm).
"""

import os

# The official instrumentation emits prompts and answers as log records; opt in to content.
os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")

import openai  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

import promptwall_otel  # noqa: E402

provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "service.version": "1.4.0"}))
trace.set_tracer_provider(provider)
promptwall = promptwall_otel.configure()  # GenAI spans (and content log records) → PromptWall
OpenAIInstrumentor().instrument()

client = openai.OpenAI(max_retries=0)
reply = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[
        {"role": "system", "content": "You answer billing questions."},
        {"role": "user", "content": "Why was I charged twice this month?"},
    ],
)
print("code path:", reply.choices[0].message.content)
embedding = client.embeddings.create(model="text-embedding-3-small", input="refund policy for double charges")
print("code path: embedded", len(embedding.data[0].embedding), "dimensions")

provider.shutdown()  # flushes PromptWall within a bounded time
print("code path: PromptWall stats", promptwall.stats())
