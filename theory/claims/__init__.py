"""One module per claim of the project's CLAIMS.md: closed forms, constructions, exact quantities."""
