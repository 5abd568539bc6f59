"""A multi-turn conversation with a session id and a user id, set once around the calls.

The LLM calls are untouched: a span around each turn carries
``gen_ai.conversation.id`` and ``user.id``, and baggage carries
``promptwall.metadata.*``; PromptWallSpanProcessor hands both down to the
OpenAI spans beneath, so every turn lands in the same PromptWall session.
"""

import os
import uuid

os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")

import openai  # noqa: E402
from opentelemetry import baggage, context, trace  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

import promptwall_otel  # noqa: E402

provider = TracerProvider(resource=Resource.create({"service.name": "travel-agent", "service.version": "0.9.1"}))
trace.set_tracer_provider(provider)
promptwall_otel.configure(use_case="trip_planning")
OpenAIInstrumentor().instrument()
tracer = trace.get_tracer("travel-agent")
client = openai.OpenAI(max_retries=0)

conversation_id = os.environ.get("DEMO_CONVERSATION_ID", f"conv-{uuid.uuid4().hex[:8]}")
history = [{"role": "system", "content": "You plan trips."}]
token = context.attach(baggage.set_baggage("promptwall.metadata.channel", "web"))
for question in ("Plan a weekend in Lisbon", "Add a day trip to Sintra", "What should I pack?"):
    history.append({"role": "user", "content": question})
    attributes = {"gen_ai.conversation.id": conversation_id, "user.id": "traveller-17"}
    with tracer.start_as_current_span("conversation turn", attributes=attributes):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=history)
    answer = reply.choices[0].message.content
    history.append({"role": "assistant", "content": answer})
    print("conversation:", answer)
context.detach(token)
provider.shutdown()
print("conversation: session", conversation_id)
