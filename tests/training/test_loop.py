"""The training loop: it learns, resumes exactly, stops early on validation and keeps the best weights."""

import torch
from toy_job import ToyJob

from training.loop import LoopConfig, autocast_dtype, make_optimizer, train_loop


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_loop_reduces_training_loss():
    job = ToyJob()
    result = train_loop(job, LoopConfig(epochs=5, lr=1e-2, eval_every=1000, device="cpu"))
    losses = [r["loss"] for r in result.history]
    assert result.steps == 5 * 16
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_resume_from_checkpoint_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    cfg = LoopConfig(epochs=3, lr=1e-2, eval_every=7, patience=100, checkpoint_every=5, device="cpu", seed=3)
    straight = ToyJob(seed=3)
    full = train_loop(straight, cfg)

    halted = ToyJob(seed=3)
    first = train_loop(halted, LoopConfig(**{**cfg.__dict__, "checkpoint_dir": tmp_path, "halt_at": 20}))
    assert first.steps == 20 and (tmp_path / "last.pt").exists()
    resumed_job = ToyJob(seed=3)  # a fresh process: new model, state only from the checkpoint
    resumed = train_loop(resumed_job, LoopConfig(**{**cfg.__dict__, "checkpoint_dir": tmp_path}))

    assert resumed.steps == full.steps
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    for name, value in _params(straight.model).items():
        assert torch.equal(value, _params(resumed_job.model)[name]), name


def test_early_stopping_restores_the_best_validation_weights():
    job = ToyJob(valid_metrics=[0.1, 0.5, 0.4, 0.3, 0.2, 0.1])
    seen = {}
    validate = job.validate

    def spy(model):
        seen[len(seen)] = _params(model)
        return validate(model)

    job.validate = spy
    result = train_loop(job, LoopConfig(epochs=10, lr=1e-2, eval_every=4, patience=3, device="cpu"))
    assert result.stopped_early and result.best_step == 8 and result.steps == 20
    for name, value in _params(job.model).items():
        assert torch.equal(value, seen[1][name]), name


def test_encoder_weights_get_their_own_learning_rate():
    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(2, 2), "head": torch.nn.Linear(2, 2)})
    groups = make_optimizer(model, LoopConfig(lr=1e-3, encoder_lr=1e-5)).param_groups
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    assert len(groups[1]["params"]) == 2


def test_mixed_precision_is_off_on_cpu_unless_asked():
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
