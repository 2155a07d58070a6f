"""ML-25M-sized, end to end: prepare, train one epoch and evaluate mf and ncf on the implicit task.

    python bench/scale.py [--ratings 25000095] [--users 162541] [--items 59047] [--models mf,ncf]
                          [--accelerator cpu] [--threads 2] [--eval-users 10000] [--implicit-threads 2]
    python bench/scale.py --models sasrec --no-references      # one sampled-softmax epoch of sasrec

Synthetic data shaped like ML-25M, written as a real `ratings.csv`, then, each step in its own child
process so that its peak RSS is its own:
1. prepare: the implicit task (leave_last_out, the default positive threshold 4), saved;
2. per model, train one epoch (the shipped implicit config; validation ranking on a seeded sample of
   `--eval-users` users) and evaluate on test: mf ranks every test user against all items (blocked
   matrix products), the others a seeded sample of `--eval-users` users (full ranking for all would take
   hours), all through `recsys.evaluation.evaluate`; sasrec and gru4rec train with the sampled softmax
   (256 popularity-drawn negatives shared by a batch, log-Q corrected), the loss for catalogues whose
   full softmax does not fit;
3. in the same run, on the same training rows: a bare PyTorch loop (the same MF class, batch size,
   optimiser, BCE with the same number of redrawn negatives; pre-built tensors, no Lightning), and the
   `implicit` library's BPR (from the `peers` extra; one epoch, the same factors) on the same rows.
Prints wall seconds and peak RSS per step, training examples/s for the pipeline, the bare loop and
`implicit`, and the test metrics. No MLflow: the library as the steps call it (MLflow's own cost per
step is the quickstart bench's). Target: everything within a 24 GiB machine.
"""

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
p = argparse.ArgumentParser()
p.add_argument("--ratings", type=int, default=25_000_095)
p.add_argument("--users", type=int, default=162_541)
p.add_argument("--items", type=int, default=59_047)
p.add_argument("--models", default="mf,ncf")
p.add_argument("--accelerator", default="cpu")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--eval-users", type=int, default=10_000)
p.add_argument("--implicit-threads", type=int, default=2)
p.add_argument("--child", default="")
p.add_argument("--folder", default="")
p.add_argument("--no-references", action="store_true", help="skip the bare loop and implicit's BPR")
a = p.parse_args()


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report(**kw):
    print("RESULT " + json.dumps({**kw, "peak_rss_gib": peak_gib()}), flush=True)


def child():
    import torch

    from recsys.data import prepare as prep

    torch.set_num_threads(a.threads)
    folder = Path(a.folder)
    step = a.child
    if step == "prepare":
        t = time.perf_counter()
        data = prep.prepare(prep.load_raw(str(folder / "raw")), task="implicit", split="leave_last_out", seed=42)
        prep.save(data, folder / "data")
        return report(step="prepare", seconds=time.perf_counter() - t, rows=int(data.meta["n_interactions"]),
                      train=len(data.train), users=data.n_users, items=data.n_items)
    t = time.perf_counter()
    data = prep.load(folder / "data")
    load_s = time.perf_counter() - t
    if step in ("mf", "ncf", "sasrec", "gru4rec"):
        from recsys import config, evaluation, training

        sampled = {"loss": "sampled_softmax", "num_negatives": 256} if step in ("sasrec", "gru4rec") else {}
        hp, cfg = config.load(step, None, {"epochs": 1, "min_epochs": 1, "threads": a.threads,
                                           "accelerator": a.accelerator, **sampled}, task="implicit")
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            result = training.fit(data, step, hp, cfg, None, Path(tmp), val_users=a.eval_users)
            fit_s = time.perf_counter() - t
        examples = result.module.train_batches.samples
        t = time.perf_counter()
        n = 0 if step == "mf" else a.eval_users
        ev = evaluation.evaluate(result.module, data, "test", [10], "full", eval_users=n)
        return report(step=step, load_seconds=load_s, fit_seconds=fit_s, train_seconds=result.seconds,
                      examples=examples, eval_seconds=time.perf_counter() - t,
                      eval_users=int(ev.metrics["test/n_users"]), ndcg=ev.metrics["test/ndcg_at_10"],
                      hr=ev.metrics["test/hr_at_10"], batch=cfg.batch_size)
    if step == "bare":
        import numpy as np
        import torch.nn.functional as F

        from recsys import config
        from recsys.data.negatives import sample_train_negatives, sorted_keys
        from recsys.models.mf import MF
        from recsys.schema import ITEM, USER

        hp, cfg = config.load("mf", task="implicit")
        device = torch.device("cuda" if a.accelerator == "gpu" else "cpu")
        u, i = data.train[USER].to_numpy(np.int64), data.train[ITEM].to_numpy(np.int64)
        model = MF(data.n_users, data.n_items, **hp).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)  # as the pipeline
        t = time.perf_counter()
        rng = np.random.default_rng(0)
        neg_u = u.repeat(cfg.num_negatives)
        neg = sample_train_negatives(neg_u, data.n_items, sorted_keys(u, i, data.n_items), rng)
        users = torch.from_numpy(np.concatenate([u, neg_u])).to(device)
        items = torch.from_numpy(np.concatenate([i, neg])).to(device)
        target = torch.cat([torch.ones(len(u)), torch.zeros(len(neg_u))]).to(device)
        perm = torch.randperm(len(users), device=device)
        bs = cfg.batch_size
        for s in range(0, len(users), bs):
            idx = perm[s:s + bs]
            loss = F.binary_cross_entropy_with_logits(model(users[idx], items[idx]), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return report(step="bare", seconds=time.perf_counter() - t, examples=len(users), batch=bs)
    if step == "implicit":
        import numpy as np
        import scipy.sparse as sp
        from implicit.bpr import BayesianPersonalizedRanking

        from recsys import config
        from recsys.schema import ITEM, USER

        hp, _ = config.load("mf", task="implicit")
        tr = data.train
        m = sp.csr_matrix((np.ones(len(tr), np.float32), (tr[USER].to_numpy(), tr[ITEM].to_numpy())),
                          shape=(data.n_users, data.n_items))
        bpr = BayesianPersonalizedRanking(factors=hp["embedding_dim"], iterations=1, num_threads=a.implicit_threads,
                                          random_state=0)
        t = time.perf_counter()
        bpr.fit(m, show_progress=False)
        return report(step="implicit", seconds=time.perf_counter() - t, examples=int(m.nnz))


def run(step, folder):
    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", step, "--folder", str(folder), "--threads",
                          str(a.threads), "--accelerator", a.accelerator, "--eval-users", str(a.eval_users),
                          "--implicit-threads", str(a.implicit_threads)], capture_output=True, text=True)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not lines:
        print(f"{step}: failed ({out.stderr.strip().splitlines()[-3:]})", flush=True)
        return None
    r = json.loads(lines[-1][7:])
    r["wall"] = time.perf_counter() - t
    return r


def main():
    from recsys.data import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        synthetic.write_ratings_csv(folder / "raw", a.users, a.items, a.ratings, seed=1)
        print(f"ratings.csv: {a.ratings:,} ratings, {a.users:,} x {a.items:,} written in "
              f"{time.perf_counter() - t:.0f}s; torch threads {a.threads}, accelerator {a.accelerator}", flush=True)
        rows = []
        prep = run("prepare", folder)
        if prep is None:
            return
        print(f"prepare: {prep['rows']:,} positives, {prep['train']:,} training rows, {prep['users']:,} users x "
              f"{prep['items']:,} items", flush=True)
        rows.append(("prepare", prep["wall"], prep["peak_rss_gib"], f"{prep['seconds']:.0f}s in prepare + save"))
        results = {}
        for step in [*a.models.split(","), *([] if a.no_references else ["bare", "implicit"])]:
            r = run(step, folder)
            if r is None:
                continue
            results[step] = r
            if step in ("mf", "ncf", "sasrec", "gru4rec"):
                rate = r["examples"] / r["train_seconds"]
                unit = "windows" if step in ("sasrec", "gru4rec") else "examples"
                detail = (f"1 epoch {r['train_seconds']:.0f}s ({rate:,.0f} {unit}/s, batch {r['batch']}, "
                          f"validation on {a.eval_users:,} users included); test NDCG@10 {r['ndcg']:.4f}, "
                          f"HR@10 {r['hr']:.4f} over {r['eval_users']:,} users in {r['eval_seconds']:.0f}s")
            else:
                rate = r["examples"] / r["seconds"]
                detail = f"{r['examples']:,} examples in {r['seconds']:.0f}s ({rate:,.0f} examples/s)"
            r["rate"] = rate
            rows.append((step, r["wall"], r["peak_rss_gib"], detail))
            print(f"{step}: {detail}", flush=True)
        print("\n| step | wall s | peak RSS GiB | what |\n|---|---|---|---|")
        for name, wall, rss, detail in rows:
            print(f"| {name} | {wall:.0f} | {rss:.2f} | {detail} |")
        if "mf" in results and "bare" in results:
            print(f"\npipeline mf / bare loop examples/s: {results['mf']['rate'] / results['bare']['rate']:.2f} "
                  "(the pipeline's epoch includes its validation ranking)")
        if "mf" in results and "implicit" in results:
            print(f"pipeline mf / implicit BPR examples/s: {results['mf']['rate'] / results['implicit']['rate']:.2f} "
                  f"(BPR: one (user, positive, negative) triple per training row; mf: BCE over each positive and "
                  f"its negatives)")


child() if a.child else main()
