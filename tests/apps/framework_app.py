"""A LangChain app for end-to-end tests, run in its own process (instrumentors patch the process).

    python tests/apps/framework_app.py

LangChain's ``ChatOpenAI`` under OpenInference's LangChain instrumentation,
and its ``openai`` client under OpenInference's OpenAI instrumentation: the
framework's LLM span is never made current, so each call is seen twice, in
two traces (issue 11, item 3). Four plain calls, one streamed call, one
failed call, all against the fake LLM at ``OPENAI_BASE_URL``; PromptWall
settings come from the environment. Prints one JSON line: the usage the
client saw for each call.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List


def main() -> None:
    from langchain_openai import ChatOpenAI
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    import promptwall_otel

    provider = TracerProvider(resource=Resource.create({"service.name": "framework-app"}))
    trace.set_tracer_provider(provider)
    # One batch at shutdown: the two spans of a call must meet in one batch to be paired (docs/mapping.md).
    promptwall_otel.configure(schedule_delay_millis=60_000)
    LangChainInstrumentor().instrument()
    OpenAIInstrumentor().instrument()

    def model(name: str) -> Any:
        return ChatOpenAI(model=name, base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-fake", max_retries=0)

    calls: List[Dict[str, Any]] = []
    for n in range(4):
        answer = model("gpt-4o-mini").invoke(f"Question {n}")
        calls.append({"prompt": f"Question {n}", "usage": answer.usage_metadata})
    streamed = "".join(str(chunk.content) for chunk in model("gpt-4o-mini").stream("Stream it"))
    calls.append({"prompt": "Stream it", "answer": streamed})
    try:
        model("error-400").invoke("Fail")
    except Exception as error:
        calls.append({"prompt": "Fail", "error": type(error).__name__})
    print(json.dumps({"calls": calls}), flush=True)
    provider.shutdown()


if __name__ == "__main__":
    main()
