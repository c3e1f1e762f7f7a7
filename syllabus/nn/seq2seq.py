"""Sequence-to-sequence models from problem text to program tokens, written here.

Encoders (problem -> memory (B, S, H) and a summary (B, H)):
- `GloveEncoder`: GloVe word embeddings + a BiLSTM.
- `BertEncoder`: a pretrained BERT (transformers), frozen or fine-tuned, projected to H.
Both add a learned embedding of each token's number index (`n_i` -> i + 1, else 0).

`LSTMDecoder`: an LSTM over program tokens, its state started from the encoder's summary,
with or without Luong ("general") attention over the memory (Luong et al. 2015). `Seq2Seq`
joins them and trains with teacher forcing probability p per step.
Decoding state is a dict of batch-first tensors, so beam search (`syllabus.nn.beam`) can
expand and reorder it without knowing the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from syllabus.programs.inputs import UNK_WORD, number_index, pad, word_offsets

State = dict[str, torch.Tensor]


class GloveEncoder(nn.Module):
    """GloVe embeddings + number-index embeddings -> BiLSTM.

    Args:
        words: the input vocabulary (`<pad>` first); saved with the weights (extra state).
        vectors: (len(words), E) initial embeddings (GloVe rows), or None for zeros (the
            weights are loaded from a checkpoint afterwards).
        hidden: H, the size of the memory (H/2 per direction).
        layers: BiLSTM layers.
        dropout: on embeddings and between layers.
        max_numbers: number indices beyond this share index 0.
        freeze_embeddings: keep the GloVe vectors fixed.
    """

    def __init__(self, words: list[str], vectors: torch.Tensor | None, hidden: int = 256, layers: int = 1,
                 dropout: float = 0.2, max_numbers: int = 40, freeze_embeddings: bool = False):
        super().__init__()
        self.words, self.max_numbers, self.hidden = list(words), max_numbers, hidden
        self.lookup = {w: i for i, w in enumerate(self.words)}
        dim = vectors.shape[1] if vectors is not None else 50
        self.embed = nn.Embedding(len(words), dim, padding_idx=0)
        if vectors is not None:
            self.embed.weight.data.copy_(vectors)
        self.embed.weight.requires_grad_(not freeze_embeddings)
        self.number = nn.Embedding(max_numbers + 1, dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = BiLSTM(dim, hidden // 2, layers, dropout)

    def get_extra_state(self) -> dict:
        return {"words": self.words}

    def set_extra_state(self, state: dict) -> None:
        self.words = list(state["words"])
        self.lookup = {w: i for i, w in enumerate(self.words)}

    def featurize(self, problem: str) -> dict:
        words, offsets = word_offsets(problem)
        unk = self.lookup[UNK_WORD]
        return {"src": [self.lookup.get(w, unk) for w in words] or [unk],
                "num": number_index(offsets, problem, self.max_numbers) or [0]}

    def forward(self, batch: State) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, S, H), summary (B, H)."""
        src, mask = batch["src"], batch["mask"]  # (B, S)
        x = self.drop(self.embed(src) + self.number(batch["num"]))  # (B, S, E)
        memory, summary = self.rnn(x, mask.sum(1).clamp(min=1))  # (B, S, H), (B, H)
        return self.drop(memory), summary


class BiLSTM(nn.Module):
    """A bidirectional LSTM over right-padded sequences, without packing.

    The backward direction reads each sequence reversed within its own length (its padding
    stays at the end), so both directions are plain unidirectional LSTM calls (the fused
    kernel; PyTorch's packed-sequence path on CPU is about twice as slow) and padding never
    reaches a valid position. Outputs at padded positions are zero.

    Args:
        input_size: features per position.
        hidden: per direction (the output has 2 x hidden).
        layers: stacked bidirectional layers, each reading both directions of the one below.
        dropout: between layers.
    """

    def __init__(self, input_size: int, hidden: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        sizes = [input_size] + [2 * hidden] * (layers - 1)
        self.fwd = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in sizes)
        self.bwd = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in sizes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, E), lengths (B,) >= 1 -> outputs (B, S, 2H), final states of both directions (B, 2H)."""
        S = x.shape[1]
        pos = torch.arange(S, device=x.device).unsqueeze(0)  # (1, S)
        lengths = lengths.to(x.device).unsqueeze(1)  # (B, 1)
        valid = pos < lengths  # (B, S)
        rev = torch.where(valid, lengths - 1 - pos, pos)  # (B, S), its own inverse
        flip = lambda t: t.gather(1, rev.unsqueeze(-1).expand_as(t))
        last = (lengths - 1).unsqueeze(-1)  # (B, 1, 1)
        for i, (fwd, bwd) in enumerate(zip(self.fwd, self.bwd)):
            if i:
                x = self.drop(x)
            ahead, _ = fwd(x)  # (B, S, H)
            back, _ = bwd(flip(x))  # (B, S, H), position s = original position len - 1 - s
            x = torch.cat([ahead, flip(back)], dim=-1) * valid.unsqueeze(-1)  # (B, S, 2H)
        final = torch.cat([t.gather(1, last.expand(-1, 1, t.shape[-1])).squeeze(1) for t in (ahead, back)], -1)
        return x, final  # final: the last layer's states after each direction read the whole sequence


class BertEncoder(nn.Module):
    """A pretrained BERT + number-index embeddings, projected to H.

    Frozen, the BERT is held outside the module's parameters and state dict (it is loaded by
    name, never checkpointed or trained) and its outputs may be cached (`batch["feats"]`).
    Fine-tuned with `train_layers` = k > 0, only its top k layers train: the embeddings and
    lower layers are frozen (in eval mode), so their output may be cached instead and each
    step runs the top k layers alone. While `top_frozen` is set (gradual unfreezing: the
    first epochs train the decoder alone), a batch's cached `feats_out`, the pretrained
    BERT's own output, stands in for the top layers, which then get no gradient.

    Args:
        bert: a transformers encoder model (`AutoModel`), with its `tokenizer`.
        tokenizer: its fast tokenizer (offsets are needed to place the numbers).
        hidden: H.
        finetune: train the BERT too (give it a lower learning rate through parameter groups).
        train_layers: with `finetune`, how many top layers train; 0 (or all of them): every one.
        dropout: on the projected memory.
        max_numbers: number indices beyond this share index 0.
        max_tokens: longer problems are truncated.
        bf16: run the BERT under bfloat16 autocast (its weights stay float32), the same in the
            cache, in training and in decoding: 2-3.5x faster on CPUs with AMX or AVX512-BF16.
    """

    def __init__(self, bert: nn.Module, tokenizer, hidden: int = 256, finetune: bool = False,
                 dropout: float = 0.2, max_numbers: int = 40, max_tokens: int = 256, train_layers: int = 0,
                 bf16: bool = False):
        super().__init__()
        self.tokenizer, self.finetune, self.bf16 = tokenizer, finetune, bf16
        self.top_frozen = False
        self.max_numbers, self.max_tokens, self.hidden = max_numbers, max_tokens, hidden
        n_layers = bert.config.num_hidden_layers
        self.train_layers = train_layers if finetune and 0 < train_layers < n_layers else 0
        if finetune:
            self.bert = bert.requires_grad_(True)
            for module in self._frozen_part():
                module.requires_grad_(False)
        else:
            object.__setattr__(self, "frozen_bert", bert.eval().requires_grad_(False))
        dim = bert.config.hidden_size
        self.proj = nn.Linear(dim, hidden)
        self.number = nn.Embedding(max_numbers + 1, hidden)
        self.drop = nn.Dropout(dropout)

    @property
    def encoder_model(self) -> nn.Module:
        return self.bert if self.finetune else self.frozen_bert

    @property
    def cacheable(self) -> bool:
        """Whether `cache_states` holds everything below the part that trains."""
        return not self.finetune or self.train_layers > 0

    def _frozen_part(self) -> list[nn.Module]:
        if not self.train_layers:
            return []
        layers, pooler = self.bert.encoder.layer, getattr(self.bert, "pooler", None)  # the pooler is unused
        return [self.bert.embeddings, *layers[:len(layers) - self.train_layers], *([pooler] if pooler else [])]

    def _apply(self, fn, recurse=True):  # .to(device) moves the frozen BERT as well
        if not self.finetune:
            self.frozen_bert._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen_part() if self.finetune else [self.frozen_bert]:
            module.eval()
        return self

    def featurize(self, problem: str) -> dict:
        enc = self.tokenizer(problem, truncation=True, max_length=self.max_tokens, return_offsets_mapping=True)
        offsets = [(s, e) for s, e in enc["offset_mapping"]]
        num = [n if e > s else 0 for n, (s, e) in zip(number_index(offsets, problem, self.max_numbers), offsets)]
        return {"src": list(enc["input_ids"]), "num": num}

    def _autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def features(self, batch: State) -> torch.Tensor:
        """(B, S, D) BERT outputs (without gradient when frozen)."""
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()), self._autocast(batch["src"].device):
            out = self.encoder_model(input_ids=batch["src"], attention_mask=batch["mask"].long())
        return out.last_hidden_state.float()

    @torch.no_grad()
    def cache_states(self, batch: State, outputs: bool = False) -> State:
        """What a batch may hold, each (B, S, D): `feats`, the frozen BERT's outputs or the hidden
        states entering the top `train_layers` layers (the frozen part alone is run); with
        `outputs` and top layers to train, also `feats_out`, their pretrained output."""
        if not self.train_layers:
            return {"feats": self.features(batch)}
        was_training = self.training
        self.train(False)  # the frozen part (and, for feats_out, the top layers) in eval mode
        layers = self.bert.encoder.layer
        with self._autocast(batch["src"].device):
            states = self.bert.embeddings(input_ids=batch["src"])  # (B, S, D)
            below = layers[:len(layers) - self.train_layers]
            cached = {"feats": self._run_layers(states, batch["mask"], below).float()}
        if outputs:
            cached["feats_out"] = self.top_layers(cached["feats"], batch["mask"])
        self.train(was_training)
        return cached

    def top_layers(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The trained top layers over cached states (B, S, D); mask (B, S) true at tokens."""
        with self._autocast(states.device):
            return self._run_layers(states, mask, self.bert.encoder.layer[-self.train_layers:]).float()

    @staticmethod
    def _run_layers(states: torch.Tensor, mask: torch.Tensor, layers) -> torch.Tensor:
        additive = (~mask)[:, None, None, :].to(states.dtype) * torch.finfo(states.dtype).min  # (B, 1, 1, S)
        for layer in layers:
            out = layer(states, attention_mask=additive)
            states = out[0] if isinstance(out, tuple) else out
        return states

    def forward(self, batch: State) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, S, H), summary (B, H): the masked mean of the memory."""
        if self.top_frozen and "feats_out" in batch:
            feats = batch["feats_out"]
        elif "feats" not in batch:
            feats = self.features(batch)  # (B, S, D)
        elif self.train_layers:
            feats = self.top_layers(batch["feats"].float(), batch["mask"])
        else:
            feats = batch["feats"]
        memory = self.drop(self.proj(feats.float()) + self.number(batch["num"]))  # (B, S, H)
        m = batch["mask"].unsqueeze(-1).float()
        return memory, (memory * m).sum(1) / m.sum(1).clamp(min=1.0)


class Attention(nn.Module):
    """Luong "general" attention: score(h, m) = h^T W m, softmax over unmasked positions."""

    def __init__(self, query_dim: int, memory_dim: int):
        super().__init__()
        self.proj = nn.Linear(memory_dim, query_dim, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.proj(memory)  # (N, S, Hq), once per sequence

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (N, T, Hq), keys (N, S, Hq), memory (N, S, Hm), mask (N, S) ->
        context (N, T, Hm), scores (N, T, S) (-inf where masked; softmax gives the weights)."""
        scores = torch.bmm(query, keys.transpose(1, 2)).masked_fill(~mask.unsqueeze(1), float("-inf"))  # (N, T, S)
        return torch.bmm(scores.softmax(-1), memory), scores


class LSTMDecoder(nn.Module):
    """LSTM over program tokens, optionally attending to the encoder memory.

    No input feeding: the LSTM reads only the previous tokens, and the attention combines its
    output with the context (Luong et al. 2015, eqs. 5 and 6). So, given its inputs, every
    step can run at once (`forward_sequence`), and teacher forcing needs a sequential pass only
    to choose the inputs, without gradients (`Seq2Seq.choose_inputs`).

    Args:
        vocab_size: program tokens.
        hidden: H (the encoder's memory size too).
        embed_dim: program token embeddings.
        attention: Luong attention; without it the decoder sees the problem only through its
            initial state.
        layers: stacked LSTM layers.
        dropout: on embeddings and the output vector.
        copy_from: with attention, the id of `n0` (tokens `n0 .. n{max_numbers-1}` contiguous):
            the logit of `n_i` also gets the best attention score over the input tokens that
            hold number i, a pointer to the problem's numbers. None: no pointer.
        max_numbers: how many number tokens the pointer covers.
    """

    def __init__(self, vocab_size: int, hidden: int = 256, embed_dim: int = 128, attention: bool = True,
                 layers: int = 1, dropout: float = 0.2, copy_from: int | None = None, max_numbers: int = 40):
        super().__init__()
        if copy_from is not None and not attention:
            raise ValueError("the number pointer needs attention")
        self.hidden, self.layers, self.use_attention = hidden, layers, attention
        self.vocab_size, self.copy_from, self.max_numbers = vocab_size, copy_from, max_numbers
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.LSTM(embed_dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.init = nn.Linear(hidden, 2 * layers * hidden)
        if attention:
            self.attention = Attention(hidden, hidden)
            self.combine = nn.Linear(2 * hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def start(self, memory: torch.Tensor, summary: torch.Tensor, mask: torch.Tensor,
              num: torch.Tensor) -> tuple[State, State]:
        """(fixed inputs, initial recurrent state), every tensor batch-first; num (B, S) number indices."""
        B, L, H = summary.shape[0], self.layers, self.hidden
        hc = torch.tanh(self.init(summary)).view(B, 2, L, H)
        state = {"h": hc[:, 0], "c": hc[:, 1]}  # (B, L, H) each
        fixed = {"memory": memory, "mask": mask, "num": num}
        if self.use_attention:
            fixed["keys"] = self.attention.keys(memory)
        return fixed, state

    def forward_sequence(self, fixed: State, state: State, inputs: torch.Tensor) -> tuple[torch.Tensor, State]:
        """inputs (N, T) tokens -> logits (N, T, V) and the state after the last. `fixed` holds B rows
        and the state N = B * g rows, grouped by example (beam search keeps g hypotheses of each
        example in consecutive rows): the g rows of one example attend to its memory together."""
        N, T = inputs.shape
        x = self.drop(self.embed(inputs))  # (N, T, E)
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())  # (L, N, H)
        out, (h, c) = self.rnn(x, hc)  # (N, T, H)
        new_state = {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}
        if not self.use_attention:
            return self.out(self.drop(out)), new_state
        B = fixed["memory"].shape[0]
        query = out.reshape(B, N // B * T, -1)  # (B, gT, H)
        context, scores = self.attention(query, fixed["keys"], fixed["memory"], fixed["mask"])  # (B, gT, H|S)
        logits = self.out(self.drop(torch.tanh(self.combine(torch.cat([query, context], dim=-1)))))  # (B, gT, V)
        if self.copy_from is not None:
            logits = logits + self.pointer(scores, fixed["num"])
        return logits.reshape(N, T, -1), new_state

    def pointer(self, scores: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """(B, Q, V) additions to the logits: at `n_i`, the best attention score (B, Q, S) over the input
        positions holding number i, num (B, S); Q queries per example (T, or g * T for g beams)."""
        M = self.max_numbers
        best = scores.new_full((*scores.shape[:2], M + 1), float("-inf"))
        best = best.scatter_reduce(2, num.clamp(max=M).unsqueeze(1).expand_as(scores), scores, "amax")
        best = best[..., 1:]  # (N, T, M); index 0 = not a number
        best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
        return F.pad(best, (self.copy_from, self.vocab_size - self.copy_from - M))

    def step(self, fixed: State, state: State, prev: torch.Tensor) -> tuple[torch.Tensor, State]:
        """prev (N,) tokens -> logits (N, V) and the next state."""
        logits, state = self.forward_sequence(fixed, state, prev.unsqueeze(1))
        return logits.squeeze(1), state


class Seq2Seq(nn.Module):
    """An encoder and an `LSTMDecoder`, with teacher forcing and greedy decoding.

    Args:
        encoder: `GloveEncoder` or `BertEncoder` (anything with `featurize` and
            `forward(batch) -> (memory, summary)`).
        decoder: `LSTMDecoder`.
        bos, eos, pad: program token ids.
    """

    def __init__(self, encoder: nn.Module, decoder: LSTMDecoder, bos: int, eos: int, pad: int):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.bos, self.eos, self.pad = bos, eos, pad

    def start(self, batch: State) -> tuple[State, State]:
        memory, summary = self.encoder(batch)
        return self.decoder.start(memory, summary, batch["mask"], batch["num"])

    def step(self, fixed: State, state: State, prev: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Log-probabilities (N, V) of the next token, for beam search."""
        logits, state = self.decoder.step(fixed, state, prev)
        return F.log_softmax(logits, dim=-1), state

    def forward(self, batch: State, targets: torch.Tensor, teacher_forcing: float = 1.0) -> torch.Tensor:
        """Logits (B, T, V) for targets (B, T). At each step the input is the gold previous token
        with probability `teacher_forcing`, else the model's own previous prediction (argmax)."""
        fixed, state = self.start(batch)
        inputs = torch.cat([targets.new_full((targets.shape[0], 1), self.bos), targets[:, :-1]], dim=1)  # (B, T)
        if teacher_forcing < 1.0:
            inputs = self.choose_inputs(fixed, state, targets, teacher_forcing)
        return self.decoder.forward_sequence(fixed, state, inputs)[0]

    @torch.no_grad()
    def choose_inputs(self, fixed: State, state: State, targets: torch.Tensor, p: float) -> torch.Tensor:
        """(B, T) decoder inputs: step by step, the gold previous token with probability p, else
        the argmax the model predicts after the inputs chosen so far. Given these inputs the
        decoder's outputs are what a step-by-step loop would compute, so the gradient pass
        runs them all at once."""
        B, T = targets.shape
        prev = targets.new_full((B,), self.bos)
        inputs = [prev]
        for t in range(T - 1):
            logits, state = self.decoder.step(fixed, state, prev)
            use_gold = torch.rand(B, device=targets.device) < p
            prev = torch.where(use_gold, targets[:, t], logits.argmax(-1))
            inputs.append(prev)
        return torch.stack(inputs, 1)

    @torch.no_grad()
    def greedy(self, batch: State, max_len: int) -> torch.Tensor:
        """(B, <= max_len) argmax tokens, `pad` after each `eos`."""
        fixed, state = self.start(batch)
        B = batch["src"].shape[0]
        prev = batch["src"].new_full((B,), self.bos)
        done = torch.zeros(B, dtype=torch.bool, device=prev.device)
        out = []
        for _ in range(max_len):
            logits, state = self.decoder.step(fixed, state, prev)
            logits[:, [self.pad, self.bos]] = float("-inf")  # as beam search: never emitted
            tok = logits.argmax(-1).masked_fill(done, self.pad)
            out.append(tok)
            done |= tok == self.eos
            prev = tok
            if done.all():
                break
        return torch.stack(out, 1)


def collate(items: list[dict], pad_id: int) -> State:
    """Featurized problems (`src`, `num`, optional `tgt`, `feats`, `feats_out`, `n_numbers`) -> a padded batch."""
    batch = {"src": pad([it["src"] for it in items]), "num": pad([it["num"] for it in items])}
    batch["mask"] = pad([[1] * len(it["src"]) for it in items]).bool()  # (B, S)
    batch["n_numbers"] = torch.tensor([it.get("n_numbers", 0) for it in items])
    if "tgt" in items[0]:
        batch["tgt"] = pad([it["tgt"] for it in items], pad_id)  # (B, T)
    for key in ("feats", "feats_out"):
        if key in items[0]:
            S, D = batch["src"].shape[1], items[0][key].shape[-1]
            feats = items[0][key].new_zeros(len(items), S, D)
            for i, it in enumerate(items):
                feats[i, :len(it[key])] = it[key]
            batch[key] = feats  # (B, S, D)
    if "index" in items[0]:
        batch["index"] = torch.tensor([it["index"] for it in items])
    return batch


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean cross-entropy over non-pad target tokens: logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)
