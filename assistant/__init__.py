"""The chat assistant (planned: answers over permitted records, with citations)."""
