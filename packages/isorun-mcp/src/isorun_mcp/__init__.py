"""isorun sandboxes for the Model Context Protocol."""
