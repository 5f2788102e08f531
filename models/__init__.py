"""Network definitions, reached through one registry: ``get_model(name, classes=..., **kwargs)``."""
from models.registry import get_model, model_names, register_model
from models import inception, mobilenet, resnet  # noqa: F401  (register their builders)

__all__ = ["get_model", "model_names", "register_model"]
