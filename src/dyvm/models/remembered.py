"""What eager CPU inference remembers between forwards, and when it forgets.

Two levels: each mixer remembers tensors derived from its weights (:class:`InferenceCache`: A = -exp(A_log), packed
and panel weights; see ``BiMambaMixer._derived``), and a model remembers the argument list of its one-call block stack
(:class:`StackPlan`: every tensor, eps and flag the extension reads), so a batch-1 forward does not gather ~150 tensors
through ~80 module lookups again (about 150-230 µs of the demo model's ~1.5 ms).

A plan stays valid while nothing it was made from changed: no module, parameter or buffer was (re)assigned anywhere
(torch's global registration hooks count those), no mixer forgot its derived tensors (``train()``/``eval()`` do, for
fused optimisers that do not bump version counters), and every parameter it derived a tensor from is at the same
version and address (an in-place write, ``load_state_dict``, ``module.to``, a ``.data`` swap); the other parameters go
to the extension as themselves, so it reads them as they are. Plain attributes a plan reads (a mixer's ``scan_backend``
and ``divide_out``, norm eps) are compared on every call.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from torch import Tensor, nn
from torch.nn.modules import module as _module

_generations = {"structure": 0, "derived": 0}


def _structure_changed(*_: Any) -> None:
    _generations["structure"] += 1


# fire on every register_parameter / register_buffer / module assignment in this process (a few ns each); they
# return None, so they change nothing they see
_module.register_module_parameter_registration_hook(_structure_changed)
_module.register_module_buffer_registration_hook(_structure_changed)
_module.register_module_module_registration_hook(_structure_changed)


class InferenceCache(dict):
    """A mixer's remembered inference tensors, left out of copies and pickles (the next forward rebuilds them, and
    oneDNN's packed weights can be neither copied nor saved). Every change counts as a new generation, which
    invalidates the stack plans made from the old one."""

    def __reduce__(self):
        return type(self), ()

    def __setitem__(self, key, value) -> None:
        _generations["derived"] += 1
        super().__setitem__(key, value)

    def clear(self) -> None:
        _generations["derived"] += 1
        super().clear()


def _stamps(tensors: Sequence[Tensor]) -> tuple[list[int], list[int]]:
    return [t._version for t in tensors], [t.data_ptr() for t in tensors]


class StackPlan(NamedTuple):
    """A model's remembered block-stack arguments (what ``VisionMamba.fused_stack`` hands the extension) with what
    they were made from. ``attributes`` (a callable) reads the plain attributes the arguments depend on."""

    arguments: tuple
    hook_dicts: tuple[dict, ...]
    sources: tuple[Tensor, ...]
    versions: list[int]
    addresses: list[int]
    attributes: Callable[[], Any]
    attribute_values: Any
    structure: int
    derived: int

    @classmethod
    def make(cls, arguments: tuple, roots: Sequence[nn.Module], sources: Sequence[Tensor],
             attributes: Callable[[], Any]) -> "StackPlan":
        """``sources``: the tensors that ``arguments`` hold derived copies of (A_log for A, weights for their packs
        and panels); every other tensor in ``arguments`` is the module's own Parameter object, which the extension
        reads as it is at the call."""
        sources = tuple(sources)
        # a module's hook dicts are made once with it and filled in place by register_forward_(pre_)hook
        hook_dicts = tuple(d for root in roots for m in root.modules() for d in (m._forward_hooks, m._forward_pre_hooks))
        return cls(arguments, hook_dicts, sources, *_stamps(sources), attributes, attributes(),
                   _generations["structure"], _generations["derived"])

    def valid(self) -> bool:
        """Whether ``arguments`` are still what gathering them afresh would give (hooks are not checked here)."""
        return (self.structure == _generations["structure"] and self.derived == _generations["derived"]
                and (self.versions, self.addresses) == _stamps(self.sources)
                and self.attributes() == self.attribute_values)

    def hooked(self) -> bool:
        """Whether a forward (pre-)hook sits on one of the plan's modules (then the Python path runs, and fires it)."""
        return any(self.hook_dicts)


class StackPlans(dict):
    """A model's plans by (routed, autocast dtype); left out of copies and pickles (a copy makes its own)."""

    def __reduce__(self):
        return type(self), ()
