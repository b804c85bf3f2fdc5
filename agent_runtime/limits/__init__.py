"""Rate limiting: request and token budgets, burst, concurrency, per subject; memory or Redis."""

from agent_runtime.limits.policy import (
    Admission,
    RateLimiter,
    Subject,
    build_limiter,
    estimate_tokens,
    resolve_subject,
)

__all__ = ["Admission", "RateLimiter", "Subject", "build_limiter", "estimate_tokens", "resolve_subject"]
