"""ML-25M- or ML-32M-sized, end to end: prepare, an early-stopped mf fit with the shipped config, test
ranking of every user, against the fastest bare PyTorch loop of the same model and loss and against
the `implicit` library's ALS, all in the same run.

    python bench/scale.py [--shape ml-25m|ml-32m] [--models mf] [--epochs 0] [--threads 2]
                          [--accelerator cpu] [--als-iterations 15] [--folder DIR] [--no-references]
    python bench/scale.py --models mf,sasrec    # and one sasrec epoch (--sequence-epochs), with its FLOPs
    python bench/scale.py --accelerator gpu --threads 4 --implicit-threads 16 [--precision bf16-mixed]

Synthetic data shaped like the MovieLens release (`--shape`; or `--ratings/--users/--items`), written
as a real `ratings.csv` (kept in `--folder` between runs), then, each step in its own child process so
that its peak RSS is its own:
1. prepare: the implicit task (leave_last_out, the default positive threshold 4), saved;
2. per model, a fit with the shipped config for task=implicit on this catalogue (for mf the `large:`
   overlay of configs/mf.yaml: sampled softmax over 256 shared negatives, batch 8,192, row-wise
   updates, validation on a seeded 10,000-user sample), early-stopped (`--epochs 0`) or cut at
   `--epochs`; then test through `recsys.evaluation.evaluate`: mf ranks every test user against every
   item, the others a seeded `--eval-users` sample. Printed: seconds per training epoch (validation
   apart), training examples/s, the whole fit, test NDCG@10;
3. the bare loops, one epoch each on the same rows: the same MF class, batch, loss (the sampled softmax,
   the same shared negatives and log-Q correction) and learning rate, pre-built tensors, no Lightning:
   with the row-wise optimizer (`recsys.training.optim.RowAdam`), with torch's SparseAdam (plus Adam for
   the offset), and with dense fused Adam;
4. `implicit`'s ALS (the `peers` extra) with the same factors and `--als-iterations` iterations on the
   same training rows, at its default (regularization, alpha) = (0.01, 1) and at (0.1, 10) and (1, 40),
   the best on validation scored by the same evaluator on every test user; the paired per-user
   NDCG@10 difference mf - ALS with its standard error (ddof=1).
No MLflow: the library as the steps call it (`mlflow run . -P dataset=<folder>/raw -P task=implicit`
times the whole pipeline; docs/scaling.md).
"""

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _common import matmul_gflops, pair_compute  # noqa: E402

SHAPES = {"ml-25m": (25_000_095, 162_541, 59_047), "ml-32m": (32_000_204, 200_948, 87_585)}
p = argparse.ArgumentParser()
p.add_argument("--shape", default="ml-25m", choices=sorted(SHAPES))
p.add_argument("--ratings", type=int, default=0)
p.add_argument("--users", type=int, default=0)
p.add_argument("--items", type=int, default=0)
p.add_argument("--models", default="mf")
p.add_argument("--epochs", type=int, default=0, help="0: the shipped config's early-stopped fit")
p.add_argument("--sequence-epochs", type=int, default=1, help="epochs of sasrec / gru4rec (0: early-stopped)")
p.add_argument("--accelerator", default="cpu")
p.add_argument("--precision", default="32-true", help="the pipeline's runtime.precision (bf16-mixed on a GPU)")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--eval-users", type=int, default=10_000, help="test sample for models other than mf")
p.add_argument("--als-iterations", type=int, default=15)
p.add_argument("--implicit-threads", type=int, default=2)
p.add_argument("--folder", default="", help="keep the data here (reused when it is there)")
p.add_argument("--no-references", action="store_true", help="skip the bare loops and ALS")
p.add_argument("--reuse-data", action="store_true", help="skip prepare where --folder holds its output")
p.add_argument("--profile", action="store_true", help="bare-rows: print torch's profile of 10 steps")
p.add_argument("--task", default="implicit", choices=["implicit", "rating"])
p.add_argument("--sequences", default="", help="a real set instead of synthetic data: `user item` lines in time order")
p.add_argument("--blend", default="", help="after the models, blend these of them (comma-separated) on validation")
p.add_argument("--doc", default="", help="write the table, with the command that made it, to this markdown file")
p.add_argument("--collect", default="", help="no runs: the table of these steps from the results earlier runs in "
               "--folder stored (benches of one folder run side by side, one per core, then one table)")
p.add_argument("--command", default="", help="with --collect: the commands that made the results, for the doc")
p.add_argument("--child", default="")
a = p.parse_args()
RATINGS, USERS, ITEMS = (a.ratings or SHAPES[a.shape][0], a.users or SHAPES[a.shape][1], a.items or SHAPES[a.shape][2])
SEQUENCE = ("sasrec", "gru4rec")
BARE = ("bare-rows", "bare-sparseadam", "bare-dense")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report(**kw):
    print("RESULT " + json.dumps({**kw, "peak_rss_gib": peak_gib()}), flush=True)


def epoch_timer():
    """A callback that splits each epoch's seconds into training and validation."""
    import pytorch_lightning as pl

    class Timer(pl.Callback):
        def __init__(self):
            self.train, self.val, self._t = [], [], 0.0

        def on_train_epoch_start(self, trainer, module):
            self._t = time.perf_counter()

        def on_validation_start(self, trainer, module):
            self.train.append(time.perf_counter() - self._t)
            self._v = time.perf_counter()

        def on_validation_end(self, trainer, module):
            self.val.append(time.perf_counter() - self._v)

    return Timer()


def sequence_flops(module, batches) -> float:
    """FLOPs of one training step (forward + backward) of the first minibatch, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    first = next(iter(batches))
    batch = first[0] if isinstance(first, list) else first
    with FlopCounterMode(display=False) as counter:
        module.training_loss(batch).backward()
    module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def save_per_user(folder: Path, name: str, per_user) -> None:
    per_user.to_parquet(folder / f"per-user-{name}.parquet")


def fit_child(step: str, folder: Path, data):
    from recsys import config, training

    epochs = a.sequence_epochs if step in SEQUENCE else a.epochs
    over = {"threads": a.threads, "accelerator": a.accelerator, "precision": a.precision,
            **({"epochs": epochs, "min_epochs": epochs} if epochs else {})}
    hp, cfg = config.load(step, None, over, task=a.task, n_items=data.n_items)
    timer = epoch_timer()
    extra = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = training.fit(data, step, hp, cfg, None, Path(tmp), callbacks=(timer,), epoch_lines=True)
        fit_s = time.perf_counter() - t
        shutil.copy(result.checkpoint, folder / f"{step}.ckpt")  # for --blend
    # a closed-form model (itemknn, ease) is fitted in one pass: no batches, no epochs
    batches = getattr(result.module, "train_batches", None)
    examples = batches.samples if batches is not None else len(data.train)
    if step in SEQUENCE:  # the compute it needs: FLOPs of a step x steps, against the machine's matmul rate
        module = result.module.train()
        per_step = sequence_flops(module, result.module.train_batches)
        extra = {"step_gflop": per_step / 1e9, "steps": result.module.train_batches.n_batches,
                 "matmul_gflops": matmul_gflops(next(module.parameters()).device)}
    if a.task == "implicit" and getattr(result.module.model, "scores_blocks", False):  # the pair models
        extra.update(pair_compute(result.module.model, data.n_users, data.n_items))
    return test_report(folder, step, result.module, data, fit_s=fit_s, epochs=result.epochs, epoch_train=timer.train,
                       epoch_val=timer.val, examples=examples, batch=cfg.batch_size, loss=result.loss,
                       updates=result.updates, best_val=result.best_score,
                       recipe=result.recipe.why if getattr(result, "recipe", None) else "", **extra)


def test_report(folder: Path, step: str, module, data, **kw):
    """Test through the evaluator (mf: every user; others a seeded sample), its per-user table saved."""
    import torch

    from recsys import evaluation
    from recsys.schema import TASKS

    t = time.perf_counter()
    n = 0 if step == "mf" or a.task == "rating" else a.eval_users
    with torch.no_grad():
        ev = evaluation.evaluate(module, data, "test", [10], "full", eval_users=n)
    save_per_user(folder, step, ev.per_user)
    m = ev.metrics
    return report(step=step, fit_seconds=kw.pop("fit_s"), eval_seconds=time.perf_counter() - t,
                  eval_users=int(m.get("test/n_users", len(ev.per_user))), headline=m[TASKS[a.task].key("test")],
                  hr=m.get("test/hr_at_10", float("nan")), **kw)


def blend_child(folder: Path, data):
    """The blend of --blend's fitted models: its weights cross-fitted on validation, then test."""
    from recsys import blend, scoring

    scorers = [scoring.load_scorer(folder / f"{m}.ckpt") for m in a.blend.split(",")]
    t = time.perf_counter()
    fitted, found = blend.fit(scorers, data)
    fit_s = time.perf_counter() - t
    return test_report(folder, "blend", fitted, data, fit_s=fit_s, epochs=0, epoch_train=[], epoch_val=[],
                       examples=0, batch=0, loss="", updates="", best_val=found["out_of_fold"],
                       weights=[round(float(w), 3) for w in found["weights"]], members=found["members"],
                       in_sample=found["in_sample"], verdict=blend.verdict(found, "min" if a.task == "rating" else "max"),
                       store_mib=found.get("store_bytes", 0) / 2**20)


def bare_child(step: str, data):
    """One epoch of mf's shipped large-catalogue training, written directly: the same MF class, loss,
    batch, negatives and learning rate; pre-built tensors, no Lightning, no chunks, no callbacks."""
    import numpy as np
    import torch

    from recsys import config
    from recsys.models.mf import MF
    from recsys.schema import ITEM, USER
    from recsys.training.batches import popularity_distribution
    from recsys.training.losses import catalogue_sampled_softmax
    from recsys.training.optim import RowAdam, use_row_updates

    hp, cfg = config.load("mf", task="implicit", n_items=data.n_items)
    device = torch.device("cuda" if a.accelerator == "gpu" else "cpu")
    u = torch.from_numpy(data.train[USER].to_numpy(np.int64)).to(device)
    i = torch.from_numpy(data.train[ITEM].to_numpy(np.int64)).to(device)
    torch.manual_seed(0)
    model = MF(data.n_users, data.n_items, **hp).to(device)
    if step == "bare-dense":
        opt, extra = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True), None
    elif step == "bare-rows":
        use_row_updates(model)
        opt, extra = RowAdam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True), None
    else:  # SparseAdam takes no weight decay and no dense tensor: a second optimizer for the offset
        use_row_updates(model)
        tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        opt, extra = torch.optim.SparseAdam(tables, lr=cfg.lr), torch.optim.Adam([model.offset], lr=cfg.lr)
    q, log_q = popularity_distribution(np.bincount(i.cpu().numpy(), minlength=data.n_items), data.n_items)
    log_q = log_q.to(device)
    bs, n_neg = cfg.batch_size, cfg.num_negatives
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    perm = torch.randperm(len(u), device=device)
    steps = math.ceil(len(u) / bs)
    negatives = torch.from_numpy(np.minimum(np.searchsorted(np.cumsum(q), rng.random((steps, n_neg))),
                                            data.n_items - 1)).to(device)
    profiler = None
    for j, s in enumerate(range(0, len(u), bs)):
        if a.profile and j == 10:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        if profiler is not None and j == 20:
            profiler.__exit__(None, None, None)
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
            profiler = None
        idx = perm[s:s + bs]
        loss = catalogue_sampled_softmax(model, {"user_id": u[idx], "item_id": i[idx], "negatives": negatives[j],
                                                 "log_q": log_q}, None)
        opt.zero_grad()
        if extra:
            extra.zero_grad()
        loss.backward()
        opt.step()
        if extra:
            extra.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return report(step=step, seconds=time.perf_counter() - t, examples=len(u), batch=bs)


ALS_GRID = ((0.01, 1.0), (0.1, 10.0), (1.0, 40.0))  # (regularization, alpha): implicit's defaults first


def als_child(folder: Path, data):
    """implicit's ALS with mf's factors and --als-iterations, at its default (regularization, alpha) and
    two stronger ones; the one with the best validation NDCG@10 (the same seeded 10,000-user sample mf
    validates on) is scored on every test user."""
    import numpy as np
    import scipy.sparse as sp
    import torch
    from implicit.cpu.als import AlternatingLeastSquares

    from recsys import config, evaluation
    from recsys.models.mf import MF
    from recsys.schema import ITEM, USER

    hp, cfg = config.load("mf", task="implicit", n_items=data.n_items)
    tr = data.train
    m = sp.csr_matrix((np.ones(len(tr), np.float32), (tr[USER].to_numpy(), tr[ITEM].to_numpy())),
                      shape=(data.n_users, data.n_items))

    class Fitted:  # ALS's factors in the project's MF (biases zero): scored by the same evaluator
        model = MF(data.n_users, data.n_items, embedding_dim=hp["embedding_dim"])

    fits, best = [], None
    for reg, alpha in ALS_GRID:
        als = AlternatingLeastSquares(factors=hp["embedding_dim"], iterations=a.als_iterations, regularization=reg,
                                      alpha=alpha, num_threads=a.implicit_threads, random_state=0)
        t = time.perf_counter()
        als.fit(m, show_progress=False)
        fit_s = time.perf_counter() - t
        with torch.no_grad():
            Fitted.model.user.weight.copy_(torch.from_numpy(np.asarray(als.user_factors)))
            Fitted.model.item.weight.copy_(torch.from_numpy(np.asarray(als.item_factors)))
            val = evaluation.evaluate(Fitted, data, "val", [10], "full", eval_users=cfg.val_users)
        fits.append({"regularization": reg, "alpha": alpha, "seconds": fit_s, "val_ndcg": val.metrics["val/ndcg_at_10"]})
        if best is None or fits[-1]["val_ndcg"] > best[0]["val_ndcg"]:
            best = (fits[-1], als.user_factors.copy(), als.item_factors.copy())
    with torch.no_grad():
        Fitted.model.user.weight.copy_(torch.from_numpy(np.asarray(best[1])))
        Fitted.model.item.weight.copy_(torch.from_numpy(np.asarray(best[2])))
    t = time.perf_counter()
    with torch.no_grad():
        ev = evaluation.evaluate(Fitted, data, "test", [10], "full")
    save_per_user(folder, "als", ev.per_user)
    return report(step="als", fits=fits, chosen=best[0], iterations=a.als_iterations, examples=int(m.nnz),
                  eval_seconds=time.perf_counter() - t, eval_users=int(ev.metrics["test/n_users"]),
                  headline=ev.metrics["test/ndcg_at_10"], hr=ev.metrics["test/hr_at_10"])


def cosine_child(folder: Path, data):
    """A plain cosine ItemKNN, written here and scored here, apart from the project's code: the reference
    its itemknn must at least match. Each item's COSINE_K most cosine-similar items (no shrink, no
    normalisation of scores), from the binary user x item matrix of what is known at test (train + val,
    as the protocol scores test); a user's score of an item is the sum of its similarities to their items;
    their own items are never ranked; the target's rank counts every item scoring at least as high (ties
    against it, as the project's evaluator counts them); a user with nothing known is ranked by
    popularity. NDCG@10 of the one test item, every test user."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from recsys.schema import ITEM, USER

    t0 = time.perf_counter()
    known = pd.concat([data.train, data.val])[[USER, ITEM]].drop_duplicates()
    x = sp.csr_matrix((np.ones(len(known), np.float32), (known[USER].to_numpy(), known[ITEM].to_numpy())),
                      shape=(data.n_users, data.n_items))
    norm = np.sqrt(np.asarray(x.sum(0)).ravel())
    norm[norm == 0] = 1.0
    sim = (x.T @ x).tocsr().astype(np.float32)
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    inv = sp.diags(1.0 / norm.astype(np.float32))
    sim = (inv @ sim @ inv).tocsr()
    rows = []
    for i in range(data.n_items):  # keep each item's COSINE_K nearest
        lo, hi = sim.indptr[i], sim.indptr[i + 1]
        keep = np.argsort(-sim.data[lo:hi], kind="stable")[:COSINE_K] + lo
        rows.append((np.full(len(keep), i), sim.indices[keep], sim.data[keep]))
    r, c, v = (np.concatenate(z) for z in zip(*rows))
    sim = sp.csr_matrix((v, (r, c)), shape=sim.shape)
    fit_s = time.perf_counter() - t0
    popularity = np.asarray(x.sum(0)).ravel()
    test = data.test
    users, targets = test[USER].to_numpy(), test[ITEM].to_numpy()
    ndcg = np.zeros(len(users))
    t = time.perf_counter()
    for s in range(0, len(users), 2048):
        u = users[s:s + 2048]
        scores = (x[u] @ sim).toarray()
        empty = np.asarray(x[u].sum(1)).ravel() == 0
        scores[empty] = popularity
        seen = x[u].tocoo()
        scores[seen.row, seen.col] = -np.inf
        target = scores[np.arange(len(u)), targets[s:s + 2048]][:, None]
        rank = (scores >= target).sum(1)
        ndcg[s:s + 2048] = np.where(rank <= 10, 1.0 / np.log2(rank + 1), 0.0)
    save_per_user(folder, "cosine", pd.DataFrame({"user": users, "ndcg_at_10": ndcg}))
    return report(step="cosine", fit_seconds=fit_s, eval_seconds=time.perf_counter() - t, eval_users=len(users),
                  headline=float(ndcg.mean()), hr=float((ndcg > 0).mean()), epochs=0, epoch_train=[],
                  epoch_val=[], examples=int(x.nnz), batch=0, loss="", updates="", best_val=float("nan"))


COSINE_K = 100  # the reference ItemKNN's neighbours


def child():
    import torch

    from recsys.data import prepare as prep

    torch.set_num_threads(a.threads)
    folder = Path(a.folder)
    if a.child == "prepare":
        t = time.perf_counter()
        split = "leave_last_out" if a.task == "implicit" else "random"
        data = prep.prepare(prep.load_raw(str(folder / "raw")), task=a.task, split=split, seed=42)
        prep.save(data, folder / "data")
        return report(step="prepare", seconds=time.perf_counter() - t, rows=int(data.meta["n_interactions"]),
                      train=len(data.train), users=data.n_users, items=data.n_items)
    data = prep.load(folder / "data")
    if a.child in BARE:
        return bare_child(a.child, data)
    if a.child == "als":
        return als_child(folder, data)
    if a.child == "blend":
        return blend_child(folder, data)
    if a.child == "cosine":
        return cosine_child(folder, data)
    return fit_child(a.child, folder, data)


def run(step, folder):
    t = time.perf_counter()
    args = [sys.executable, __file__, "--child", step, "--folder", str(folder)]
    if a.profile:
        args.append("--profile")
    for k in ("threads", "accelerator", "precision", "sequence_epochs", "eval_users", "implicit_threads", "epochs",
              "als_iterations", "task", "blend"):
        args += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
    # implicit's ALS asks for a single-threaded BLAS (it parallelises over users itself)
    env = {**os.environ, **({"OPENBLAS_NUM_THREADS": "1"} if step == "als" else {})}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stdout:  # a fit's epoch lines as they come
        if line.startswith("RESULT "):
            lines.append(line)
        elif line.startswith(("epoch ", f"{step} epoch ")):
            print(f"  {step}: {line.strip()}", flush=True)
    err = proc.stderr.read()
    if a.profile and step == "bare-rows":
        print(err[err.find("---"):], flush=True)
    if proc.wait() or not lines:
        said = [ln for ln in err.strip().splitlines() if "Error: " in ln or ln.startswith("error: ")]
        print(f"{step}: failed ({err.strip().splitlines()[-3:]})", flush=True)
        return {"failed": (said[-1].split("Error: ", 1)[-1] if said else "see the bench's output").replace("|", "/")}
    r = json.loads(lines[-1][7:])
    r["wall"] = time.perf_counter() - t
    return r


def paired(folder: Path, x: str, y: str, short: bool = False) -> str:
    """x - y in the headline's per-user units (NDCG@10; MSE for ratings), paired over the test users both
    ranked (mf ranks every user, the others a seeded sample of them), standard error ddof=1."""
    import pandas as pd

    from recsys import paired as paired_stats

    px, py = (pd.read_parquet(folder / f"per-user-{m}.parquet") for m in (x, y))
    shared = set(px["user"]) & set(py["user"])
    t = paired_stats.paired_test(px[px["user"].isin(shared)], py[py["user"].isin(shared)], a.task)
    if short:
        return f"{t['delta']:+.4f} ± {t['se']:.4f}"
    return (f"{t['delta']:+.4f} ± {t['se']:.4f} (paired over {t['n']:,} test users; "
            f"{t['delta'] / t['se']:+.1f} standard errors)")


def write_raw(folder: Path) -> None:
    """raw/ratings.csv (+ movies.csv): synthetic, or --sequences' `user item` lines (time = line order)."""
    from recsys.data import synthetic

    if (folder / "raw" / "ratings.csv").exists():
        return
    t = time.perf_counter()
    if not a.sequences:
        synthetic.write_ratings_csv(folder / "raw", USERS, ITEMS, RATINGS, seed=1)
        print(f"ratings.csv: {RATINGS:,} ratings, {USERS:,} x {ITEMS:,} written in {time.perf_counter() - t:.0f}s",
              flush=True)
        return
    import pandas as pd

    lines = pd.read_csv(a.sequences, sep=" ", header=None, names=["userId", "movieId"])
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    lines.assign(rating=5.0, timestamp=range(len(lines))).to_csv(folder / "raw" / "ratings.csv", index=False)
    pd.DataFrame({"movieId": sorted(lines["movieId"].unique())}).assign(
        title=lambda d: "item " + d["movieId"].astype(str), genres="(no genres listed)").to_csv(
        folder / "raw" / "movies.csv", index=False)
    print(f"{a.sequences}: {len(lines):,} interactions, {lines['userId'].nunique():,} users x "
          f"{lines['movieId'].nunique():,} items", flush=True)


def describe(step: str, r: dict) -> str:
    unit = "RMSE" if a.task == "rating" else "NDCG@10"
    test = f"test {unit} {r['headline']:.4f} over {r['eval_users']:,} users in {r['eval_seconds']:.0f}s"
    if step == "cosine":
        return (f"reference: a plain cosine ItemKNN (k {COSINE_K}, no shrink) written and scored by this bench from "
                f"train + val, built in {r['fit_seconds']:.0f}s; {test}")
    if step == "als":
        tried = "; ".join(f"reg {f['regularization']}, alpha {f['alpha']}: {f['seconds']:.0f}s, val {f['val_ndcg']:.4f}"
                          for f in r["fits"])
        return f"{r['iterations']} iterations at ({tried}); chosen on validation: {test}"
    if step == "blend":
        return (f"weights {r['weights']} on validation ({r['verdict'] or 'earns its row'}; out of fold "
                f"{r['best_val']:.4f}, in sample {r['in_sample']:.4f}, members {[round(x, 4) for x in r['members']]}); "
                f"fitted in {r['fit_seconds']:.0f}s" + (f", its rank store {r['store_mib']:.0f} MiB" if a.task == "implicit"
                                                       else "") + f"; {test}")
    if not r["epoch_train"]:
        return f"closed form: fit and validation {r['fit_seconds']:.0f}s (validation {r['best_val']:.4f}); {test}"
    train_s = sorted(r["epoch_train"])[len(r["epoch_train"]) // 2]
    out = (f"{r['epochs']} epochs in {r['fit_seconds']:.0f}s ({r['loss']}, updates {r['updates']}, batch {r['batch']}): "
           f"a training epoch {train_s:.1f}s ({r['examples'] / train_s:,.0f} "
           f"{'windows' if step in SEQUENCE else 'examples'}/s), its validation "
           f"{sum(r['epoch_val']) / max(1, len(r['epoch_val'])):.1f}s; {test}")
    if r.get("recipe"):
        out += f"; recipe: {r['recipe']}"
    if "pair_flops" in r:
        limit = r["matmul_gflops"] * 1e9 / r["pair_flops"]
        out += (f"; ranking: {r['pair_flops']:,.0f} FLOPs a pair, {r['pairs_per_s'] / 1e6:.2f}M pairs/s = "
                f"{r['pairs_per_s'] / limit:.2f} of the {limit / 1e6:.2f}M pairs/s this machine's "
                f"{r['matmul_gflops']:.0f} GFLOP/s matmul rate allows")
    if "step_gflop" in r:
        need = r["step_gflop"] * r["steps"] / r["matmul_gflops"]
        out += (f"; compute: {r['step_gflop']:.2f} GFLOP a step x {r['steps']:,} steps = {need:.0f}s at this "
                f"machine's {r['matmul_gflops']:.0f} GFLOP/s")
    return out


def main(folder: Path):
    write_raw(folder)
    print(f"{a.sequences or (a.shape if not a.ratings else 'custom')}, task {a.task}: torch threads {a.threads}, "
          f"accelerator {a.accelerator}, precision {a.precision}", flush=True)
    rows, results = [], {}
    if a.reuse_data and (folder / "prepare.json").exists():
        prep = json.loads((folder / "prepare.json").read_text())
        print("prepare: reused from an earlier run of this bench (its figures below are that run's)", flush=True)
    else:
        prep = run("prepare", folder)
        if prep is None or "failed" in prep:
            return
        (folder / "prepare.json").write_text(json.dumps(prep))
    print(f"prepare: {prep['rows']:,} rows, {prep['train']:,} training rows, {prep['users']:,} users x "
          f"{prep['items']:,} items", flush=True)
    rows.append(("prepare", prep["wall"], prep["peak_rss_gib"], f"{prep['seconds']:.0f}s in prepare + save", ""))
    refs = [] if a.no_references else [*BARE, "als"]
    stored = folder / "results"
    stored.mkdir(exist_ok=True)
    steps = a.collect.split(",") if a.collect else [*filter(None, a.models.split(",")), *(["blend"] if a.blend else []),
                                                     *refs]
    for step in steps:
        if a.collect:
            r = json.loads((stored / f"{step}.json").read_text())
        else:
            r = run(step, folder)
            (stored / f"{step}.json").write_text(json.dumps(r))
        if r is None or "failed" in r:
            rows.append((step, float("nan"), float("nan"), f"refused or failed: {r['failed'] if r else ''}", ""))
            continue
        results[step] = r
        if step in BARE:
            r["rate"] = r["examples"] / r["seconds"]
            detail = f"1 epoch {r['seconds']:.1f}s: {r['rate']:,.0f} examples/s (batch {r['batch']})"
        else:
            detail = describe(step, r)
        rows.append((step, r["wall"], r["peak_rss_gib"], detail, ""))
        print(f"{step}: {detail}", flush=True)
    base = "mf" if "mf" in results else None
    table = ["| step | wall s | peak RSS GiB | test − mf, paired | what |", "|---|---|---|---|---|"]
    for name, wall, rss, detail, _ in rows:
        diff = paired(folder, name, base, short=True) if base and name in results and name not in (*BARE, base) \
            and (folder / f"per-user-{name}.parquet").exists() else ""
        table.append(f"| {name} | {wall:.0f} | {rss:.2f} | {diff} | {detail} |" if wall == wall else f"| {name} | - | - | | {detail} |")
    print("\n" + "\n".join(table))
    bare = {k: results[k]["rate"] for k in BARE if k in results}
    if "mf" in results and bare:
        best = max(bare, key=bare.get)
        print(f"\npipeline mf / fastest bare loop ({best}) examples/s: "
              f"{results['mf']['examples'] / sorted(results['mf']['epoch_train'])[0] / bare[best]:.2f}")
    if "mf" in results and "als" in results:
        print(f"mf - ALS test NDCG@10: {paired(folder, 'mf', 'als')}")
    if a.doc:
        args = sys.argv[1:]  # paths as their last part: the doc names no machine's folders
        command = a.command or "python bench/scale.py " + " ".join(
            Path(x).name if i and args[i - 1] in ("--folder", "--sequences", "--doc") else x for i, x in enumerate(args))
        Path(a.doc).write_text(
            f"<!-- generated by bench/scale.py: do not edit -->\n`{command}`\n\n"
            f"{prep['rows']:,} rows, {prep['train']:,} training rows, {prep['users']:,} users x {prep['items']:,} "
            f"items, task {a.task}; torch threads {a.threads}. The paired column is the test headline's per-user "
            f"difference to mf ({'MSE' if a.task == 'rating' else 'NDCG@10'}; standard error ddof=1) over the users "
            f"both ranked.\n\n" + "\n".join(table) + "\n")
        print(f"wrote {a.doc}")


if a.child:
    child()
elif a.folder:
    Path(a.folder).mkdir(parents=True, exist_ok=True)
    main(Path(a.folder))
else:
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
