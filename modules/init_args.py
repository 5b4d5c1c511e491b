"""Models that remember how they were built.

Decorate a model's ``__init__`` with :func:`records_init_args` and every instance
keeps the keyword arguments that built it (defaults included) in
``init_args``. A model directory is then written from the model alone
(:func:`modules.model_dir.write_model_dir`): its class and ``init_args`` rebuild
it, so no configuration file has to repeat the architecture.

Example
-------
>>> import torch
>>> class Net(torch.nn.Module):
...     @records_init_args
...     def __init__(self, width: int = 4, depth: int = 2):
...         super().__init__()
...         self.layers = torch.nn.Sequential(*[torch.nn.Linear(width, width)] * depth)
>>> Net(8).init_args
{'width': 8, 'depth': 2}
>>> init_args(Net(width=3)) == {"width": 3, "depth": 2}
True
"""

from __future__ import annotations

import functools
import inspect


def records_init_args(init):
    """Decorator for ``__init__``: store the bound arguments as ``self.init_args``.

    Positional and keyword arguments are bound to their names and defaults are
    filled in; tuples become lists (YAML-friendly). When a subclass and its base
    are both decorated, the outermost call (the subclass) is what is kept.
    ``*args`` / ``**kwargs`` catch-alls are refused: they cannot be written back.
    """
    signature = inspect.signature(init)
    variadic = [
        name for name, param in signature.parameters.items()
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
    ]
    if variadic:
        raise TypeError(f"{init.__qualname__}: cannot record *args/**kwargs ({variadic})")

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        recorded = dict(list(bound.arguments.items())[1:])  # without self
        self.init_args = {key: _plain(value) for key, value in recorded.items()}

    return wrapper


def init_args(model) -> dict:
    """The constructor arguments ``model`` recorded (a copy).

    Raises
    ------
    TypeError
        The model's class does not record them (no :func:`records_init_args`).
    """
    recorded = getattr(model, "init_args", None)
    if not isinstance(recorded, dict):
        raise TypeError(
            f"{type(model).__qualname__} does not record its constructor arguments: decorate "
            "its __init__ with modules.init_args.records_init_args"
        )
    return dict(recorded)


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value
