"""Helpers for property-testing adapters, including your own topologies."""
