"""The zero-code path: an app with no OpenTelemetry code at all. Run it as

    OTEL_SERVICE_NAME=faq-bot \
    OTEL_TRACES_EXPORTER=promptwall OTEL_LOGS_EXPORTER=promptwall \
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true \
    opentelemetry-instrument python examples/zero_code_app.py

with PROMPTWALL_API_KEY / PROMPTWALL_BASE_URL and OPENAI_BASE_URL / OPENAI_API_KEY set.
"""

import openai

client = openai.OpenAI(max_retries=0)
for question in ("What are your opening hours?", "Do you ship to Canada?"):
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    print("zero code:", reply.choices[0].message.content)
