"""Fit one of RecBole's sequential models on a split written by bench/peers.py; run by RecBole's own
interpreter (RecBole 1.2.1 wants NumPy < 2 and older SciPy, so it lives in its own virtualenv).

    <recbole venv>/bin/python bench/recbole_fit.py --folder F --model SASRec --seed 42

F holds interactions.csv (user, item, position: the project's encoded ids and each user's history
order). RecBole reads them with position as the timestamp and splits leave-one-out in that order: its
test item is each user's last, its validation item the one before, as the project's leave_last_out
(positions are distinct within a user, so the two orders are the same order). Its
trainer early-stops on validation NDCG@10 (full ranking); the best model then scores every item for
each test user from their train + val history. Writes F/<model>.npy ([n_users, n_items] scores in the
project's ids) and F/<model>.json (fit seconds, RecBole's own test NDCG@10 and HR@10, which for
sequential models RecBole computes without masking the items a user already has: lower than the
project's evaluator gives the same scores, which masks train and val items as for every model).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

p = argparse.ArgumentParser()
p.add_argument("--folder", required=True)
p.add_argument("--model", required=True, choices=["SASRec", "GRU4Rec"])
p.add_argument("--seed", type=int, default=42)
p.add_argument("--epochs", type=int, default=200)
p.add_argument("--max-len", type=int, default=50)
p.add_argument("--batch-size", type=int, default=2048)  # RecBole's default train_batch_size
p.add_argument("--stopping-step", type=int, default=10)  # RecBole's default
p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
a = p.parse_args()
folder = Path(a.folder)

import os  # noqa: E402

# RecBole 1.2.1 reloads its best checkpoint with a plain torch.load, which torch >= 2.6 makes
# weights-only; the file is the one this very process wrote a minute before, so the old default is kept
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import get_model, init_seed  # noqa: E402
from recbole.utils.case_study import full_sort_scores  # noqa: E402

inter = pd.read_csv(folder / "interactions.csv")
n_users, n_items = json.loads((folder / "shape.json").read_text())
rb = folder / "recbole" / "split"
rb.mkdir(parents=True, exist_ok=True)
with open(rb / "split.inter", "w") as f:
    f.write("user_id:token\titem_id:token\ttimestamp:float\n")
    for u, i, t in inter[["user", "item", "position"]].itertuples(index=False):
        f.write(f"{u}\t{i}\t{t}\n")
config = Config(model=a.model, dataset="split", config_dict={
    "data_path": str(folder / "recbole"), "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp", "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "MAX_ITEM_LIST_LENGTH": a.max_len, "loss_type": "CE", "train_neg_sample_args": None,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["NDCG", "Hit"], "topk": [10], "valid_metric": "NDCG@10", "epochs": a.epochs, "stopping_step": a.stopping_step,
    "train_batch_size": a.batch_size, "eval_batch_size": 4096, "seed": a.seed, "reproducibility": True,
    # RecBole picks its device itself: the GPU gpu_id names when one is there, the CPU for an empty gpu_id
    "gpu_id": "" if a.device == "cpu" else "0", "show_progress": False, "checkpoint_dir": str(folder / "recbole" / "saved"),
    "worker": 0, "state": "ERROR",
})
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
trainer = Trainer(config, model)
t0 = time.perf_counter()
trainer.fit(train_data, valid_data, saved=True, show_progress=False)
seconds = time.perf_counter() - t0
result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
model = trainer.model.eval()
users = sorted(inter["user"].unique())
uid = dataset.token2id(dataset.uid_field, [str(u) for u in users])
with torch.no_grad():
    scores = full_sort_scores(uid, model, test_data).cpu().numpy()  # [n, RecBole's items + pad]
tokens = dataset.field2id_token[dataset.iid_field]  # RecBole id -> token (the project's item code)
table = np.full((n_users, n_items), -1e9, dtype=np.float32)
cols = np.array([j for j in range(1, len(tokens))])
ours = np.array([int(tokens[j]) for j in cols])
table[np.asarray(users)[:, None], ours[None, :]] = scores[:, cols]
np.save(folder / f"{a.model}.npy", table)
(folder / f"{a.model}.json").write_text(json.dumps({"seconds": seconds, "recbole_test": {k: float(v) for k, v in result.items()}}))
print(a.model, f"fit {seconds:.1f}s", dict(result), flush=True)
