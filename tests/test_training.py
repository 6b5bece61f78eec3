"""Trainer, evaluation and report on tiny synthetic data (the reference scenes are tested in
test_scenes.py; here cubes are files the tests write, which also exercises the file path)."""
import json
import math

import numpy as np
import pytest
import torch

import csakd_fast as cf
from conftest import requires
from csakd_fast.training import config as tconfig
from csakd_fast.training.evaluate import bicubic, evaluate, image_metrics
from csakd_fast.training.log import read_log
from csakd_fast.training.report import write_report
from csakd_fast.training.trainer import Trainer, TrainResult, epoch_batches, train

L, M = 12, 3
SRF = (np.eye(M).repeat(L // M, axis=1) / (L // M)).tolist()   # three box bands, rows sum to 1
TINY = {"nf": 8, "gc": 4, "heads": 2, "attn_dim": 8}


def _cube(rng, H=32, W=32):
    """A smooth random cube (H, W, L): a few spectra mixed by smooth abundance maps."""
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    maps = np.stack([np.sin(3 * xx + k) * np.cos(2 * yy - k) + 1.2 for k in range(3)], -1)
    spectra = rng.uniform(0.1, 1.0, size=(3, L))
    return (maps @ spectra + 0.02 * rng.standard_normal((H, W, L))).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cubes")
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("a", "b", "val", "test"):
        p = d / f"{name}.npy"
        np.save(p, _cube(rng))
        paths[name] = str(p)
    return paths


def _cfg(files, **kw):
    base = dict(mode="cotrain", data=[files["a"], files["b"]], val_data=[files["val"]],
                test_data=[files["test"]], srf=SRF, crop_size=16, batch_size=2, crops_per_epoch=4,
                epochs=2, lr=1e-3, teacher={**TINY, "layers": [1, 1, 1, 1]}, student=TINY,
                tensorboard=False, progress=False, snr_lr=35.0)
    return cf.training.TrainConfig(**{**base, **kw})


def _weights(out, roles):
    state = torch.load(out / "state.pt", weights_only=True)
    return state, {r: state["models"][r] for r in roles}


def test_config_defaults_are_the_papers():
    c = cf.training.TrainConfig()
    assert (c.mode, c.lr, c.batch_size, c.crop_size, c.epochs) == ("cotrain", 1e-4, 8, 128, 800)
    assert (c.teacher_schedule, c.student_schedule, c.step_epochs, c.step_gamma) == ("cosine", "step", 100, 0.9)
    assert c.snr_lr == 35.0 and c.sam_weight == c.band_weight == c.kd_weight == c.feat_weight == 0.1
    assert tconfig.load_config("paper") == c
    demo = tconfig.load_config("demo")
    assert demo.mode == "cotrain" and demo.epochs * (demo.crops_per_epoch // demo.batch_size) > 0


@pytest.mark.parametrize("bad, match", [
    (dict(mode="student"), "mode"), (dict(crop_size=30), "crop_size"), (dict(lr=0), "lr"),
    (dict(batch_size=0), "batch_size"), (dict(teacher={"width": 3}), "teacher"),
    (dict(mode="distill"), "teacher_checkpoint"), (dict(data=["x.npy"]), "val_data"),
    (dict(teacher_schedule="linear"), "teacher_schedule"), (dict(backend="fast"), "backend"),
    (dict(grad_clip=0.0), "grad_clip"), (dict(tensorboard="yes"), "tensorboard"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        cf.training.TrainConfig(**bad)


def test_config_backend_is_a_name_or_one_per_op():
    TC = cf.training.TrainConfig
    assert TC().backend == "auto" and TC(backend="torch").backend == "torch"
    both = {"csa": "cpp", "clra": "torch"}
    assert TC(backend="csa=cpp,clra=torch").backend == both == TC(backend=both).backend
    assert TC(backend=" clra = torch , csa = cpp ").backend == both
    # ops left out get auto; one name for every op is stored as that name
    assert TC(backend="csa=cpp").backend == {"csa": "cpp", "clra": "auto"} == TC(backend={"csa": "cpp"}).backend
    assert TC(backend={"csa": "torch", "clra": "torch"}).backend == "torch" == TC(backend="csa=torch,clra=torch").backend
    assert TC(backend={}).backend == "auto"
    # equal choices, whatever their form, are equal settings; config.json round-trips exactly
    assert TC(backend="csa=cpp") == TC(backend={"csa": "cpp", "clra": "auto"})
    c = TC(backend="clra=reference")
    assert TC.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert json.loads(json.dumps(c.to_dict()))["backend"] == {"csa": "auto", "clra": "reference"}


def test_config_backend_from_a_toml_table_and_set(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('backend = { csa = "reference" }\n')
    assert tconfig.load_config(p).backend == {"csa": "reference", "clra": "auto"}
    assert tconfig.load_config(p, {"backend": tconfig.parse_value('{clra = "torch"}')}).backend == \
        {"csa": "auto", "clra": "torch"}
    assert tconfig.load_config(None, {"backend": tconfig.parse_value("csa=cpp,clra=torch")}).backend == \
        {"csa": "cpp", "clra": "torch"}
    p.write_text('backend = { csa = "fast" }\n')
    with pytest.raises(ValueError, match=r"backend\['csa'\]: expected one of"):
        tconfig.load_config(p)


@pytest.mark.parametrize("spec, match", [
    ("fast", "backend: expected one of"), ("csa=fast", r"backend\['csa'\]"),
    ("gemm=torch", "backend: expected ops among"), ({"csa": "cpp", "attn": "torch"}, "expected ops among"),
    ("csa=cpp,,clra=torch", "OP=NAME pairs"), ("csa=cpp,csa=torch", "OP=NAME pairs"), ("csa=", "OP=NAME"),
    (3, "expected a name or a mapping"), (["cpp"], "expected a name or a mapping"),
])
def test_config_rejects_bad_backends(spec, match):
    with pytest.raises(ValueError, match=match):
        cf.training.TrainConfig(backend=spec)


def test_trainer_builds_its_models_with_the_per_op_backends(files, tmp_path):
    t = Trainer(_cfg(files, backend="csa=reference,clra=torch"), tmp_path / "run")
    for role in ("teacher", "student"):
        mods = list(t.models[role].modules())
        assert {m.backend for m in mods if isinstance(m, cf.nn.CLRABlock)} == {"torch"}, role
        assert {m.backend for m in mods if isinstance(m, cf.nn.CrossSelfAttention)} == {"reference"}, role


def test_config_file_and_overrides(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('mode = "teacher"\nepochs = 3\nteacher = { nf = 16 }\n')
    c = tconfig.load_config(p, {"epochs": 5})
    assert (c.mode, c.epochs, c.teacher) == ("teacher", 5, {"nf": 16})
    assert tconfig.parse_value("[1, 2]") == [1, 2] and tconfig.parse_value("cpu") == "cpu"
    assert tconfig.parse_value("{nf = 8}") == {"nf": 8} and tconfig.parse_value("1e-3") == 1e-3
    p.write_text("epochs = = 3")
    with pytest.raises(ValueError, match="not valid TOML"):
        tconfig.load_config(p)
    with pytest.raises(ValueError, match="unknown settings"):
        tconfig.load_config(None, {"epoch": 3})
    with pytest.raises(ValueError, match="no such file"):
        tconfig.load_config(tmp_path / "missing.toml")


def test_epoch_batches_are_a_seeded_permutation():
    a = epoch_batches(10, 3, seed=1, epoch=4)
    assert a == epoch_batches(10, 3, seed=1, epoch=4)
    assert a != epoch_batches(10, 3, seed=1, epoch=5) and a != epoch_batches(10, 3, seed=2, epoch=4)
    assert len(a) == 3 and all(len(b) == 3 for b in a)                 # full batches only
    flat = sum(a, [])
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    short = epoch_batches(2, 3, 0, 0)                                   # fewer items than a batch
    assert len(short) == 1 and sorted(short[0]) == [0, 1]


def test_model_configs_follow_the_presets():
    c = cf.training.TrainConfig(teacher={"nf": 16, "gc": 8}, student={"nf": 16, "gc": 8})
    t, s = c.model_config("teacher", 31, 3), c.model_config("student", 31, 3)
    assert t.layers == (6, 6, 4, 4) and t.h_groups == 1 and (t.bands, t.msi_bands, t.nf) == (31, 3, 16)
    assert s.layers == (1, 4, 4, 1) and s.h_groups == 8 and not s.use_hm_blocks


def test_evaluate_scores_the_bicubic_baseline_and_a_perfect_predictor(files):
    ds = cf.data.FusionDataset([files["val"]], np.array(SRF), mode="eval")
    truth = {}

    def oracle(lr, msi):
        return truth["y"]

    class Capture(torch.utils.data.Dataset):
        def __init__(self, inner):
            self.inner, self.mode, self.scale = inner, "eval", inner.scale

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            item = self.inner[i]
            truth["y"] = item["hr_hsi"][None]
            return item

    res = evaluate({"bicubic": bicubic(4), "oracle": oracle}, Capture(ds))
    o, b = res["mean"]["oracle"], res["mean"]["bicubic"]
    assert math.isinf(o["psnr"]) and o["sam"] == 0 and o["ergas"] == 0 and o["rmse"] == 0
    assert o["ssim"] == pytest.approx(1.0) and o["cc"] == pytest.approx(1.0)
    assert 10 < b["psnr"] < 60 and b["sam"] > 0 and b["ssim"] < 1
    # the bicubic row is what F.interpolate gives, scored on [0, 1]
    item = ds[0]
    up = torch.nn.functional.interpolate(item["lr_hsi"][None], scale_factor=4, mode="bicubic", align_corners=False)
    m = image_metrics(up, item["hr_hsi"][None], item["vmin"], item["vmax"], 4)
    assert b["psnr"] == pytest.approx(float(m["psnr"][0]))
    with pytest.raises(ValueError, match="mode='eval'"):
        evaluate({"bicubic": bicubic(4)}, cf.data.FusionDataset([files["val"]], np.array(SRF), crop_size=16))


def test_resume_reproduces_the_uninterrupted_run_exactly(files, tmp_path):
    roles = ("teacher", "student")
    full = tmp_path / "full"
    Trainer(_cfg(files), full).run()
    part = tmp_path / "part"
    Trainer(_cfg(files, max_iters=1), part).run()                 # stops inside epoch 0
    s1, _ = _weights(part, roles)
    assert json.loads((part / "test.json").read_text())["weights"]["student"].startswith("last")
    assert (s1["epoch"], s1["batch"], s1["iter"]) == (0, 1, 1)
    Trainer(None, part, resume=True, overrides={"max_iters": 3}).run()   # across the epoch boundary
    s3, _ = _weights(part, roles)
    assert (s3["epoch"], s3["batch"], s3["iter"]) == (1, 1, 3)
    Trainer(None, part, resume=True, overrides={"max_iters": None}).run()
    sa, wa = _weights(full, roles)
    sb, wb = _weights(part, roles)
    assert sa["iter"] == sb["iter"] == 4
    for r in roles:
        for k in wa[r]:
            assert torch.equal(wa[r][k], wb[r][k]), (r, k)
        ea, eb = sa["optimizers"][r]["state"], sb["optimizers"][r]["state"]
        assert all(torch.equal(ea[i]["exp_avg_sq"], eb[i]["exp_avg_sq"]) for i in ea)
        assert sa["schedulers"][r]["last_epoch"] == sb["schedulers"][r]["last_epoch"] == 4
    # the interrupted run's log has every epoch once, as the uninterrupted run's
    assert [r["epoch"] for r in read_log(part)] == [r["epoch"] for r in read_log(full)] == [0, 1]
    assert read_log(part)[-1]["val"]["student"]["psnr"] == read_log(full)[-1]["val"]["student"]["psnr"]


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_old_folders(files, tmp_path):
    out = tmp_path / "run"
    Trainer(_cfg(files, max_iters=1), out).run()
    with pytest.raises(ValueError, match="lr"):
        Trainer(None, out, resume=True, overrides={"lr": 5e-4})
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(_cfg(files), out)
    with pytest.raises(ValueError, match="no state.pt"):
        Trainer(None, tmp_path / "empty", resume=True)


def test_teacher_and_distill_modes_train_only_their_model(files, tmp_path):
    t = Trainer(_cfg(files, mode="teacher", epochs=1), tmp_path / "t")
    before = {k: v.clone() for k, v in t.models["teacher"].state_dict().items()}
    t.run()
    assert "student" not in t.models and (tmp_path / "t" / "teacher_best.pth").is_file()
    assert any(not torch.equal(before[k], v) for k, v in t.models["teacher"].state_dict().items())
    d = Trainer(_cfg(files, mode="distill", epochs=1, teacher_checkpoint=str(tmp_path / "t" / "teacher_best.pth")),
                tmp_path / "d")
    frozen = {k: v.clone() for k, v in d.models["teacher"].state_dict().items()}
    res = d.run()
    assert all(torch.equal(frozen[k], v) for k, v in d.models["teacher"].state_dict().items())
    assert set(res["mean"]) == {"bicubic", "teacher", "student"}
    assert not (tmp_path / "d" / "teacher_best.pth").exists()
    bad = _cfg(files, mode="distill", epochs=1, teacher_checkpoint=str(tmp_path / "t" / "teacher_best.pth"),
               scale=2, crop_size=16)
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        Trainer(bad, tmp_path / "d2")


@requires("matplotlib", "tensorboard")   # the report and the TensorBoard scalars
def test_train_writes_checkpoints_and_logs_and_returns_what_the_report_needs(files, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = _cfg(files, tensorboard=True, eval_every=1)
    res = train(cfg, out)
    assert isinstance(res, TrainResult) and res.out == out and res.device == torch.device("cpu")
    assert res.config == cfg and res.dataset.mode == "eval" and res.dataset.names == ["test"]
    assert capsys.readouterr().out == "" and not (out / "report").exists()   # the CLI prints and reports
    # the returned models are the best checkpoints, the ones test.json scores
    assert set(res.models) == {"teacher", "student"}
    for role, model in res.models.items():
        best = cf.load_checkpoint(out / f"{role}_best.pth").state_dict()
        assert all(torch.equal(best[k], v) for k, v in model.state_dict().items()), role
    path = write_report(res.out, res.dataset, res.models, res.metrics, res.device)
    assert path == out / "report" / "report.md"
    for f in ("config.json", "state.pt", "teacher_best.pth", "student_best.pth", "teacher_last.pth",
              "log.jsonl", "test.json", "report/report.md", "report/composites.png",
              "report/errors.png", "report/spectra.png", "report/curves.png", "report/metrics.json"):
        assert (out / f).is_file(), f
    assert list((out / "tb").iterdir()), "no TensorBoard event file"
    assert not list(out.glob(".*tmp")) and not list((out / "report").glob(".*"))   # atomic writes left nothing
    model = cf.load_checkpoint(out / "student_best.pth")
    assert model.config.nf == 8 and model.config.layers == (1, 4, 4, 1)
    test = json.loads((out / "test.json").read_text())
    assert test["split"] == "test" and test["iterations"] == 4 and set(test["mean"]) == {"bicubic", "teacher", "student"}
    assert test["weights"] == {"teacher": "best by validation SAM", "student": "best by validation SAM"}
    assert test["mean"]["student"]["psnr"] == pytest.approx(res.metrics["mean"]["student"]["psnr"])
    assert json.loads((out / "report" / "metrics.json").read_text()) == test
    md = (out / "report" / "report.md").read_text()
    assert "| student |" in md and "PSNR against the bicubic baseline" in md
    log = read_log(out)
    assert [r["epoch"] for r in log] == [0, 1] and all("val" in r and r["crops_per_s"] > 0 for r in log)
    assert log[0]["lr"]["teacher"] < 1e-3 and log[0]["lr"]["student"] == 1e-3   # cosine vs step
