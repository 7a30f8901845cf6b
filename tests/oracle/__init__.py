"""The parsers as they were before issue 13 (speed): frozen, so the fast
parsers can be checked to give the very same results on any log."""

LATER = ("addr", "suppression")    # what the parser keeps since it was frozen


def without_addresses(value):
    """Plain data without what the frozen parser did not keep: the frames'
    addresses (to map frames to objects) and valgrind's suppression entries
    (--gen-suppressions=all).  The tests and the bench compare through it."""
    if isinstance(value, dict):
        return {k: without_addresses(v) for k, v in value.items() if k not in LATER}
    if isinstance(value, list):
        return [without_addresses(v) for v in value]
    return value
