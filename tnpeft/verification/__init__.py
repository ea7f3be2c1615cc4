"""Property checks for any adapter graph, built-in or your own: ``tnpeft.verify(graph)``."""

from tnpeft.verification.checks import Check, VerifyReport, verify

__all__ = ["verify", "VerifyReport", "Check"]
