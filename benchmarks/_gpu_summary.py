"""The GPU suite's runner: step states kept across calls (``state.json``) and ``SUMMARY.md``."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from _gpu_common import Context, Outcome, provenance, save_json, versions

#: Statuses after which a step is not run again.
FINAL = ("complete",)


def load_state(ctx: Context) -> dict[str, Any]:
    """The state of earlier calls in this results folder (empty for a new one)."""
    path = ctx.results / "state.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    return {"steps": {}, "calls": []}


def run_steps(ctx: Context, steps: Sequence[tuple[str, Callable[[Context], Outcome]]],
              only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the steps in order: skip the complete ones, record outcomes and tracebacks, write the summary.

    Args:
        ctx: the run context.
        steps: ``(name, function)`` in priority order.
        only: names to run (None: all); the others keep their recorded state.

    Returns:
        The state written to ``state.json``.
    """
    state = load_state(ctx)
    call = {"date": provenance(ctx, 0.0)["date"], "command": ctx.command, "budget_s": ctx.budget.seconds,
            "ran": [], "skipped_complete": [], "failed": {}}
    state["calls"].append(call)
    for name, function in steps:
        if only and name not in only:
            continue
        previous = state["steps"].get(name, {})
        if previous.get("status") in FINAL:
            ctx.log(f"{name}: complete in an earlier call, skipped")
            call["skipped_complete"].append(name)
            continue
        ctx.log(f"{name}: start ({ctx.budget.left():.0f} s left)")
        started = time.perf_counter()
        try:
            outcome = function(ctx)
        except Exception as exc:  # noqa: BLE001 - recorded; the next step runs
            call["failed"][name] = traceback.format_exc()
            outcome = Outcome("failed", note=f"{type(exc).__name__}: {str(exc)[:300]}")
            ctx.log(f"{name}: FAILED: {outcome.note}")
        seconds = time.perf_counter() - started
        state["steps"][name] = {"status": outcome.status, "note": outcome.note, "headlines": outcome.headlines,
                                "seconds_last_call": round(seconds, 1), "date": call["date"]}
        call["ran"].append(name)
        call["wall_s"] = round(ctx.budget.elapsed(), 1)
        ctx.log(f"{name}: {outcome.status} in {seconds:.1f} s" + (f" ({outcome.note})" if outcome.note else ""))
        save_json(ctx.results / "state.json", state)
        write_summary(ctx, state, [name for name, _ in steps])
    call["wall_s"] = round(ctx.budget.elapsed(), 1)
    save_json(ctx.results / "state.json", state)
    write_summary(ctx, state, [name for name, _ in steps])
    ctx.log(f"done in {ctx.budget.elapsed():.1f} s; summary in {ctx.results / 'SUMMARY.md'}")
    return state


def write_summary(ctx: Context, state: dict[str, Any], order: Sequence[str]) -> None:
    """``SUMMARY.md``: versions, each step's status, what is owed, headline numbers, this call's tracebacks."""
    steps = state["steps"]
    owed = [name for name in order if steps.get(name, {}).get("status") not in FINAL]
    call = state["calls"][-1]
    lines = ["# GPU suite summary", "", *(f"- {k}: {v}" for k, v in versions(ctx.device).items()),
             f"- this call: `{ctx.command}`, {call['date']}, budget {ctx.budget.seconds:.0f} s, "
             f"wall {ctx.budget.elapsed():.0f} s{' (dry run)' if ctx.tiny else ''}",
             f"- calls so far in this folder: {len(state['calls'])}", "",
             "| step | status | last call s | note |", "|---|---|---|---|"]
    for name in order:
        step = steps.get(name, {"status": "owed (not started)", "note": "", "seconds_last_call": ""})
        lines.append(f"| {name} | {step['status']} | {step['seconds_last_call']} | {step['note']} |")
    lines += ["", "## Still owed", ""]
    lines += [f"- {name}: {steps.get(name, {}).get('status', 'not started')}" for name in owed] or ["- nothing"]
    lines += ["", "## Headline numbers", ""]
    for name in order:
        lines += [f"- {h}" for h in steps.get(name, {}).get("headlines", [])]
    if call["failed"]:
        lines += ["", "## Tracebacks (this call)", ""]
        for name, text in call["failed"].items():
            lines += [f"### {name}", "", "```", text.rstrip(), "```", ""]
    (ctx.results / "SUMMARY.md").write_text("\n".join(lines) + "\n")
