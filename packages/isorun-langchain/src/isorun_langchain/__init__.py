"""isorun sandboxes for LangChain and deepagents."""
