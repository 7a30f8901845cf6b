"""The parsers as they were before issue 13 (speed): frozen, so the fast
parsers can be checked to give the very same results on any log."""
