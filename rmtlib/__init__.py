"""rmtlib: random-matrix-theory analysis of deep-network weight matrices.

The library behind the book "Noise and information in neural-network weights".
Modules follow the data flow: data -> models -> train -> spectra -> statistics
(porter_thomas, marchenko_pastur, level_statistics) -> filtering / early_stopping /
redundancy / transformers -> plotting.
"""
from . import data, devices, level_statistics, marchenko_pastur, models, porter_thomas, spectra, train
from . import redundancy
from . import transformers  # light to import; Hugging Face is loaded only by its loaders
from .report import analyze

__version__ = "0.1.0"
__all__ = ["analyze", "data", "devices", "level_statistics", "marchenko_pastur", "models", "porter_thomas",
           "redundancy", "spectra", "train", "transformers", "__version__"]
