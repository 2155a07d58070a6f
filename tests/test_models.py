import numpy as np
import pytest
import torch
import yaml

from recsys import config, scoring, training
from recsys.data import features
from recsys.errors import RecsysError
from recsys.models import MODEL_NAMES, build_model, model_class
from recsys.models.base import Model
from recsys.training.batches import LISTS, TensorBatches

MODELS = {name: model_class(name) for name in MODEL_NAMES}  # every trainable model, imported

FAST = {"epochs": 2, "min_epochs": 0, "patience": 5, "batch_size": 256, "threads": 1}


def _model(name, data, **overrides):
    tables = features.build(data.users, data.items)
    hp, _ = config.load(name, overrides=overrides)
    model = build_model(name, data.n_users, data.n_items, tables.spec(), **hp)
    if model.uses_features:
        model.set_tables(tables.user_cont, tables.user_cat, tables.item_cont, tables.item_cat)
    return model


def _module(name, data, hp, **kw):
    return training.TrainingModule(model_name=name, n_users=data.n_users, n_items=data.n_items,
                                features=features.build(data.users, data.items).spec(), model_hparams=hp, task="rating",
                                rating_min=1.0, rating_max=5.0, scheduler="none", loss="mse", total_steps=10, **kw)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_outputs_one_score_per_pair(name, rating_data):
    model = _model(name, rating_data)
    out = model(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]))
    assert out.shape == (3,) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", [m for m in MODELS if not MODELS[m].closed_form and not MODELS[m].uses_history])
def test_loss_falls_over_a_few_steps(name, rating_data):  # sequence models: tests/test_sequence.py
    torch.manual_seed(0)
    module = _module(name, rating_data, config.load(name)[0], lr=0.01, weight_decay=0.0, optimizer="adam",
                     net_weight_decay=0.0, bias_weight_decay=0.0)
    tr = rating_data.train
    batch = {"user_id": torch.tensor(tr["user"].to_numpy()[:512], dtype=torch.long),
             "item_id": torch.tensor(tr["item"].to_numpy()[:512], dtype=torch.long),
             "target": torch.tensor(tr["rating"].to_numpy()[:512])}
    opt = module.configure_optimizers()
    first = module.training_loss(batch).item()
    for _ in range(30):
        opt.zero_grad()
        module.training_loss(batch).backward()
        opt.step()
    assert module.training_loss(batch).item() < first


@pytest.mark.parametrize("name, task", [(m, t) for m in MODELS for t in ("rating", "implicit")
                                         if t == "implicit" or not (MODELS[m].uses_history or MODELS[m].implicit_only)])
def test_fit_and_checkpoint_round_trip_give_identical_predictions(name, task, rating_data, implicit_data):
    data = rating_data if task == "rating" else implicit_data
    hp, cfg = config.load(name, overrides=FAST, task=task)
    result = training.fit(data, name, hp, cfg)
    back = scoring.load_scorer(result.checkpoint)
    u, i = torch.arange(20) % data.n_users, torch.arange(20) % data.n_items
    with torch.no_grad():
        assert torch.equal(result.module(u, i), back(u, i))
    assert np.isfinite(result.best_score)


def test_mf_beats_the_global_mean_on_synthetic_data(rating_data):
    scores = {}
    for name in ("global_mean", "mf"):
        hp, cfg = config.load(name, overrides={"epochs": 8, "min_epochs": 8, "batch_size": 64, "threads": 1})
        scores[name] = training.fit(rating_data, name, hp, cfg).best_score
    assert scores["mf"] < scores["global_mean"] - 0.02


def test_same_seed_gives_the_same_metrics(implicit_data):
    hp, cfg = config.load("mf", overrides=FAST, task="implicit")
    a = training.fit(implicit_data, "mf", hp, cfg).best_score
    b = training.fit(implicit_data, "mf", hp, cfg).best_score
    assert a == b


def test_training_negatives_are_redrawn_every_epoch():
    tb = TensorBatches(np.array([0, 1]), np.array([0, 1]), np.ones(2), batch_size=100, n_items=50,
                                num_negatives=20, seen_keys=np.array([0, 51]))
    e1, e2 = next(iter(tb)), next(iter(tb))
    assert not torch.equal(e1["item_id"].sort().values, e2["item_id"].sort().values)
    assert (e1["target"] == 0).sum() == 40


# --- config strictness ---------------------------------------------------------------------------
def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(RecsysError, match="unknown model 'svd'.*mf, ncf"):
        config.load("svd")


def test_misspelt_override_is_an_error_that_names_the_closest_key():
    with pytest.raises(RecsysError, match="unknown parameter 'embeding_dim' for model mf; did you mean 'embedding_dim'"):
        config.load("mf", overrides={"embeding_dim": "8"})


@pytest.mark.parametrize("override, message", [
    ({"lr": "0"}, "lr=0: input should be greater than 0"),
    ({"embedding_dim": "0"}, "embedding_dim=0: input should be greater than 0"),
    ({"lr": "fast"}, "lr='fast': input should be a valid number"),
    ({"lr": ".inf"}, "lr=inf: input should be a finite number"),
    ({"lr": "1e300"}, "lr='1e300': input should be less than or equal to 1000000"),
    ({"batch_size": "1.5"}, "batch_size=1.5: input should be a valid integer"),
    ({"optimizer": "sgd"}, "optimizer='sgd': is not one of adam, adamw"),
    ({"seed": "-1"}, "seed=-1: input should be greater than or equal to 0"),
    ({"threads": "-1"}, "runtime.threads=-1: input should be greater than or equal to 0"),
])
def test_wrong_types_and_ranges_are_one_line_errors(override, message):
    with pytest.raises(RecsysError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        config.load("mf", overrides=override)
    assert "\n" not in str(e.value)


def test_dropout_outside_unit_interval_is_an_error():
    with pytest.raises(RecsysError, match=r"dropout=1.0: input should be less than 1"):
        config.load("autoint", overrides={"dropout": "1.0"})


def _write(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return f


def test_scientific_notation_in_yaml_reads_as_the_number_it_is(tmp_path):
    text = (config.CONFIG_DIR / "mf.yaml").read_text().replace("lr: 0.003", "lr: 1e-3")
    assert config.load("mf", _write(tmp_path, text))[1].lr == 0.001


def test_unknown_keys_are_errors_and_missing_ones_come_from_the_defaults(tmp_path):
    base = (config.CONFIG_DIR / "mf.yaml").read_text()
    with pytest.raises(RecsysError, match=r"unknown key 'embedding_size'; did you mean 'embedding_dim'"):
        config.load("mf", _write(tmp_path, base.replace("embedding_dim:", "embedding_size:", 1)))
    with pytest.raises(RecsysError, match=r"unknown section 'trainig'; did you mean 'training'"):
        config.load("mf", _write(tmp_path, base.replace("training:", "trainig:")))
    hp, cfg = config.load("mf", _write(tmp_path, "model: {embedding_dim: 8}\n"))
    defaults = yaml.safe_load((config.CONFIG_DIR / "defaults.yaml").read_text())
    assert hp == {"embedding_dim": 8, "init_std": 0.01}  # the constructor's defaults for what the file omits
    assert cfg.model_dump(exclude={"runtime"}) == defaults["training"]
    assert cfg.runtime.model_dump() == defaults["runtime"]


def test_a_config_that_is_a_folder_or_not_text_is_a_one_line_error(tmp_path):
    with pytest.raises(RecsysError, match="does not exist or is not a file"):
        config.load("mf", tmp_path)
    binary = tmp_path / "c.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RecsysError, match="is not valid YAML"):
        config.load("mf", binary)


def test_model_files_hold_only_what_differs_from_the_defaults():
    defaults = yaml.safe_load((config.CONFIG_DIR / "defaults.yaml").read_text())
    for name in MODELS:
        doc = yaml.safe_load((config.CONFIG_DIR / f"{name}.yaml").read_text())
        assert "runtime" not in doc, name  # runtime settings are not a model's
        same = {k for k, v in (doc.get("training") or {}).items() if defaults["training"][k] == v}
        assert not same, f"{name}.yaml repeats the defaults {sorted(same)}"
        hp, cfg = config.load(name, task="implicit")
        base_hp, base_cfg = config.load(name, task="rating")
        moot = {k for k, v in (doc.get("implicit") or {}).items()
                if (base_hp.get(k) if k in base_hp else getattr(base_cfg, k)) == v}
        assert not moot, f"{name}.yaml's implicit: repeats {sorted(moot)}"


@pytest.mark.parametrize("name", list(MODELS))
def test_every_shipped_config_loads_for_both_tasks(name):
    import yaml

    for task in ("rating", "implicit"):
        hp, cfg = config.load(name, task=task)
        doc = yaml.safe_load((config.CONFIG_DIR / f"{name}.yaml").read_text()) or {}
        layered = {**(doc.get("model") or {}), **(doc.get("training") or {}),
                   **((doc.get("implicit") or {}) if task == "implicit" else {})}
        assert layered  # every model's file sets something
        for key, value in layered.items():  # what the file sets is what loads (no layer lost on the way)
            assert (getattr(cfg, key) if key in cfg.model_fields else hp[key]) == value, (name, task, key)


def test_bpr_loss_trains_mf_on_implicit_data_and_is_refused_for_ratings(implicit_data, rating_data):
    hp, cfg = config.load("mf", overrides={**FAST, "loss": "bpr"}, task="implicit")
    assert np.isfinite(training.fit(implicit_data, "mf", hp, cfg).best_score)
    hp, cfg = config.load("mf", overrides={**FAST, "loss": "bpr"})
    with pytest.raises(RecsysError, match="loss=bpr needs task=implicit"):
        training.fit(rating_data, "mf", hp, cfg)


def test_model_capabilities_are_declared_and_match_the_methods_they_promise():
    for name, cls in MODELS.items():
        assert cls.scores_catalogue == hasattr(cls, "score_matrix"), name
        assert cls.scores_blocks == hasattr(cls, "score_block"), name
        assert cls.closed_form == (cls.fit is not Model.fit), name
        assert cls.uses_features == (cls.set_tables is not Model.set_tables), name
        assert cls.answers_histories == (cls.set_known is not Model.set_known), name  # scores from what is known
        assert cls.answers_histories == hasattr(cls, "score_sequences"), name


@pytest.mark.parametrize("name, similarity", [("itemknn", "cosine"), ("itemknn", "jaccard"), ("ease", "")])
def test_item_item_models_equal_their_dense_formulas_and_score_a_history_like_a_user(name, similarity):
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 30, 400), rng.integers(0, 50, 400)
    over = {"k": 49, "similarity": similarity} if name == "itemknn" else {}
    hp, _ = config.load(name, overrides=over, task="implicit", n_items=50)
    model = build_model(name, 30, 50, **hp)
    model.fit(torch.as_tensor(u), torch.as_tensor(i), torch.ones(400), "implicit", None)
    x = np.zeros((30, 50))
    x[u, i] = 1.0
    if name == "ease":  # Steck 2019, eq. 8
        p = np.linalg.inv(x.T @ x + hp["l2"] * np.eye(50))
        w = -p / np.diag(p)[None, :]
    else:  # cosine or jaccard with shrinkage over every neighbour (k = n_items - 1)
        co = x.T @ x
        c = np.diag(co)
        w = co / (np.sqrt(np.outer(c, c)) + hp["shrink"]) if similarity == "cosine" else \
            co / (c[:, None] + c[None, :] - co + hp["shrink"])
    np.fill_diagonal(w, 0.0)
    got = model.score_matrix(torch.arange(30)).numpy()
    np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-5)
    seq = torch.zeros(1, 20, dtype=torch.long)  # user 3's items as a request's history (codes + 1, repeats too)
    items = np.flatnonzero(x[3])
    seq[0, -len(items) - 1:] = torch.as_tensor(np.r_[items[:1], items] + 1)
    np.testing.assert_allclose(model.score_sequences(seq)[0].numpy(), got[3], rtol=1e-5, atol=1e-6)
    again = build_model(name, 30, 50, **hp)
    again.load_state_dict(model.state_dict())  # the interactions it holds are as long as its data's
    assert torch.equal(again.score_matrix(torch.arange(30)), model.score_matrix(torch.arange(30)))


def test_item_item_models_refuse_ratings_and_ease_a_catalogue_it_cannot_hold(rating_data):
    hp, cfg = config.load("itemknn", overrides=FAST)
    with pytest.raises(RecsysError, match="ItemKNN ranks items from interactions and needs task=implicit"):
        training.fit(rating_data, "itemknn", hp, cfg)
    config.load("ease", task="implicit", n_items=25_000)  # 2.3 GiB: taken where the memory is there
    with pytest.raises(RecsysError, match=r"500,000 items need about 93\d\.\d GiB while fitting and this machine has "
                                          r"\d+\.\d GiB available; use itemknn"):
        config.load("ease", task="implicit", n_items=500_000)


def test_ease_fits_in_one_float32_matrix_in_place_and_prints_its_estimate(capsys):
    from recsys.models import ease

    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 200, 5000), rng.integers(0, 300, 5000)
    model = build_model("ease", 200, 300, l2=20.0)
    model.fit(torch.as_tensor(u), torch.as_tensor(i), torch.ones(5000), "implicit", None)
    x = np.zeros((200, 300))
    x[u, i] = 1.0
    p = np.linalg.inv(x.T @ x + 20.0 * np.eye(300))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    assert model.B.dtype == torch.float32
    np.testing.assert_allclose(model.B.numpy(), b, atol=1e-6)
    assert "ease: fitting 300 x 300 items in float32, about 0.00 GiB" in capsys.readouterr().err
    assert ease.fit_bytes(20_000) / 2 ** 30 == pytest.approx(1.74, abs=0.01)  # one matrix + blocks of columns


def test_closed_form_baselines_equal_the_training_means(rating_data):
    from recsys import baselines

    hp, cfg = config.load("global_mean", overrides=FAST)
    module = training.fit(rating_data, "global_mean", hp, cfg).module
    mean = rating_data.train["rating"].mean()
    assert module(torch.tensor([0]), torch.tensor([0])).item() == pytest.approx(mean, abs=1e-4)
    hp, cfg = config.load("popularity", overrides=FAST)
    module = training.fit(rating_data, "popularity", hp, cfg).module
    tr = rating_data.train
    means = baselines.damped_item_means(tr["item"].to_numpy(), tr["rating"].to_numpy(), rating_data.n_items,
                                        hp["damping"])
    items = torch.arange(rating_data.n_items)
    with torch.no_grad():
        got = module(torch.zeros_like(items), items).numpy()
    assert np.allclose(got, means, atol=1e-3)
    assert hp["damping"] == baselines.DAMPING  # one damping for the model and the served fallback


def test_softmax_loss_ranks_against_the_whole_catalogue_for_dot_product_models_only(implicit_data, rating_data):
    from recsys import evaluation

    hp, cfg = config.load("mf", overrides={**FAST, "loss": "softmax", "epochs": 3, "lr": 0.01}, task="implicit")
    r = training.fit(implicit_data, "mf", hp, cfg)
    tr = implicit_data.train
    with torch.no_grad():  # cross-entropy of each training positive against every item
        logits = r.module.model.score_matrix(torch.as_tensor(tr["user"].to_numpy(np.int64)))
        ce = torch.nn.functional.cross_entropy(logits, torch.as_tensor(tr["item"].to_numpy(np.int64))).item()
    assert ce < np.log(implicit_data.n_items) - 0.1  # below the uniform model's log(n_items): it learned
    ev = evaluation.evaluate(r.module, implicit_data, "test", [10], "full")
    assert ev.metrics["test/ndcg_at_10"] > 0
    hp, cfg = config.load("ncf", overrides={**FAST, "loss": "softmax"}, task="implicit")
    with pytest.raises(RecsysError, match="needs a model that scores it in one product"):
        training.fit(implicit_data, "ncf", hp, cfg)
    hp, cfg = config.load("mf", overrides={**FAST, "loss": "softmax"})
    with pytest.raises(RecsysError, match="loss=softmax needs task=implicit"):
        training.fit(rating_data, "mf", hp, cfg)


def test_sampled_softmax_ranks_each_positive_against_its_own_negatives_for_any_model(implicit_data, rating_data):
    from recsys.data.negatives import sorted_keys

    tr = implicit_data.train
    u, i = tr["user"].to_numpy(np.int64), tr["item"].to_numpy(np.int64)
    seen = sorted_keys(u, i, implicit_data.n_items)
    batches = TensorBatches(u, i, np.ones(len(u)), batch_size=64, n_items=implicit_data.n_items, num_negatives=5,
                            seen_keys=seen, kind=LISTS)
    rows = list(batches)
    assert len(rows) == batches.n_batches == -(-len(u) // 64)  # batch_size counts positives here
    assert sum(len(b["user_id"]) for b in rows) == len(u)
    b = rows[0]
    assert b["neg_item_id"].shape == (len(b["user_id"]), 5)
    pairs = set(zip(u.tolist(), i.tolist()))
    assert (b["user_id"][0].item(), b["item_id"][0].item()) in pairs  # column 0 is a training positive
    assert not any((uu, nn) in pairs for uu, row in zip(b["user_id"].tolist(), b["neg_item_id"].tolist())
                   for nn in row)  # negatives are items the user has not rated

    hp, cfg = config.load("fm", overrides={**FAST, "loss": "sampled_softmax", "num_negatives": 5, "epochs": 4,
                                           "lr": 0.01}, task="implicit")
    r = training.fit(implicit_data, "fm", hp, cfg)
    module = r.module
    with torch.no_grad():  # the loss is each positive's cross-entropy against its row, scored pair by pair
        m = module.model
        logits = torch.stack([m(b["user_id"], b["item_id"])] +
                             [m(b["user_id"], b["neg_item_id"][:, j]) for j in range(5)], 1)
        manual = (torch.logsumexp(logits, 1) - logits[:, 0]).mean()
        assert module.training_loss(b).item() == pytest.approx(manual.item(), rel=1e-5)
        # it learned: on freshly drawn negatives the mean loss is below log(1 + 5), a uniform scorer's
        fresh = TensorBatches(u, i, np.ones(len(u)), batch_size=10**6, seed=7, n_items=implicit_data.n_items,
                              num_negatives=5, seen_keys=seen, kind=LISTS)
        assert module.training_loss(next(iter(fresh))).item() < np.log(6) - 0.1
    hp, cfg = config.load("fm", overrides={**FAST, "loss": "sampled_softmax"})
    with pytest.raises(RecsysError, match="loss=sampled_softmax needs task=implicit"):
        training.fit(rating_data, "fm", hp, cfg)


class _PerPair(Model):
    """The model seen through forward() alone: ranking falls back to one forward per pair."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, user, item):
        return self.inner(user, item)


@pytest.mark.parametrize("chunk", [4096, 64])  # 64: one user x runs of items, as on a large catalogue
@pytest.mark.parametrize("name", ["ncf", "fm", "wide_deep", "dcn", "dcnv2", "autoint", "autoint+bias", "autoint+deep"])
def test_side_factorised_scoring_gives_the_per_pair_scores_and_identical_ranks(name, chunk, implicit_data, monkeypatch):
    from recsys import ranking
    from recsys.models import _fields

    monkeypatch.setattr(_fields, "PAIRS_PER_CHUNK", chunk)

    torch.manual_seed(5)
    model = (_model("autoint", implicit_data, include_bias=True) if name == "autoint+bias"
             else _model("autoint", implicit_data, include_bias=True, deep_layers=[16, 8]) if name == "autoint+deep"
             else _model(name, implicit_data)).eval()
    for p in model.parameters():  # away from the tiny initialisation, so scores spread and ties are real ties
        p.data.normal_(0, 0.3)
    assert model.scores_blocks
    n_users, n_items = implicit_data.n_users, implicit_data.n_items
    users = torch.arange(n_users)
    fast = ranking.score_block(model, users, n_items)
    slow = ranking.score_block_pairs(model, users, n_items)
    assert fast.shape == slow.shape == (n_users, n_items)
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-5), (fast - slow).abs().max()
    rng = np.random.default_rng(0)
    tu, ti = rng.integers(0, n_users, 1000), rng.integers(0, n_items, 1000)
    exclude = ranking.CSR.build(tu, ti, n_users)
    targets = rng.integers(0, n_items, (n_users, 2))
    r1, t1 = ranking.rank_targets(model, np.arange(n_users), targets, exclude, n_items, k=10)
    r2, t2 = ranking.rank_targets(_PerPair(model), np.arange(n_users), targets, exclude, n_items, k=10)
    assert np.array_equal(r1, r2) and np.array_equal(t1, t2)


@pytest.mark.parametrize("name", ["mf", "ncf", "fm", "wide_deep", "autoint"])
def test_weight_decay_hits_the_tables_bias_weight_decay_the_biases_and_net_weight_decay_the_rest(name, rating_data):
    hp = {**config.load(name)[0], **({"include_bias": True} if name == "autoint" else {})}
    module = _module(name, rating_data, hp, lr=0.1, weight_decay=0.5, optimizer="adamw", net_weight_decay=0.0,
                     bias_weight_decay=0.25)
    opt = module.configure_optimizers()
    from recsys.models._fields import FieldEmbedding

    # tables: id and category embeddings and the fields' feature projections; biases: the same, at width 1
    width = {id(p): p.shape[-1] if isinstance(m, torch.nn.Embedding) else m.ids[0].embedding_dim
             for m in module.model.modules() if isinstance(m, (torch.nn.Embedding, FieldEmbedding))
             for p in m.parameters()}
    tables = {i for i, w in width.items() if w > 1}
    biases = {i for i, w in width.items() if w == 1}
    by_group = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    every = {id(p) for p in module.parameters() if p.requires_grad}
    assert tables and biases  # every one of these models has both
    assert tables <= by_group[0.5] and biases <= by_group[0.25] and set().union(*by_group.values()) == every
    assert sum(len(g) for g in by_group.values()) == len(every)  # no parameter in two groups
    assert by_group.get(0.0, set()).isdisjoint(tables | biases)
    for p in module.parameters():
        p.data.add_(0.01)  # biases start at zero, which no decay moves
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    for p in module.parameters():  # no gradient: an AdamW step is the decay alone
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in module.named_parameters():
        shrink = 1 - p.detach().abs().sum() / before[n].abs().sum()  # AdamW: w -= lr * wd * w
        expected = 0.1 * (0.5 if id(p) in tables else 0.25 if id(p) in biases else 0.0)
        assert float(shrink) == pytest.approx(expected, abs=1e-6), n


def test_a_one_factor_mf_decays_its_factors_as_tables_not_as_biases(rating_data):
    """The bias group is what a model marks first-order, not whatever is one wide."""
    model = build_model("mf", rating_data.n_users, rating_data.n_items, None, embedding_dim=1)
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in training.decay_groups(model, 0.5, 0.0, 0.25)}
    assert {id(model.user.weight), id(model.item.weight)} <= groups[0.5]
    assert groups[0.25] == {id(model.user_bias.weight), id(model.item_bias.weight)}


def test_runtime_settings_given_as_numbers_read_as_lightning_takes_them():
    _, cfg = config.load("mf", overrides={"devices": "2", "strategy": "ddp", "threads": "2"})
    assert cfg.runtime.devices == "2" and cfg.runtime.strategy == "ddp" and cfg.runtime.threads == 2
    assert config.flat({}, cfg)["runtime.devices"] == "2"


def test_each_epoch_line_says_its_seconds_and_at_most_how_long_is_left(rating_data, capsys):
    from recsys.progress import duration

    assert [duration(s) for s in (4.4, 65, 3 * 3600 + 7 * 60 + 5)] == ["4s", "1m 05s", "3h 07m"]
    hp, cfg = config.load("mf", overrides={**FAST, "epochs": 3, "min_epochs": 3})
    result = training.fit(rating_data, "mf", hp, cfg, epoch_lines=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("mf epoch ")]  # named by its model
    assert len(lines) == 3 == result.epochs
    import re

    parsed = [re.match(r"mf epoch (\d)/3 (\d+\.\d)s \(at most (\S+) left, early stopping may end it sooner\) ", ln)
              for ln in lines]
    assert all(parsed) and [p.group(1) for p in parsed] == ["1", "2", "3"] and parsed[-1].group(3) == "0s", lines


def test_a_long_ranking_says_how_far_it_is_and_how_long_is_left(implicit_data, capsys, monkeypatch):
    from recsys import progress, ranking

    model = _model("ncf", implicit_data).eval()
    clock = iter(range(0, 10_000, 20))  # each look at the clock: 20 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(ranking, "block_size", lambda *a: 10)
    users = np.arange(implicit_data.n_users)
    targets = np.zeros((len(users), 1), dtype=np.int64)
    ranking.rank_targets(model, users, targets, ranking.CSR.build(users[:0], users[:0], len(users)), implicit_data.n_items)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("ranking ")]
    assert lines and all(" users, " in ln and ln.endswith(" left") for ln in lines), lines
    # 10 users in 40 s: the other 110 at that pace
    assert lines[0] == f"ranking {implicit_data.n_items:,} items: 10/{len(users):,} users, 40s, about 7m 20s left"
