"""Property checks for any adapter graph, built-in or your own: ``tnpeft.verify(graph)``."""

from tnpeft.verify.checks import Check, VerifyReport, verify

__all__ = ["verify", "VerifyReport", "Check"]
