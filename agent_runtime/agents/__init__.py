"""Agents that ship with the runtime."""
