"""mindgap: close the gap between a model and its fine-tuning data, then train with IS-SFT.

``import mindgap`` stays light: it exposes only the data contract and settings.
"""

__version__ = "0.1.0"
