"""Learning-rate schedules and the NT-ASGD switch, on hand-worked cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrn.train.optim import Optimization


def make(**config) -> Optimization:
    torch.manual_seed(0)
    return Optimization(nn.Linear(2, 1), {"lr": 1.0, **config})


def test_warmup_then_linear_and_cosine_decay():
    lin = make(lr_schedule="linear", warmup_steps=2, max_steps=6)
    assert [lin.lr_at(s) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    cos = make(lr_schedule="cosine", max_steps=4)
    assert [round(cos.lr_at(s), 6) for s in range(5)] == [1.0, 0.853553, 0.5, 0.146447, 0.0]
    assert make().lr_at(1000) == 1.0


def test_plateau_divides_after_patience_bad_evaluations():
    opt = make(lr_schedule="plateau", patience=1, decay_factor=0.5)
    for value in (3.0, 2.0, 2.5):  # one bad evaluation: within patience
        opt.on_validation(value)
    assert opt.lr_at(0) == 1.0
    opt.on_validation(2.1)  # the second in a row
    assert opt.lr_at(0) == 0.5
    opt.on_validation(1.0)  # improvement resets the count
    opt.on_validation(1.5)
    assert opt.lr_at(0) == 0.5


def test_plateau_with_patience_zero_is_refused():
    from lrn.train.optim import check_config

    with pytest.raises(ValueError, match="patience must be >= 1"):
        check_config({"lr": 1.0, "lr_schedule": "plateau", "patience": 0})


def test_epoch_decay_halves_from_the_start_epoch_on():
    opt = make(lr_schedule="epoch_decay", decay_start_epoch=4, decay_factor=0.5)
    # Zaremba et al.: lr 1 for epochs 1-4, then halved each epoch
    assert [opt.lr_at(0, epoch) for epoch in range(7)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    assert opt.lr_at(10_000, 2) == 1.0  # the step does not matter


def test_inverse_time_divides_by_one_plus_rate_times_epochs_done():
    opt = make(lr_schedule="inverse_time", decay_rate=0.05)
    # Ma & Hovy 2016: lr_t = lr_0 / (1 + 0.05 t) after t epochs
    assert [opt.lr_at(0, epoch) for epoch in (0, 1, 10, 20)] == pytest.approx([1.0, 1 / 1.05, 1 / 1.5, 0.5])
    from lrn.train.optim import check_config

    with pytest.raises(ValueError, match="set decay_rate"):
        check_config({"lr": 1.0, "lr_schedule": "inverse_time"})


def test_nt_asgd_switches_when_validation_stops_improving():
    opt = make(optimizer="nt-asgd", nonmono=2)
    for value in (5.0, 4.0, 3.0, 3.5):  # 3.5 is compared with min(5.0) = 5.0: no switch
        opt.on_validation(value)
        assert opt.active == "sgd"
    opt.on_validation(4.5)  # 4.5 > min(5.0, 4.0), all but the last 2: switch
    assert opt.active == "asgd" and isinstance(opt.optimizer, torch.optim.ASGD)


def test_asgd_evaluates_with_averaged_weights_and_round_trips():
    opt = make(optimizer="asgd", lr=0.1)
    weight = opt.model.weight
    seen = []
    for step in range(3):
        opt.optimizer.zero_grad()
        opt.model(torch.ones(1, 2)).sum().backward()
        opt.optimizer.step()
        seen.append(weight.detach().clone())
    raw = weight.detach().clone()
    with opt.averaged_weights():
        # torch's ASGD with t0=0 averages the iterates from its second step on.
        torch.testing.assert_close(weight.detach(), torch.stack(seen[1:]).mean(0))
    assert torch.equal(weight.detach(), raw)  # restored

    other = make(optimizer="nt-asgd")
    other.switch_to_asgd()
    state = other.state_dict()
    fresh = make(optimizer="nt-asgd")
    fresh.load_state_dict(state)
    assert fresh.active == "asgd"


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make(optimizer="rmsprop")


def test_adadelta_takes_rho_and_eps_from_the_config():
    opt = make(optimizer="adadelta", lr=0.5, rho=0.95, eps=1e-6)
    assert isinstance(opt.optimizer, torch.optim.Adadelta)
    group = opt.optimizer.param_groups[0]
    assert (group["lr"], group["rho"], group["eps"]) == (0.5, 0.95, 1e-6)


def test_decaying_schedule_without_max_steps_is_refused():
    with pytest.raises(ValueError, match="lr_schedule 'cosine' decays to 0 at max_steps"):
        make(lr_schedule="cosine")
