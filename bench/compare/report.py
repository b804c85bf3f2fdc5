"""The report of the side-by-side bench: Markdown for docs/benchmarks.md, from the raw figures.

Every figure is the mean over the repetitions; req/s also shows the spread
between them. Added figures are (through the gateway) minus (direct) at the
same mode and concurrency, in the same repetition's run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable

from bench.compare.figures import Cell, Meta, Plan, Results, Start

BEGIN = "<!-- bench-compare:begin (written by bench/compare/run.py; edit the script, not this section) -->"
END = "<!-- bench-compare:end -->"
# Written as escapes: the characters themselves look like "-" and "x" in source.
DASH = "\u2013"
TIMES = "\u00d7"
TITLES = {"direct": "direct upstream", "runtime": "agent runtime", "litellm": "LiteLLM proxy"}
MODE_TITLES = {
    "complete": "complete (non-streamed)",
    "stream": "stream (20 chunks, unpaced)",
    "paced": "paced stream (20 chunks, 1 ms apart)",
}


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(kept) if kept else None


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return DASH
    if abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    if abs(value) >= 100:
        return f"{value:.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def _ratio(a: float | None, b: float | None) -> str:
    # A non-positive figure (an added latency within the noise) has no meaningful ratio.
    if a is None or b is None or a <= 0 or b <= 0:
        return DASH
    r = a / b
    return f"{r:,.0f}{TIMES}" if r >= 100 else f"{r:.1f}{TIMES}" if r >= 10 else f"{r:.2f}{TIMES}"


def _percent(share: float) -> str:
    """A share as a percentage with two significant digits (0.15%, 8.3%, 55%)."""
    if share <= 0:
        return "0%"
    digits = max(0, 1 - math.floor(math.log10(share * 100)))
    return f"{share * 100:.{digits}f}%"


class Figures:
    """Cells and starts indexed for the report; every accessor averages over repetitions."""

    def __init__(self, cells: list[Cell], starts: list[Start]) -> None:
        self.cells = cells
        self.starts = starts

    def _of(self, target: str, mode: str, c: int) -> list[Cell]:
        return [x for x in self.cells if (x.target, x.mode, x.c) == (target, mode, c)]

    def value(self, target: str, mode: str, c: int, field: Callable[[Cell], float | None]) -> float | None:
        """Mean of ``field`` over the repetitions of one cell."""
        return _mean(field(x) for x in self._of(target, mode, c))

    def added(self, target: str, mode: str, c: int, field: Callable[[Cell], float | None]) -> float | None:
        """Mean over repetitions of (target - direct) of ``field``, paired within each repetition."""
        diffs: list[float | None] = []
        for cell in self._of(target, mode, c):
            direct = [x for x in self._of("direct", mode, c) if x.rep == cell.rep]
            a, b = field(cell), field(direct[0]) if direct else None
            diffs.append(a - b if a is not None and b is not None else None)
        return _mean(diffs)

    def spread(self, target: str, mode: str, c: int) -> float | None:
        """Half the range of req/s over repetitions, relative to the mean (None with one repetition)."""
        values = [x.rps for x in self._of(target, mode, c)]
        if len(values) < 2 or not statistics.fmean(values):
            return None
        return (max(values) - min(values)) / 2 / statistics.fmean(values)

    def thin(self, target: str, mode: str, c: int) -> str:
        """A dagger when a repetition of the cell had few answers per connection."""
        return "\u2020" if any(x.thin for x in self._of(target, mode, c)) else ""

    def errors(self, target: str, mode: str, c: int) -> int:
        """Errors summed over repetitions."""
        return sum(x.errors for x in self._of(target, mode, c))

    def start(self, target: str, field: Callable[[Start], float]) -> float | None:
        """Mean of a start figure over repetitions."""
        return _mean(field(x) for x in self.starts if x.target == target)

    def peak(self, target: str) -> float | None:
        """Highest RSS after load over repetitions."""
        values = [x.rss_after_mb for x in self.starts if x.target == target]
        return max(values) if values else None


def headline(fig: Figures, targets: list[str], modes: list[str], concurrency: list[int]) -> list[str]:
    """Two short tables: speed (req/s at c=16 or the nearest, added p50 and TTFT at the lowest c), then cost."""
    mid = min(concurrency, key=lambda c: abs(c - 16))
    low = min(concurrency)
    streams = [m for m in modes if m != "complete"]
    head = ["target"]
    head += [f"req/s {m}, c={mid}" for m in modes]
    head += [f"added p50 {m}, c={low}" for m in modes]
    head += [f"added TTFT {m}, c={low}" for m in streams]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in targets:
        row = [TITLES[t]]
        row += [_fmt(fig.value(t, m, mid, lambda x: x.rps), 0) + fig.thin(t, m, mid) for m in modes]
        for m in modes:
            row.append(DASH if t == "direct" else _fmt(fig.added(t, m, low, lambda x: x.p50), 2, " ms"))
        for m in streams:
            row.append(DASH if t == "direct" else _fmt(fig.added(t, m, low, _ttft50), 2, " ms"))
        rows.append("| " + " | ".join(row) + " |")
    gateways = [t for t in targets if t != "direct"]
    if not gateways:
        return rows
    head = ["target"]
    head += [f"CPU/request {m}, c={mid}" for m in modes]
    head += [f"1-core capacity {m}" for m in modes]
    head += ["RSS after load", "cold start"]
    rows += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in gateways:
        row = [TITLES[t]]
        cpu = {m: fig.value(t, m, mid, lambda x: x.cpu_per_req_ms) for m in modes}
        row += [_fmt(cpu[m], 2, " ms") + fig.thin(t, m, mid) for m in modes]
        row += [_fmt(1000.0 / v, 0, " req/s") if v else DASH for v in cpu.values()]
        row += [_fmt(fig.peak(t), 0, " MB"), _fmt(fig.start(t, lambda x: x.cold_start_s), 2, " s")]
        rows.append("| " + " | ".join(row) + " |")
    return rows


def ratios(fig: Figures, targets: list[str], modes: list[str], concurrency: list[int]) -> list[str]:
    """The runtime against LiteLLM (how many times better) and against direct (what it keeps)."""
    lines: list[str] = []
    if "runtime" in targets and "litellm" in targets:
        lines += [
            "Agent runtime against LiteLLM proxy (LiteLLM's figure divided by the runtime's, or the runtime's "
            "req/s divided by LiteLLM's: above 1x the runtime is better):",
            "",
            "| mode | c | req/s | p50 | p99 | added p50 | CPU/request |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in modes:
            for c in concurrency:
                rt, ll = "runtime", "litellm"
                lines.append(
                    f"| {m} | {c} | {_ratio(fig.value(rt, m, c, lambda x: x.rps), fig.value(ll, m, c, lambda x: x.rps))}"
                    f" | {_ratio(fig.value(ll, m, c, lambda x: x.p50), fig.value(rt, m, c, lambda x: x.p50))}"
                    f" | {_ratio(fig.value(ll, m, c, lambda x: x.p99), fig.value(rt, m, c, lambda x: x.p99))}"
                    f" | {_ratio(fig.added(ll, m, c, lambda x: x.p50), fig.added(rt, m, c, lambda x: x.p50))}"
                    f" | {_ratio(fig.value(ll, m, c, lambda x: x.cpu_per_req_ms), fig.value(rt, m, c, lambda x: x.cpu_per_req_ms))} |"
                )
        lines += [
            "",
            f"Memory: LiteLLM {_fmt(fig.peak('litellm'), 0, ' MB')} against {_fmt(fig.peak('runtime'), 0, ' MB')}"
            f" ({_ratio(fig.peak('litellm'), fig.peak('runtime'))}); cold start"
            f" {_fmt(fig.start('litellm', lambda x: x.cold_start_s), 2, ' s')} against"
            f" {_fmt(fig.start('runtime', lambda x: x.cold_start_s), 2, ' s')}"
            f" ({_ratio(fig.start('litellm', lambda x: x.cold_start_s), fig.start('runtime', lambda x: x.cold_start_s))}).",
            "",
        ]
    gateways = [t for t in targets if t != "direct"]
    if "direct" in targets and gateways:
        lines += [
            "Against the direct upstream (share of the direct req/s that goes through; latency through ÷ direct):",
            "",
            "| mode | c | " + " | ".join(f"{TITLES[g]} req/s share | p50 {TIMES}" for g in gateways) + " |",
            "|---|---|" + "---|---|" * len(gateways),
        ]
        for m in modes:
            for c in concurrency:
                cols = []
                for g in gateways:
                    through = fig.value(g, m, c, lambda x: x.rps)
                    direct = fig.value("direct", m, c, lambda x: x.rps)
                    cols.append(_percent(through / direct) if through is not None and direct else DASH)
                    cols.append(
                        _ratio(
                            fig.value(g, m, c, lambda x: x.p50), fig.value("direct", m, c, lambda x: x.p50)
                        )
                    )
                lines.append(f"| {m} | {c} | " + " | ".join(cols) + " |")
        lines.append("")
    return lines


def full_tables(fig: Figures, targets: list[str], modes: list[str], concurrency: list[int]) -> list[str]:
    """Every cell: one table per mode."""
    lines: list[str] = []
    for m in modes:
        streamed = m != "complete"
        lines += [f"#### {MODE_TITLES.get(m, m)}", ""]
        head = ["c", "target", "req/s", "p50", "p90", "p99", "added p50", "added p99"]
        if streamed:
            head += ["TTFT p50", "TTFT p99", "added TTFT p50"]
        head += ["gateway CPU/request", "gateway core", "upstream core", "wrk + probe core", "errors"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in concurrency:
            for t in targets:
                rps = fig.value(t, m, c, lambda x: x.rps)
                spread = fig.spread(t, m, c)
                dagger = fig.thin(t, m, c)
                row = [
                    str(c),
                    TITLES[t],
                    _fmt(rps, 0) + dagger + (f" ±{spread * 100:.0f}%" if spread is not None else ""),
                ]
                row += [_fmt(fig.value(t, m, c, pct), 2, " ms") for pct in (_p50, _p90, _p99)]
                for pct in (_p50, _p99):
                    row.append(DASH if t == "direct" else _fmt(fig.added(t, m, c, pct), 2, " ms"))
                if streamed:
                    row += [_fmt(fig.value(t, m, c, first), 2, " ms") for first in (_ttft50, _ttft99)]
                    row.append(DASH if t == "direct" else _fmt(fig.added(t, m, c, _ttft50), 2, " ms"))
                row.append(_fmt(fig.value(t, m, c, lambda x: x.cpu_per_req_ms), 3, " ms") + dagger)
                for share in (_gw_core, _up_core, _loadgen_core):
                    row.append(_fmt(fig.value(t, m, c, share), 0, "%"))
                row.append(str(fig.errors(t, m, c)))
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


def _p50(x: Cell) -> float:
    return x.p50


def _p90(x: Cell) -> float:
    return x.p90


def _p99(x: Cell) -> float:
    return x.p99


def _ttft50(x: Cell) -> float | None:
    return x.ttft_p50


def _ttft99(x: Cell) -> float | None:
    return x.ttft_p99


def _gw_core(x: Cell) -> float | None:
    return None if x.gateway_core is None else x.gateway_core * 100


def _up_core(x: Cell) -> float:
    return x.upstream_core * 100


def _loadgen_core(x: Cell) -> float:
    return x.loadgen_core * 100


def splice(document: str | None, section: str) -> str:
    """Put ``section`` between the markers of ``document`` (a new page when there is none)."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if not document:
        return (
            "# Benchmarks\n\nFigures measured by the project's benchmarks, with the command that gives them."
            "\n\n" + block
        )
    if BEGIN in document and END in document:
        before = document[: document.index(BEGIN)]
        after = document[document.index(END) + len(END) :].lstrip("\n")
        return before + block + ("\n" + after if after else "")
    return document.rstrip() + "\n\n" + block


def page(meta: Meta, plan: Plan, results: Results, fig: Figures) -> str:
    """The whole section of docs/benchmarks.md."""
    targets, modes, conc = plan.targets, plan.modes, plan.concurrency
    mid = min(conc, key=lambda c: abs(c - 16))
    loads = ", ".join(
        f"{x:.1f}" for x in [results.load_before, *results.load_samples[1:], results.load_after]
    )
    limits = {"none": "no rate-limit policy", "memory": "a rate-limit policy in memory (never reached)"}
    lines = [
        "## Side by side: agent runtime, LiteLLM proxy, direct upstream",
        "",
        f"Measured {meta.date} by `{meta.command.strip()}`"
        f"{' (`make bench-compare`)' if meta.command.strip() == 'python bench/compare/run.py' else ''} in"
        f" {meta.minutes:.0f} minutes{' (a quick run: short cells, one repetition)' if plan.quick else ''}.",
        "",
        "### Machine and versions",
        "",
        f"- CPU: {meta.cpu_model}, {meta.cores} cores; {meta.memory_gb:.0f} GB memory; Linux {meta.kernel}.",
        f"- Gateway under test pinned to core {plan.gateway_cpu}; fake upstream and load generator pinned to"
        f" core {plan.load_cpu} (taskset); loopback only.",
        f"- Load average (1 min) before the run, at each repetition and after: {loads}."
        f" {_load_note(results, meta.cores)}",
        f"- Agent runtime: commit {meta.runtime_commit}, Python {meta.python}, one worker (uvicorn, uvloop,"
        f" httptools), auth on (one API key), {limits.get(plan.rate_limit, 'a rate-limit policy in Redis (never reached)')},"
        f" busy polling {'at its default (1ms)' if plan.busy_poll is None else plan.busy_poll}.",
        f"- LiteLLM proxy {meta.litellm} (`litellm[proxy]`, every dependency pinned by"
        " bench/compare/litellm-constraints.txt), own venv, `--num_workers 1`, a master key, otherwise default"
        " settings (its access log on); `LITELLM_LOCAL_MODEL_COST_MAP=True` so that it does not fetch its"
        " cost map from the internet at start.",
        f"- Fake upstream: bench/compare/go/upstream, {meta.go}; 20 content chunks per stream, 1 ms apart"
        " when paced. Load: " + meta.wrk + ", one thread, keep-alive connections = c; time to first token by"
        " bench/compare/go/ttft (the same for every target).",
        "",
        f"### Headline (mean of {plan.repetitions} repetition{'s' if plan.repetitions > 1 else ''})",
        "",
        *headline(fig, targets, modes, conc),
        "",
        f"CPU/request is the gateway's CPU time (user + system, /proc) per successful request at c={mid}; 1-core"
        " capacity is its inverse, the req/s one core given wholly to the gateway would allow: unlike req/s, both"
        " hold when other work takes part of the gateway's core. RSS is after the load of a repetition.",
        "",
        _load_core_note(results),
        "",
        "### Ratios",
        "",
        *ratios(fig, targets, modes, conc),
        "### Every figure",
        "",
        "Latencies from wrk (request written to last byte read); added = through the gateway minus direct, same"
        " mode, concurrency and repetition. TTFT: time to the first event carrying content. Core shares are CPU"
        " seconds over wall seconds of the measured run: the gateway's on its core, the fake upstream's and wrk's"
        " on theirs (when upstream + wrk stay well under 100%, the load core was not the limit; a saturated"
        " gateway well under 100% of its core had to share it with other work). ±: half the"
        " range of req/s between repetitions. \u2020: fewer than 3 answers per connection in the measured time"
        " (a slow target at high concurrency): the requests cut off at the end lower req/s and raise CPU/request.",
        "",
        *full_tables(fig, targets, modes, conc),
    ]
    if results.skipped:
        lines += [f"**Incomplete:** {results.skipped} cells skipped (the time budget ran out).", ""]
    lines += [
        "### Method and limits",
        "",
        "- Each repetition starts both gateways afresh (cold start: from process start to the first successful"
        " non-streamed completion, polled every 20 ms), then runs every mode and concurrency, the three targets"
        " one after the other for each, so that they see the same machine at nearly the same time.",
        f"- A cell: wrk warm-up ({plan.warmup:.0f} s, up to 16 connections), wait until the gateway is idle, then"
        f" {plan.seconds:.0f} s measured (longer, up to {plan.max_cell:.0f} s, where the latency seen at a lower"
        " concurrency says that few answers would come in that time). For streams the TTFT probe runs on one"
        " more connection beside wrk at c > 1 (its requests count in CPU/request), and after wrk, alone, at c = 1.",
        "- The unpaced stream flatters a gateway that merges chunks arriving in one read; the paced stream"
        " (1 ms between chunks) does not.",
        "- Only 2 cores: the gateway has one to itself, but other work on the machine takes from both"
        " (see the load average above); CPU/request is the figure least disturbed by it.",
        "",
        "### Reproduce",
        "",
        "```",
        "make bench-compare                        # full run, < 30 minutes, rewrites this section",
        "python bench/compare/run.py --quick       # about 3 minutes, prints the section only",
        "python bench/compare/run.py --rate-limit memory --modes complete stream   # with a rate-limit policy",
        "```",
        "",
        "Needs Go (builds the fake upstream into the cache), wrk (Debian's package; installed with apt-get when"
        " missing) and PyPI (LiteLLM's venv, installed into ~/.cache/sentient-operator/bench-compare on first"
        " use, about 750 MB). Raw figures of the last run: ~/.cache/sentient-operator/bench-compare/last-run.json.",
    ]
    return "\n".join(lines) + "\n"


def _load_core_note(results: Results) -> str:
    """How much of the load core the fake upstream and wrk took while a gateway was measured."""
    through = [x for x in results.cells if x.target != "direct"]
    direct = [x for x in results.cells if x.target == "direct"]
    if not through:
        return ""
    upstream = max(x.upstream_core for x in through) * 100
    both = max(x.upstream_core + x.loadgen_core for x in through) * 100
    text = (
        f"While a gateway was measured the fake upstream took at most {upstream:.0f}% of its core, and upstream"
        f" + wrk together at most {both:.0f}%"
    )
    text += (
        ": the load side was never the limit."
        if both < 80
        else ": the load core came near its limit, so the highest gateway figures may be capped by it."
    )
    if direct:
        top = max(direct, key=lambda x: x.rps)
        text += (
            f" Direct, the upstream answered up to {top.rps:,.0f} req/s ({top.mode}, c={top.c}) on that one"
            f" core shared with wrk."
        )
    return text


def _load_note(results: Results, cores: int) -> str:
    worst = max([results.load_before, results.load_after, *results.load_samples])
    if worst < 0.5:
        return "The machine was otherwise idle."
    return (
        f"Other work ran on the machine during the run (load up to {worst:.1f} on {cores} cores), so wall-clock"
        " figures are noisy and lower than on an idle machine."
    )
