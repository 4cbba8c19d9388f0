"""isorun sandboxes for Claude (Anthropic client tools, Agent SDK, Managed Agents)."""
