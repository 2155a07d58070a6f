"""Multi-process training: seconds per epoch for 1 and 2 processes (DDP, gloo on CPU) in one run, and
on a GPU where the machine has one.

    python bench/ddp.py [--model mf] [--task implicit] [--epochs 2] [--ratings 1000209]

Synthetic data shaped like ML-1M (6,040 users x 3,706 items; `--ratings` of them, every rating a
positive, leave_last_out). Each configuration runs in its own process (`--child`), because a DDP launch
re-runs the command for its other ranks: 1 process with 1 torch thread, 1 process with 2 threads, 2
processes with 1 thread each (`strategy=ddp`, the same 2 cores), and `accelerator=gpu` with 1 device
when CUDA is there. Prints, per configuration, training seconds per epoch (validation included: every
process ranks the whole validation set), the epoch's examples per second over all processes, the
validation NDCG@10 (or RMSE) after the last epoch, and the ratio of seconds per epoch to the 1-process,
1-thread row. No MLflow: the training library alone, as `train` calls it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--model", default="mf")
p.add_argument("--task", default="implicit")
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--ratings", type=int, default=1_000_209)
p.add_argument("--child", default="")  # accelerator,devices,threads
a = p.parse_args()


def child():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from recsys import config, training
    from recsys.data import prepare as prep

    accelerator, devices, threads = a.child.split(",")
    raw = prep.load_raw("synthetic", 6040, 3706, a.ratings, seed=1)
    kw = {"split": "leave_last_out", "positive_threshold": 1} if a.task == "implicit" else {"split": "random"}
    data = prep.prepare(raw, task=a.task, seed=1, **kw)
    hp, cfg = config.load(a.model, None, {"epochs": a.epochs, "min_epochs": a.epochs, "accelerator": accelerator,
                                          "devices": devices, "threads": threads,
                                          "strategy": "ddp" if int(devices) > 1 else "auto"}, task=a.task)
    with tempfile.TemporaryDirectory() as tmp:
        result = training.fit(data, a.model, hp, cfg, None, Path(tmp))
    if result is None:  # rank 1
        return
    examples = result.module.train_batches.samples * result.world_size  # the last epoch's, all processes
    print("RESULT " + json.dumps({"seconds": result.seconds, "epochs": result.epochs, "world": result.world_size,
                                  "examples": examples, "score": result.best_score,
                                  "monitor": result.monitor, "threads": torch.get_num_threads()}), flush=True)


def main():
    import torch

    rows = [("cpu", 1, 1), ("cpu", 1, 2), ("cpu", 2, 1)] + ([("gpu", 1, 1)] if torch.cuda.is_available() else [])
    print(f"{a.model} {a.task}: {a.ratings:,} ratings, 6,040 x 3,706, {a.epochs} epochs; {os.cpu_count()} cores"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("| accelerator | processes | threads each | s / epoch | examples/s | val metric | ratio to 1 process |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for acc, dev, thr in rows:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", f"{acc},{dev},{thr}", "--model", a.model,
                              "--task", a.task, "--epochs", str(a.epochs), "--ratings", str(a.ratings)],
                             capture_output=True, text=True)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not lines:
            print(f"| {acc} | {dev} | {thr} | failed: {out.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(lines[-1][7:])
        per_epoch = r["seconds"] / max(r["epochs"], 1)
        base = base or per_epoch
        print(f"| {acc} | {r['world']} | {thr} | {per_epoch:.2f} | {r['examples'] / per_epoch:,.0f} | "
              f"{r['monitor']}={r['score']:.4f} | {per_epoch / base:.2f} |  (process wall {time.perf_counter() - t0:.0f}s)",
              flush=True)


child() if a.child else main()
