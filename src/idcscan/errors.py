"""The one exception type for mistakes a user can make.

The CLI prints these without a traceback and exits non-zero; the server turns them into 4xx
JSON. Anything else escaping is a bug in idcscan, not in the user's input.
"""


class IdcscanError(Exception):
    """A problem the user can fix; the message says how."""
