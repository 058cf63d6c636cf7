"""FastServe: LLM serving with skip-join MLFQ and proactive KV cache swapping."""
