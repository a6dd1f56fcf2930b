"""`tokrl.model_head`: the one place scoring and the trainers read a model's LM head and logit transform.

The logit transform follows TRL's fused LM head, which follows the models: the scorer's log-probs on Granite
(logits divided by `logits_scaling`), Cohere (`logit_scale`) and Gemma-2 (final softcapping) equal
`log_softmax` of the model's own forward.
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    FalconH1Config,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
)

from tokrl.model_head import backbone_of, lm_head_of, logit_transform, unwrap_model
from tokrl.scoring import score_tokens

SMALL = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=2, head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def test_logit_transform_reads_each_convention():
    assert logit_transform(LlamaConfig(**SMALL)) == (1.0, None)
    assert logit_transform(CohereConfig(**SMALL, logit_scale=0.25)) == (0.25, None)
    assert logit_transform(GraniteConfig(**SMALL, logits_scaling=4.0)) == (0.25, None)  # Granite divides
    assert logit_transform(FalconH1Config(**SMALL, lm_head_multiplier=3.0))[0] == 3.0
    clova = GraniteConfig(**SMALL, logits_scaling=4.0)
    clova.model_type = "hyperclovax"  # HyperCLOVA X multiplies by logits_scaling
    assert logit_transform(clova) == (4.0, None)
    assert logit_transform(Gemma2Config(**SMALL, final_logit_softcapping=5.0)) == (1.0, 5.0)


@pytest.mark.parametrize("make", [
    lambda: GraniteForCausalLM(GraniteConfig(**SMALL, logits_scaling=4.0)),
    lambda: CohereForCausalLM(CohereConfig(**SMALL, logit_scale=0.25)),
    lambda: Gemma2ForCausalLM(Gemma2Config(**SMALL, final_logit_softcapping=0.5, attn_implementation="eager")),
], ids=["granite", "cohere", "gemma2"])
def test_scorer_logprobs_equal_the_models_own_logits(make):
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)  # logits large enough that a missed scale would show
    prompt, completion = [1, 7, 9, 4], [11, 3, 25, 8, 2]
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        expected = torch.log_softmax(model(ids).logits[0, len(prompt) - 1 : -1].float(), -1)
    expected = expected.gather(-1, torch.tensor(completion)[:, None])[:, 0]
    got = torch.tensor(score_tokens(model, [{"prompt_ids": prompt, "completion_ids": completion}])[0]["logps"])
    assert expected.std() > 0.1  # the completion tokens are not all equally likely
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_unwrapping_and_the_adapter_rule():
    torch.manual_seed(0)
    model = GraniteForCausalLM(GraniteConfig(**SMALL, logits_scaling=2.0))

    class Engine(torch.nn.Module):  # what DDP / DeepSpeed wrap a model in
        def __init__(self, module):
            super().__init__()
            self.module = module

    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert unwrap_model(Engine(lora)) is model
    assert backbone_of(Engine(lora)) is model.model
    head = lm_head_of(Engine(lora))
    assert head.weight is model.lm_head.weight and head.logit_scale == 0.5
    on_head = get_peft_model(GraniteForCausalLM(GraniteConfig(**SMALL)), LoraConfig(r=2, target_modules=["lm_head"]))
    with pytest.raises(ValueError, match="lm_head carries a PEFT adapter"):
        lm_head_of(on_head)
