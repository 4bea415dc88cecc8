"""ESPnet's ASR model plus a validation word error rate of greedy CTC (``wer_ctc``).

For CTC-only models ESPnet reports ``cer_ctc`` but no WER, while the papers pick the
checkpoint by dev WER. With ``model: espnet_ctc_wer`` the trainer's validation also
logs ``wer_ctc`` (word errors / reference words of each batch, greedy decoding over
each utterance's valid frames only; errors counted on sclite's alignment, like the
scored WERs), so ``best_model_criterion: [[valid, wer_ctc, min]]``
selects ``valid.wer_ctc.best.pth``. Training and the saved weights are unchanged:
the class adds no parameters, so its checkpoints load into ESPnet's plain model too.

``ctc_blank_prior`` (``model_conf``, default off) initialises the CTC output bias so that
the blank has this probability on every frame at the start (the other tokens' biases are
zeroed). A new linear CTC head starts with the blank at 1/V like any token; its bias moves
by about one learning rate per Adam step, and on some seeds the head learns characters
before the blank: every frame then carries a character (each one spread over ~4 frames),
a CTC local optimum that the small heads of stage 7 never leave (the blank plateau's
mirror image: dev WER ~88 with almost no blank frames).

``frontend_lr`` (``model_conf``, default off; needs ``exclude_weight_decay: true``) gives the
frontend (the SSL upstream) its own peak learning rate while the new CTC head keeps
``optim_conf.lr``: a fine-tuning whose task vector stays small next to the pre-trained model,
the premise of task-vector merging (docs/merging.md, ``--merge_finetune_config``).
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch

from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable

from espnet_delta.asr.greedy_ctc import ids_to_text
from espnet_delta.data.word_align import count_errors


class CTCWERModel(ESPnetASRModel):
    """``ESPnetASRModel`` whose validation stats add ``wer_ctc`` (greedy CTC, per batch)."""

    def __init__(self, *args, ctc_blank_prior: Optional[float] = None, frontend_lr: Optional[float] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._wer_ctc: Optional[float] = None
        if ctc_blank_prior is not None:
            self.init_blank_prior(float(ctc_blank_prior))
        if frontend_lr is not None:
            self.set_frontend_lr(float(frontend_lr))

    def set_frontend_lr(self, lr: float) -> None:
        """Give every frontend (SSL upstream) parameter its own peak learning rate ``lr``, while the
        CTC head keeps ``optim_conf.lr``: ESPnet's per-parameter hyperparameters (``_optim``), which
        its optimizer builder turns into a parameter group when the config sets
        ``exclude_weight_decay: true`` (espnet2/optimizers/optim_groups.py); the scheduler scales
        both groups alike. The merging regime (docs/merging.md) keeps the task vector small this way."""
        if not lr > 0.0:
            raise ValueError(f"model_conf.frontend_lr={lr}; expected a positive learning rate")
        for param in self.frontend.parameters():
            param._optim = {"lr": lr}

    def init_blank_prior(self, prior: float) -> None:
        """CTC bias: blank log(prior (V-1) / (1 - prior)), others 0 (softmax of the bias alone = prior)."""
        if not 0.0 < prior < 1.0:
            raise ValueError(f"model_conf.ctc_blank_prior={prior}; expected a probability in (0, 1)")
        bias = self.ctc.ctc_lo.bias
        with torch.no_grad():
            bias.zero_()
            bias[self.blank_id] = math.log(prior * (bias.numel() - 1) / (1.0 - prior))

    def _calc_ctc_loss(self, encoder_out, encoder_out_lens, ys_pad, ys_pad_lens):
        loss_ctc, cer_ctc = super()._calc_ctc_loss(encoder_out, encoder_out_lens, ys_pad, ys_pad_lens)
        if not self.training and self._wer_ctc is None:  # the main CTC branch comes first
            self._wer_ctc = self._greedy_wer(encoder_out, encoder_out_lens, ys_pad, ys_pad_lens)
        return loss_ctc, cer_ctc

    def _greedy_wer(self, encoder_out, encoder_out_lens, ys_pad, ys_pad_lens) -> Optional[float]:
        best = self.ctc.argmax(encoder_out).cpu()
        hyps: List[str] = []
        refs: List[str] = []
        for b in range(best.size(0)):
            hyps.append(ids_to_text(best[b, : int(encoder_out_lens[b])].tolist(), self.token_list))
            refs.append(ids_to_text(ys_pad[b, : int(ys_pad_lens[b])].tolist(), self.token_list, collapse=False))
        errors = sum(count_errors(r.split(), h.split()).errors for h, r in zip(hyps, refs))
        words = sum(len(r.split()) for r in refs)
        return errors / words if words else None

    def forward(self, speech, speech_lengths, text, text_lengths, **kwargs):
        self._wer_ctc = None
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        if self._wer_ctc is not None:
            # a (1,) tensor like the other stats: DDP and multi-GPU average them with
            # ESPnet's recursive_average, which takes tensors only
            stats["wer_ctc"] = force_gatherable(self._wer_ctc, loss.device)
        self._wer_ctc = None
        return loss, stats, weight
