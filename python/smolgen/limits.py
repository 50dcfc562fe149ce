"""Bounds on what one request may cost, shared by the server and batch jobs."""

#: The largest request read: an HTTP body (``smolgen serve --max-body-bytes``'s default), a
#: batch input line, a plain prompt. Millions of characters, far more than any model's context
#: window holds; anything larger is refused unread.
MAX_REQUEST_BYTES = 8 * 2**20
