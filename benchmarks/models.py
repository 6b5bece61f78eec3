"""The model cases: the teacher and student inference forward (``teacher``, ``student``) and the
co-training step (``cotrain``, and ``cotrain_recompute`` with CSAKDConfig.recompute), whole
networks of the suite's width (``benchmarks.cases.WIDTHS``) on every backend both ops have.
"""
from __future__ import annotations

from typing import List

import torch

import csakd_fast as cf

from .cases import Case, Instance, Request, generator, rand


def _model_inputs(w, batch, res, device, dtype, seed, target=False):
    s = w["scale"]
    g = generator(device, seed)
    lr = rand((batch, w["bands"], res // s, res // s), g, device, dtype, normal=False)
    msi = rand((batch, w["msi_bands"], res, res), g, device, dtype, normal=False)
    if not target:
        return lr, msi
    return lr, msi, rand((batch, w["bands"], res, res), g, device, dtype, normal=False)


def model_config(w: dict, which: str, recompute: bool = False) -> cf.CSAKDConfig:
    base = {k: w[k] for k in ("bands", "msi_bands", "nf", "gc", "attn_dim", "heads", "scale")}
    base["recompute"] = recompute
    if which == "teacher":
        return cf.CSAKDConfig.teacher(**base, layers=w["teacher_layers"])
    return cf.CSAKDConfig.student(**base, layers=w["student_layers"])


class ForwardInstance(Instance):
    """Inference forward of a whole network: ``model(lr_hsi, hr_msi)[0]`` under no_grad."""

    end_label = "fwd"

    def __init__(self, model, w, batch, res, device, dtype):
        self.model, self.modules = model, [model]
        self._args = (w, batch, res, device, dtype)

    def make_inputs(self, seed):
        w, batch, res, device, dtype = self._args
        return _model_inputs(w, batch, res, device, dtype, seed)

    def step(self, inputs, probe):
        with torch.no_grad():
            return self.model(*inputs)[0]


class TrainStepInstance(Instance):
    """One teacher training step (``student`` None) or one co-training step (docs/design.md,
    "The network"): the teacher step (forward, cf.losses.teacher_loss, backward, AdamW), then the
    student step on the detached teacher outputs (cf.losses.student_loss). Saved bytes are
    counted per forward (model + loss); the two graphs are never alive at once."""

    def __init__(self, teacher, student, w, batch, res, device, dtype, lr=1e-4):
        self.teacher, self.student = teacher, student
        self.modules = [m for m in (teacher, student) if m is not None]
        self.opts = [torch.optim.AdamW(m.parameters(), lr=lr) for m in self.modules]
        self.end_label = "student" if student is not None else "teacher"
        self._args = (w, batch, res, device, dtype)

    def make_inputs(self, seed):
        w, batch, res, device, dtype = self._args
        return _model_inputs(w, batch, res, device, dtype, seed, target=True)

    def exclude(self, inputs):
        out = super().exclude(inputs)
        for opt in self.opts:
            for state in opt.state.values():
                out += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return out

    def step(self, inputs, probe):
        lr, msi, target = inputs
        opt_t = self.opts[0]
        with probe.saved("teacher"):
            t_out, t_fused = self.teacher(lr, msi)
            loss_t, _ = cf.losses.teacher_loss(t_out, target)
        opt_t.zero_grad(set_to_none=True)
        loss_t.backward()
        opt_t.step()
        if self.student is None:
            return None
        probe.mark("teacher")
        with probe.saved("student"):
            s_out, s_fused = self.student(lr, msi)
            loss_s, _ = cf.losses.student_loss(s_out, target, t_out.detach(), s_fused,
                                               t_fused.detach())
        opt_s = self.opts[1]
        opt_s.zero_grad(set_to_none=True)
        loss_s.backward()
        opt_s.step()
        return None



def _model_shapes(w, batch, res, target=False):
    s = w["scale"]
    d = {"lr_hsi": [batch, w["bands"], res // s, res // s], "hr_msi": [batch, w["msi_bands"], res, res]}
    if target:
        d["target"] = [batch, w["bands"], res, res]
    return d


def forward_cases(w, points, which) -> List[Case]:
    out = []
    for res, batch in points:
        def build(backend, wrap, device, dtype, res=res, batch=batch):
            torch.manual_seed(0)
            model = cf.CSAKDNet(model_config(w, which), backend=backend).to(device, dtype).eval()
            return ForwardInstance(wrap(model), w, batch, res, device, dtype)

        cfg = model_config(w, which)
        out.append(Case(which, "fwd", res, batch, ("csa", "clra"), build,
                        shapes=_model_shapes(w, batch, res), model=True, source=__name__,
                        params={"layers": list(cfg.layers), "nf": cfg.nf, "gc": cfg.gc,
                                "bands": cfg.bands, "msi_bands": cfg.msi_bands}))
    return out


def train_step_instance(w, backend, wrap, device, dtype, batch, res, cotrain: bool,
                        recompute: bool = False):
    """``recompute``: the teacher (and the student) with CSAKDConfig.recompute."""
    torch.manual_seed(0)
    teacher = cf.CSAKDNet(model_config(w, "teacher", recompute), backend=backend).to(device, dtype).train()
    student = None
    if cotrain:
        student = cf.CSAKDNet(model_config(w, "student", recompute), backend=backend)
        student = wrap(student.to(device, dtype).train())
    return TrainStepInstance(wrap(teacher), student, w, batch, res, device, dtype)


def cotrain_cases(w, points, recompute: bool = False) -> List[Case]:
    """The co-training step; ``recompute``: ``cotrain_recompute``, both networks with
    CSAKDConfig.recompute (the fused CLRA backends keep only each block's input)."""
    out = []
    for res, batch in points:
        def build(backend, wrap, device, dtype, res=res, batch=batch):
            return train_step_instance(w, backend, wrap, device, dtype, batch, res, cotrain=True,
                                       recompute=recompute)

        params = {"teacher_layers": list(w["teacher_layers"]),
                  "student_layers": list(w["student_layers"]), "optimizer": "AdamW",
                  "losses": "teacher_loss, student_loss"}
        if recompute:
            params["recompute"] = True
        out.append(Case("cotrain_recompute" if recompute else "cotrain", "step", res, batch,
                        ("csa", "clra"), build, shapes=_model_shapes(w, batch, res, target=True),
                        params=params, model=True, extra=recompute, compile=not recompute,
                        source=__name__))
    return out


def cases(request: Request) -> List[Case]:
    """The model cases at the suite's points (``forward``, ``cotrain``, ``cotrain_recompute``;
    ``--res`` / ``--batch`` leave them alone)."""
    w, points = request.width, request.suite.points
    out = forward_cases(w, points.get("forward", ()), "teacher")
    out += forward_cases(w, points.get("forward", ()), "student")
    out += cotrain_cases(w, points.get("cotrain", ()))
    out += cotrain_cases(w, points.get("cotrain_recompute", ()), recompute=True)
    return out
