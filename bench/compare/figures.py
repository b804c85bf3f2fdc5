"""What one run of the side-by-side bench measures: the plan, every cell, every start, the context."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Plan:
    """What to measure and how long."""

    modes: list[str]
    concurrency: list[int]
    repetitions: int
    seconds: float
    warmup: float
    ttft_seconds: float
    max_cell: float
    budget: float
    targets: list[str]
    rate_limit: str
    gateway_cpu: int
    load_cpu: int
    quick: bool
    # The runtime's server.busyPoll; None leaves the runtime's default.
    busy_poll: str | None = None


@dataclass
class Cell:
    """Figures of one (target, mode, concurrency, repetition); latencies in ms."""

    target: str
    mode: str
    c: int
    rep: int
    seconds: float
    ok: int
    errors: int
    rps: float
    p50: float
    p90: float
    p99: float
    ttft_p50: float | None
    ttft_p99: float | None
    cpu_per_req_ms: float | None
    gateway_core: float | None
    upstream_core: float
    loadgen_core: float

    @property
    def thin(self) -> bool:
        """Fewer than 3 answers per connection: requests cut off at the end weigh on req/s and CPU/request."""
        return self.ok < 3 * self.c


@dataclass
class Start:
    """Cold start and memory of one gateway in one repetition."""

    target: str
    rep: int
    cold_start_s: float
    rss_idle_mb: float
    rss_after_mb: float
    rss_peak_mb: float


@dataclass
class Results:
    """Raw figures of one run."""

    cells: list[Cell] = field(default_factory=list)
    starts: list[Start] = field(default_factory=list)
    skipped: int = 0
    load_before: float = 0.0
    load_after: float = 0.0
    load_samples: list[float] = field(default_factory=list)


@dataclass
class Meta:
    """Machine and versions of one run."""

    date: str
    command: str
    cpu_model: str
    cores: int
    memory_gb: float
    kernel: str
    python: str
    runtime_commit: str
    litellm: str
    go: str
    wrk: str
    minutes: float
