"""Dynamic int8 quantization of LRN's input projections, as torch.ao quantizes nn.GRU's.

    qmodel = lrn.quantize_dynamic(model)   # nn.Linear, nn.LSTM, nn.GRU ... as torch does, and LRN, LRNCell

``torch.ao.quantization.quantize_dynamic(model)`` alone knows only torch's own modules and
leaves LRN layers in float32.  ``lrn.quantize_dynamic`` adds LRN and LRNCell to its mapping:
each layer's projection x W^T + b (all of LRN's matmuls) becomes torch's dynamically
quantized Linear (int8 weights, activations quantized per call); the recurrence, which has
no matmul, and layer norm stay in float32.  CPU only, like torch's dynamic quantization.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import dynamic as qdynamic

from lrn.modules.lrn import LRN, LRNCell


def _quantized_linear(weight: Tensor, bias: Tensor | None, qconfig) -> nn.Module:
    """torch's dynamic int8 Linear holding ``weight`` (out, in) and ``bias``."""
    float_linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        float_linear.weight.copy_(weight)
        if bias is not None:
            float_linear.bias.copy_(bias)
    float_linear.qconfig = qconfig
    return qdynamic.Linear.from_float(float_linear)


def _check_float(mod: nn.Module, kind: type) -> None:
    if type(mod) is not kind:
        raise ValueError(f"from_float expects a {kind.__name__}, got {type(mod).__name__}")
    if getattr(mod, "qconfig", None) is None:
        raise ValueError(f"{kind.__name__}.qconfig is not set (quantize through lrn.quantize_dynamic)")


class DynamicQuantizedLRN(LRN):
    """An :class:`LRN` whose per-layer input projections are dynamically quantized int8
    matmuls; built by ``from_float`` (which ``quantize_dynamic`` calls), not directly."""

    @classmethod
    def from_float(cls, mod: LRN, use_precomputed_fake_quant: bool = False) -> DynamicQuantizedLRN:
        _check_float(mod, LRN)
        quantized = copy.deepcopy(mod)
        quantized.__class__ = cls  # same settings and layer-norm parameters; the weights move below
        quantized.projections = nn.ModuleList(
            _quantized_linear(mod.joined("weight_ih", layer), mod.joined("bias_ih", layer) if mod.bias else None,
                              mod.qconfig)
            for layer in range(mod.num_layers))
        for layer in range(mod.num_layers):
            for suffix in mod._suffixes:
                delattr(quantized, f"weight_ih_l{layer}{suffix}")
                if mod.bias:
                    delattr(quantized, f"bias_ih_l{layer}{suffix}")
        # inputs stay float32 (activations are quantized inside each projection call)
        quantized.register_buffer("float_reference", torch.empty(0, device=mod.weight_ih_l0.device), persistent=False)
        return quantized

    def layer_projection(self, x: Tensor, layer: int) -> Tensor:
        return self.layer_norm_gates(self.projections[layer](x), layer)

    def _dtype_reference(self) -> Tensor:
        return self.float_reference


class DynamicQuantizedLRNCell(LRNCell):
    """An :class:`LRNCell` whose projection is a dynamically quantized int8 matmul."""

    @classmethod
    def from_float(cls, mod: LRNCell, use_precomputed_fake_quant: bool = False) -> DynamicQuantizedLRNCell:
        _check_float(mod, LRNCell)
        quantized = copy.deepcopy(mod)
        quantized.__class__ = cls
        quantized.projection_int8 = _quantized_linear(mod.weight_ih, mod.bias_ih, mod.qconfig)
        del quantized.weight_ih, quantized.bias_ih
        quantized.register_buffer("float_reference", torch.empty(0, device=mod.weight_ih.device), persistent=False)
        return quantized

    def projection(self, x: Tensor) -> Tensor:
        return self.layer_norm_gates(self.projection_int8(x))

    def _dtype_reference(self) -> Tensor:
        return self.float_reference


#: float module -> its dynamically quantized version
MAPPING = {LRN: DynamicQuantizedLRN, LRNCell: DynamicQuantizedLRNCell}


def quantize_dynamic(model: nn.Module, dtype: torch.dtype = torch.qint8, inplace: bool = False) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` with LRN and LRNCell added: every nn.Linear,
    nn.LSTM, nn.GRU (and their cells) as torch quantizes them, and every LRN / LRNCell's
    projections as int8 matmuls.  Only int8 (``torch.qint8``) is supported for LRN."""
    from torch.ao.quantization import quantize_dynamic as torch_quantize_dynamic
    from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings

    if dtype != torch.qint8:
        raise ValueError(f"lrn.quantize_dynamic: dtype must be torch.qint8, got {dtype}")
    spec = {nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell, *MAPPING}
    mapping = {**get_default_dynamic_quant_module_mappings(), **MAPPING}
    return torch_quantize_dynamic(model, qconfig_spec=spec, dtype=dtype, mapping=mapping, inplace=inplace)
