import os

# Without a GPU, Triton kernels are tested through its interpreter on CPU tensors.  The
# variable must be set before triton is first imported.
if "TRITON_INTERPRET" not in os.environ:
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    except ImportError:
        pass

import pytest
import torch

from lrn.functional import available_backends

# Backends that run on CPU tensors here: triton only through its (slow) interpreter, so the
# layer tests use it only where a test asks for it explicitly.
CPU_BACKENDS = [b for b in available_backends() if b in ("reference", "cpu")]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models on a shared machine: intra-op threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_tiny(task, data, config, cell, epochs):
    """Train ``task``'s model on ``data`` with Adam for ``epochs``; returns (model, losses)."""
    model = task.build_model(config, data, cell)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    losses = []
    for epoch in range(epochs):
        for batch in task.train_batches(data, config, epoch=epoch):
            loss, _ = task.loss(model, batch, torch.device("cpu"))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return model, losses
