"""isorun sandboxes for LangGraph."""
