"""Name -> class registry of uncertainty methods (the way timm registers model entrypoints)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Type, TypeVar

from .base import UncertaintyMethod

M = TypeVar("M", bound=Type[UncertaintyMethod])

_METHODS: Dict[str, Type[UncertaintyMethod]] = {}


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator that makes a method available to ``Uncertainizer(..., method=name)``.

    Example::

        @ur.register_method("my-method")
        class MyMethod(ur.UncertaintyMethod):
            def uncertainty(self, embedding, logits):
                return embedding.var(dim=1)
    """

    if not isinstance(name, str) or not name:
        raise TypeError(f"register_method(name): name must be a non-empty string, got {name!r}")

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, UncertaintyMethod)):
            raise TypeError(f"@register_method({name!r}) expects an UncertaintyMethod subclass, got {cls!r}")
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"an uncertainty method named {name!r} is already registered ({_METHODS[name]})")
        _METHODS[name] = cls
        cls.name = name
        return cls

    return decorator


def list_methods() -> List[str]:
    """Names of all registered uncertainty methods, sorted."""
    return sorted(_METHODS)


def get_method_class(name: str) -> Type[UncertaintyMethod]:
    """The class registered under ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown uncertainty method {name!r}; known methods: {', '.join(list_methods())}") from None


def create_method(name: str, *, embed_dim: int, num_classes: int, **method_args: Any) -> UncertaintyMethod:
    """Instantiate the method ``name`` for embeddings of width ``embed_dim`` and ``num_classes`` logits."""
    cls = get_method_class(name)
    try:
        return cls(embed_dim=embed_dim, num_classes=num_classes, **method_args)
    except TypeError as err:
        raise TypeError(f"method {name!r}: {err}") from None
