"""rmtlib: random-matrix-theory analysis of deep-network weight matrices.

The library behind the book "Noise and information in neural-network weights".
Modules follow the data flow: data -> models -> train -> spectra -> statistics
(porter_thomas, marchenko_pastur) -> filtering / early_stopping -> plotting.
"""
from . import data, devices, marchenko_pastur, models, porter_thomas, spectra, train
from .report import analyze
from . import transformers  # light to import; Hugging Face is loaded only by its loaders

__version__ = "0.1.0"
__all__ = ["analyze", "data", "devices", "marchenko_pastur", "models", "porter_thomas",
           "spectra", "train", "transformers", "__version__"]
