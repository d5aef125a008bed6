"""Placeholder until the readers branch merges (sniff only)."""


def sniff(head: bytes) -> bool:
    return head.startswith(b"#separator")
