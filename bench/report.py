"""The benchmark's outputs: ``results.json``, ``results.md`` (tables) and ``chart.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _runs_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant | mix | pool | calls | lost | API req/call | time to pin p50 / p99 ms "
        "| lag p50 / p99 ms | pipeline share p99 ms | CPU ms/call worker | CPU ms/call Redis "
        "| settled/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        pin, lag, share = r["time_to_pin_ms"], r["lag_ms"], r.get("pipeline_share_ms") or {}
        lines.append(
            f"| {r['variant']} | {r['mix']} | {r['pool']} | {r['calls']} | {r['lost']} "
            f"| {_fmt(r['api_requests_per_call'])} | {_fmt(pin['p50'])} / {_fmt(pin['p99'])} "
            f"| {_fmt(lag['p50'])} / {_fmt(lag['p99'])} | {_fmt(share.get('p99'))} "
            f"| {r['cpu_s_per_call_worker'] * 1000:.2f} | {r['cpu_s_per_call_redis'] * 1000:.2f} "
            f"| {_fmt(r['settled_per_s'])} |"
        )
    return lines


def _scale_table(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    lines = [
        f"## Scale-out: one burst of {runs[0]['calls']} calls on 1, 2 and 4 worker processes",
        "",
        "| broker | workers | time to pin p50 / p99 ms | settled/s | CPU ms/call workers "
        "| CPU ms/call Redis | lost |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        pin = r["time_to_pin_ms"]
        lines.append(
            f"| {r['broker']} | {r['workers']} | {_fmt(pin['p50'])} / {_fmt(pin['p99'])} "
            f"| {_fmt(r['settled_per_s'])} | {r['cpu_s_per_call_worker'] * 1000:.2f} "
            f"| {r['cpu_s_per_call_redis'] * 1000:.2f} | {r['lost']} |"
        )
    return [*lines, ""]


def _burst_floor(report: dict[str, Any]) -> list[str]:
    floor = report["floors"].get("burst")
    if not floor:
        return []
    return [
        f"- Burst floor: {floor['calls']} tasks of one API request and one result write each, "
        f"at once, same pool: {floor['tasks_per_s']} tasks/s, so {floor['floor_ms']:g} ms to "
        "the last one's result with one API round trip.",
    ]


def _burst_details(runs: list[dict[str, Any]]) -> list[str]:
    """Code checks during the burst, and Redis commands per call by name."""
    lines: list[str] = []
    for r in runs:
        checks = r.get("code_check_ms")
        if checks:
            lines.append(
                f"- {r['variant']} ({r['pool']}): verify_code while the burst was placed: p50 "
                f"{_fmt(checks['p50'])} / p99 {_fmt(checks['p99'])} ms over {checks['checks']} "
                f"checks ({checks['errors']} failed)."
            )
        names = r.get("redis_commands_by_name") or {}
        if names:
            top = ", ".join(f"{name} {count:g}" for name, count in list(names.items())[:10])
            lines.append(
                f"- {r['variant']} ({r['pool']}): Redis commands per call "
                f"{_fmt(r.get('redis_commands_per_call'))} (Redis CPU "
                f"{r['cpu_s_per_call_redis'] * 1000:.2f} ms); most: {top}."
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    env, replay = report["environment"], report["floors"]["replay"]
    lines = [
        f"# Benchmark {report['started_at']} ({report['size']})",
        "",
        f"Machine: {env['machine']}; API latency {env['latency_ms']} ms per request; "
        f"calls of {env['timeout_s']} s; took {report['seconds']:.0f} s.",
        "",
        "## Frontier: API requests per call against notification lag (unsaturated)",
        "",
        f"Calls arrive at {env.get('frontier_rate', '?')} per second.",
        "",
        *_runs_table(report["frontier"]),
        "",
        "## Saturation: bursts of calls at once",
        "",
        *_runs_table(report["saturation"]),
        "",
        *_burst_details(report["saturation"]),
        "",
        *_scale_table(report.get("scale_out") or []),
        "## Floors",
        "",
        *_burst_floor(report),
        f"- Celery no-op tasks on the same broker, pool and concurrency: "
        f"{report['floors']['noop']['tasks_per_s']} tasks/s "
        f"({report['floors']['noop']['tasks']} tasks).",
        f"- Bare replay of the same HTTP requests ({replay['requests_per_call']} per call), one "
        f"thread, same client library: {replay['cpu_s_per_call'] * 1000:.2f} CPU ms per call.",
    ]
    memory = report.get("memory")
    if memory:
        lines += [
            "",
            "## Memory",
            "",
            f"- {memory['calls']} calls in flight in one worker: RSS grew "
            f"{memory['rss_growth_bytes'] / 1e6:.1f} MB, {memory['bytes_per_call']} bytes per "
            f"call; {memory['in_flight_records']} in-flight records, "
            f"{memory['countdown_messages_held']} messages held by the worker, "
            f"{memory.get('polls_waiting_in_redis', 0)} polls waiting in Redis (placed in "
            f"{memory['placed_in_s']} s).",
        ]
    profiled = report.get("profile") or {}
    if profiled.get("summary"):
        lines += ["", f"## Where ours' worker CPU goes ({profiled['calls']} calls, py-spy)", ""]
        lines += ["A run of its own (py-spy slows the process it samples).", ""]
        lines += ["```", profiled["summary"], "```"]
    lines += ["", "## Goals", ""]
    for g in report["goals"]:
        lines.append(f"- {'met' if g['met'] else 'NOT met'}: {g['goal']} ({g['value']})")
        if g.get("bound"):
            lines.append(f"  - what bounds it: {g['bound']}")
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for mix, marker in (("standard", "o"), ("concentrated", "s")):
        runs = [r for r in report["frontier"] if r["mix"] == mix and r["lag_ms"]["p99"] is not None]
        fixed = sorted(
            (r for r in runs if r["kind"] == "fixed"), key=lambda r: r["api_requests_per_call"]
        )
        if fixed:
            left.plot(
                [r["api_requests_per_call"] for r in fixed],
                [r["lag_ms"]["p99"] / 1000 for r in fixed],
                marker=marker,
                linestyle="--",
                label=f"fixed interval ({mix})",
            )
            for r in fixed:
                left.annotate(r["variant"], (r["api_requests_per_call"], r["lag_ms"]["p99"] / 1000))
        for r in runs:
            if r["kind"] == "ours":
                left.scatter(
                    r["api_requests_per_call"], r["lag_ms"]["p99"] / 1000, marker="*", s=250,
                    label=f"ours ({mix})", zorder=3,
                )  # fmt: skip
    left.set_xlabel("API requests per call")
    left.set_ylabel("notification lag p99 (s)")
    left.set_title("Requests per call against p99 lag")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    runs = report["saturation"]
    right.barh(
        [f"{r['variant']} ({r['pool']})" for r in runs], [r["settled_per_s"] or 0 for r in runs]
    )
    right.set_xlabel("settled calls per second (burst)")
    right.set_title("Throughput at saturation")
    right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "chart.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["md"].write_text(markdown(report))
    chart(report, paths["png"])
    return paths
