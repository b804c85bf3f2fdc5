"""The ``sentient`` command: scaffold, validate, run locally, chat, inspect status, verify audit logs."""
