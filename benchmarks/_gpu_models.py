"""GPU suite steps on whole models: NTK-SAP scoring speed, PX and SynFlow round times, pruned inference.

NTK-SAP reuses ``benchmarks/ntksap_speed.py``: the slow per-draw twin (the official code's way) and
the library's loop and vmap paths score the SAME draws; each job runs in this process (twice on a
GPU, the faster kept) and its scores are kept under ``scratch/`` so that a later call can still
compare with the slow twin.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _gpu_common import ROOT, Context, Outcome, Pending, Table, write_markdown
from ntksap_speed import _label, _rel, worker

NTKSAP_FIELDS = ["case", "model", "batch", "R", "implementation", "seconds", "peak_mib", "speedup_vs_slow",
                 "max_rel_diff_vs_slow"]
ROUND_FIELDS = ["case", "model", "method", "images", "seconds_median", "seconds_min", "rounds_timed", "options"]


def ntksap_jobs(ctx: Context) -> list[dict[str, Any]]:
    """Per model: the slow per-draw twin first, then the library's loop and vmap (chunk sizes)."""
    if ctx.tiny:
        models = [("resnet20", 4, 2, [None])]
    else:
        models = [("resnet20", 100, 5, [None, 2]), ("vgg16_bn", 256, 1, [None])]
    jobs = []
    for model, batch, repeats, chunks in models:
        base = dict(model=model, batch=batch, repeats=repeats, device=str(ctx.device), threads=torch.get_num_threads(),
                    seed=0)
        jobs.append(dict(base, impl="slow"))
        jobs.append(dict(base, impl="library", vectorize=False))
        jobs += [dict(base, impl="library", vectorize=True, chunk_size=c) for c in chunks]
    return jobs


def _job_case(job: dict[str, Any]) -> str:
    return f"{job['model']}/B{job['batch']}/R{job['repeats']}/{_label(job)}"


def _scores_path(scratch: Path, case: str) -> Path:
    return scratch / (case.replace("/", "_").replace(" ", "_").replace(",", "") + ".pt")


def ntksap_speed(ctx: Context) -> Outcome:
    """Step: NTK-SAP loop vs vmap vs the slow per-draw twin, same draws; speedup and score agreement."""
    started = time.perf_counter()
    table = Table(ctx.results / "ntksap_speed.csv", NTKSAP_FIELDS)
    scratch = ctx.results / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    pending = Pending(ctx, table, [(_job_case(job), job) for job in ntksap_jobs(ctx)], 1.0 if ctx.tiny else 20.0,
                      "ntk-sap")
    for case, job in pending:
        job["scores_path"] = str(_scores_path(scratch, case))
        results = [worker(job) for _ in range(1 if ctx.tiny else 2)]
        seconds = min(r["seconds"] for r in results)
        row = dict(case=case, model=job["model"], batch=job["batch"], R=job["repeats"], implementation=_label(job),
                   seconds=seconds, peak_mib=results[-1]["peak_mib"])
        slow_case = _job_case(dict(job, impl="slow"))
        slow = next((r for r in table.rows if r["case"] == slow_case), None)
        if job["impl"] != "slow" and slow is not None:
            row["speedup_vs_slow"] = float(slow["seconds"]) / seconds
            slow_path = _scores_path(scratch, slow_case)
            if slow_path.is_file():
                row["max_rel_diff_vs_slow"] = _rel(torch.load(job["scores_path"]), torch.load(slow_path))[1]
        table.add([row])
        ctx.log(f"    {seconds:.3f} s" + (f", x{row['speedup_vs_slow']:.2f} vs slow" if "speedup_vs_slow" in row else ""))
    write_markdown(ctx.results / "ntksap_speed.md", "NTK-SAP scoring speed: library vs the slow per-draw way", ctx,
                   time.perf_counter() - started, NTKSAP_FIELDS[1:], table.rows,
                   ["One scoring round (T = 1), the faster of two runs; same draws in every implementation; goal: "
                    ">= 5x the slow per-draw way. Diffs: max |a - b| / max |b|, b = the slow way's scores."])
    headlines = [f"NTK-SAP {r['model']} {r['implementation']}: {float(r['seconds']):.3f} s, "
                 f"x{float(r['speedup_vs_slow']):.2f} vs slow per-draw" for r in table.rows
                 if isinstance(r.get("speedup_vs_slow"), float)]
    return pending.outcome(headlines)


def _method_options(method: str) -> str:
    from torch_prune_ext.methods import resolve_method

    config = resolve_method(method).Config()
    return json.dumps({f.name: repr(getattr(config, f.name)) for f in dataclasses.fields(config)})


def round_times(ctx: Context) -> Outcome:
    """Step: seconds per scoring round of PX (its default options) and SynFlow on ResNet-20 and VGG-16-BN."""
    import torch_prune_ext as tpe
    from torch_prune_ext.models import get_model

    started = time.perf_counter()
    table = Table(ctx.results / "round_times.csv", ROUND_FIELDS)
    plan = [("resnet20", 4)] if ctx.tiny else [("resnet20", 100), ("vgg16_bn", 100)]
    cases = [(f"{model_name}/{method}/{images}", (model_name, method, images))
             for model_name, images in plan for method in ("px", "synflow")]
    pending = Pending(ctx, table, cases, 1.0 if ctx.tiny else 15.0, "round time")
    for case, (model_name, method, images) in pending:
        torch.manual_seed(0)
        model = get_model(model_name, num_classes=10).to(ctx.device)
        gen = torch.Generator().manual_seed(0)
        data = (torch.randn(images, 3, 32, 32, generator=gen).to(ctx.device),
                torch.randint(0, 10, (images,), generator=gen).to(ctx.device))
        tpe.compute_scores(model, method, data, seed=0)  # warm-up
        seconds = []
        for _ in range(1 if ctx.tiny else 3):
            ctx.synchronize()
            start = time.perf_counter()
            tpe.compute_scores(model, method, data, seed=0)
            ctx.synchronize()
            seconds.append(time.perf_counter() - start)
        table.add([dict(case=case, model=model_name, method=method, images=images,
                        seconds_median=statistics.median(seconds), seconds_min=min(seconds),
                        rounds_timed=len(seconds), options=_method_options(method))])
    write_markdown(ctx.results / "round_times.md", "Seconds per scoring round: PX and SynFlow", ctx,
                   time.perf_counter() - started, ROUND_FIELDS[1:-1], table.rows,
                   ["Gaussian images with random labels; one warm-up round, then the median of the timed rounds. "
                    "`options` in the CSV: the method's default Config used."])
    headlines = [f"{r['method']} {r['model']} ({r['images']} images): {float(r['seconds_median']):.3f} s/round"
                 for r in table.rows]
    return pending.outcome(headlines)


#: ``benchmarks/pruned_inference.py``: its arguments here, in one place for the lead to adjust (the step adds
#: ``--results-dir`` = the suite's results folder).
PRUNED_INFERENCE = ROOT / "benchmarks" / "pruned_inference.py"
PRUNED_INFERENCE_ARGS = {"full": ["--device", "cuda"], "tiny": ["--device", "cpu", "--quick"]}


def pruned_inference(ctx: Context) -> Outcome:
    """Step: accelerated VGG-16-BN / ResNet-20 vs dense end to end, by ``benchmarks/pruned_inference.py``."""
    if not ctx.budget.allows(10.0):
        return Outcome("partial", note="no budget left to start it")
    command = [sys.executable, str(PRUNED_INFERENCE), *PRUNED_INFERENCE_ARGS["tiny" if ctx.tiny else "full"],
               "--results-dir", str(ctx.results)]
    ctx.log("pruned inference: " + " ".join(command[1:]))
    log = ctx.results / "pruned_inference.log"
    with open(log, "w") as handle:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=dict(os.environ),
                                  timeout=max(ctx.budget.left(), 1.0)).returncode
        except subprocess.TimeoutExpired:
            return Outcome("partial", note=f"cut by the budget; output in {log.name}, the cases measured so far in "
                                           "pruned_inference.csv / .md")
    if code != 0:
        raise RuntimeError(f"{' '.join(command[1:])} exited with {code}; see {log}")
    return Outcome("complete", [f"pruned inference: see {log.name} and pruned_inference*.md / .csv / .png"])
