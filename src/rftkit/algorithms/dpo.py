"""Online DPO from verifier rewards: best-vs-worst pairs from each group, DPO's loss against the reference.

DPO: Rafailov et al. 2023, "Direct Preference Optimization", eq. (7); online (on-policy pairs,
labelled as they are sampled): Guo et al. 2024, "Direct Language Model Alignment from Online AI
Feedback", algorithm 1, with the verifier's reward in place of the AI annotator.
Each step, every prompt's G completions are ranked by reward; the best (chosen) and the worst
(rejected) form one pair, and a group whose rewards all tie gives no pair (no preference). The
loss per pair is

    -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))])

with log pi(y) the sum of the completion's token log-probs and ref the same base weights with the
adapter disabled (a frozen copy in full-weight runs). Included: the sigmoid loss, `beta` as in
DPO (the inverse temperature of the implicit reward beta * log(pi / ref)), one pair per group
(the extreme one: the largest reward gap), first index on ties. Omitted: the IPO / hinge /
robust variants, label smoothing, length normalisation of log pi, and more than one pair per
group (all G(G-1)/2 pairs of the group would reuse each completion many times).

How it plugs into the update: the targets select the rows [chosen_0, rejected_0, chosen_1, ...]
(`UpdateTargets.rows`) and mark them +1 / -1 in `advantages`; the update trains on those rows in
that order, in micro-batches of whole pairs (`LossSettings.rows_per_item = 2`), and the
registered loss reads each pair from two adjacent rows. Spreading the pair's loss over the tokens
of both its rows and taking the per-sequence mean makes the batch loss the mean over pairs, with
the update's ordinary whole-batch denominators (see `rftkit.algorithms.losses.online_dpo_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def best_worst_pairs(rewards: torch.Tensor, group_size: int, atol: float = 1e-6) -> torch.Tensor:
    """(chosen, rejected) row indices [P, 2] for rewards laid out [B*G] group by group: each group's best
    against its worst; groups whose rewards all tie (max - min <= atol) are skipped."""
    grouped = rewards.view(-1, group_size)  # [B, G]
    best, worst = grouped.argmax(dim=1), grouped.argmin(dim=1)
    informative = (grouped.max(dim=1).values - grouped.min(dim=1).values) > atol
    offset = torch.arange(grouped.shape[0], device=rewards.device) * group_size
    return torch.stack([best + offset, worst + offset], dim=1)[informative]


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss [P], margin [P]): -log sigmoid(margin), margin = beta * (chosen log-ratio - rejected log-ratio);
    every argument is a sequence log-prob [P] (summed over the completion's tokens)."""
    margin = beta * ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))
    return -F.logsigmoid(margin), margin
