"""isorun sandboxes for the OpenAI Agents SDK."""
