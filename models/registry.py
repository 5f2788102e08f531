"""One registry of model builders: ``get_model(name, **kwargs)`` is the only way the scripts build a network."""

_BUILDERS = {}


def register_model(builder, name=None):
    """Register ``builder`` under ``name`` (default: its function name); a name taken twice is an error."""
    name = name or builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def model_names():
    """The sorted names that ``get_model`` accepts."""
    return sorted(_BUILDERS)


def get_model(name, **kwargs):
    """Build the network registered as ``name``; keyword arguments go to its constructor (e.g. ``classes``)."""
    if name not in _BUILDERS:
        from utils.errors import UserError
        raise UserError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return _BUILDERS[name](**kwargs)
