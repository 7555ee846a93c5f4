"""The OpenAI-compatible server over the engine, the web chat page, and the request/feedback store."""
