"""Our engine vs transformers on the real default model (SmolLM2-135M-Instruct, float32).

Eight prompts of 5 to 300 tokens run together in one batch (prefilled together, then
decoded together) and each alone; greedy output must equal transformers' own `generate`
token for token. A divergence is accepted only at a numerical near-tie: at the first
differing step both tokens are within 1e-3 in log-probability in one run's distribution.
"""

from __future__ import annotations

import pytest
import torch

from fastserve.runtime.model.registry import resolve_model_dir
from fastserve.runtime.model.runner import ModelRunner
from tests.engine_driver import divergence_report, greedy_generate, hf_greedy

pytestmark = pytest.mark.e2e
transformers = pytest.importorskip("transformers")

NEW_TOKENS = 64
LENGTHS = (5, 12, 31, 64, 100, 157, 230, 300)
TEXT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg combined movable metal type, oil-based ink and a screw press adapted from "
    "wine making. Before that, books were copied by hand, which made them rare and costly. "
    "Within fifty years presses spread to more than two hundred cities across Europe, and "
    "millions of volumes were printed. Scholars could compare identical copies of a text, "
    "errors became easier to correct, and ideas travelled faster than ever before. The "
    "Reformation, the Scientific Revolution and the rise of newspapers all owe something "
    "to this machine. Printing also standardised spelling and grammar in many languages, "
    "because printers chose one form and repeated it thousands of times. Later inventions "
    "such as the rotary press, the linotype machine and offset lithography made printing "
    "faster and cheaper still, until in the twentieth century photocopiers and then "
    "computers changed the way that words reach their readers. Today most text is read on "
    "screens, yet the basic idea of reproducing the same words exactly for many people "
    "remains at the heart of publishing, education and public life. Libraries, archives "
    "and universities grew around printed collections, and literacy rose steadily as "
    "books became cheaper. In many countries, laws about copyright and freedom of the "
    "press were first written to deal with the consequences of printing, and they still "
    "shape how information is shared. Historians continue to debate how quickly these "
    "changes happened and how much credit a single invention deserves, but few doubt "
    "that the printing press was one of the most important technologies ever created. "
    "Even now, new forms of printing, from three-dimensional printers to printed "
    "electronics, keep the old word alive in new industries."
)


@pytest.fixture(scope="module")
def model_dir():
    return resolve_model_dir(None)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return transformers.AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=True,
    )
    chat = list(chat["input_ids"] if isinstance(chat, dict) or hasattr(chat, "keys") else chat)
    text = tokenizer(TEXT)["input_ids"]
    assert len(text) >= max(LENGTHS)
    out = [text[:n] for n in LENGTHS]
    out[3] = chat  # a real chat prompt among the raw-text ones (37 tokens)
    return out


@pytest.fixture(scope="module")
def runner(model_dir):
    torch.manual_seed(0)
    return ModelRunner(model_dir, "float32", "cpu", num_device_blocks=512, block_size=16)


@pytest.fixture(scope="module")
def ours_together(runner, prompts):
    return greedy_generate(runner, prompts, NEW_TOKENS, together=True)


def test_chat_prompt_answers_paris(ours_together, tokenizer):
    answer = tokenizer.decode(ours_together[3].tokens)
    assert "Paris" in answer, answer


def test_batched_engine_matches_transformers(model_dir, prompts, ours_together):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    reference = hf_greedy(model.eval(), prompts, NEW_TOKENS)
    failures = [
        f"prompt {i} ({len(p)} tokens): {report}"
        for i, (p, ours, ref) in enumerate(zip(prompts, ours_together, reference, strict=True))
        if (report := divergence_report(ours, ref)) is not None
    ]
    assert not failures, "\n".join(failures)


def test_batched_equals_each_prompt_alone(runner, prompts, ours_together):
    alone = greedy_generate(runner, prompts, NEW_TOKENS, together=False)
    failures = [
        f"prompt {i} ({len(p)} tokens): {report}"
        for i, (p, a, b) in enumerate(zip(prompts, ours_together, alone, strict=True))
        if (report := divergence_report(a, b)) is not None
    ]
    assert not failures, "\n".join(failures)
