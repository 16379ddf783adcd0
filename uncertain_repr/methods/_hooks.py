"""Forward hooks that a method installs in a backbone, installed so that they never pile up.

A method's hooks are instances of one :class:`MethodHook` subclass that keep a (strong)
reference to their method. ``copy.deepcopy`` of a model therefore gives the copied backbone hooks
that feed the copied method, and :func:`install_hooks` first removes every hook of the same class
from the backbone, whoever installed it: wrapping a backbone twice, or re-wrapping a copy, leaves
exactly one set of hooks, and they feed the newest method.
"""

from __future__ import annotations

from typing import Dict, Type

from torch import nn


class MethodHook:
    """Base class of forward hooks owned by an uncertainty method (``hook(module, inputs, output)``)."""

    def __init__(self, method: nn.Module) -> None:
        self.method = method

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> object:
        raise NotImplementedError


def remove_hooks(backbone: nn.Module, hook_type: Type[MethodHook]) -> int:
    """Remove all forward hooks of class ``hook_type`` from ``backbone``'s modules; returns how many."""
    removed = 0
    for module in backbone.modules():
        # torch keeps forward hooks in this ordered dict (id -> hook); handles are not copied
        # along with foreign models, so scanning is the only way to find every stale hook.
        stale = [key for key, hook in module._forward_hooks.items() if isinstance(hook, hook_type)]
        for key in stale:
            del module._forward_hooks[key]
        removed += len(stale)
    return removed


def install_hooks(backbone: nn.Module, hook_type: Type[MethodHook], hooks: Dict[str, MethodHook]) -> None:
    """Remove every ``hook_type`` hook from ``backbone``, then register ``hooks`` (module name -> hook)."""
    remove_hooks(backbone, hook_type)
    for name, hook in hooks.items():
        if not isinstance(hook, hook_type):
            raise TypeError(f"hook for {name!r} must be a {hook_type.__name__}, got {type(hook).__name__}")
        backbone.get_submodule(name).register_forward_hook(hook)
