"""The CPU TDT loss against a brute-force sum over every alignment, and autograd checks.

NeMo's own pure-PyTorch reference (TDTLossPytorch) hard-codes `.cuda()`, so it cannot serve as a CPU
oracle here; the brute-force sum is written from the same definition (see tools/fixtures/tdt_loss.py).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import pytest
import torch

from tools.fixtures.tdt_loss import tdt_loss

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

DURATION_SETS = [[0, 1, 2, 3, 4], [0, 1, 2], [1, 2]]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny tensors: threads only add overhead, and the machine is shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def paths(t: int, u: int, n_frames: int, n_tokens: int, durations: Sequence[int]) -> Iterator[list[tuple[int, int]]]:
    """Every alignment from state (t, u) to the end, as (u before the step or -1 for blank, duration) steps."""
    for d in durations:
        if d > 0 and t + d == n_frames and u == n_tokens:
            yield [(-1, d)]  # the closing blank lands exactly on the last frame boundary
        if d > 0 and t + d < n_frames:
            for rest in paths(t + d, u, n_frames, n_tokens, durations):
                yield [(-1, d), *rest]
        if u < n_tokens and t + d < n_frames:
            for rest in paths(t + d, u + 1, n_frames, n_tokens, durations):
                yield [(u, d), *rest]


def brute_force_nll(
    logits: torch.Tensor,
    targets: Sequence[int],
    n_frames: int,
    n_tokens: int,
    blank: int,
    durations: Sequence[int],
    sigma: float,
) -> float:
    """-log of the summed probability of every complete alignment of one utterance (logits [T, U+1, V+1+D])."""
    n_labels = logits.shape[-1] - len(durations)
    label_lp = (torch.log_softmax(logits[..., :n_labels].double(), dim=-1) - sigma).tolist()
    duration_lp = torch.log_softmax(logits[..., n_labels:].double(), dim=-1).tolist()
    total = 0.0
    for path in paths(0, 0, n_frames, n_tokens, durations):
        t, u, log_p = 0, 0, 0.0
        for token_at, d in path:
            label = blank if token_at < 0 else targets[u]
            log_p += label_lp[t][u][label] + duration_lp[t][u][durations.index(d)]
            t, u = t + d, u + (token_at >= 0)
        assert (t, u) == (n_frames, n_tokens)
        total += math.exp(log_p)
    return -math.log(total)


def random_batch(
    gen: torch.Generator,
    frame_lengths: Sequence[int],
    token_lengths: Sequence[int],
    n_labels: int,
    n_durations: int,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits, padded targets (pad id 0) and lengths; the blank is the last label."""
    batch, max_t, max_u = len(frame_lengths), max(frame_lengths), max(token_lengths)
    logits = 2.0 * torch.randn(batch, max_t, max_u + 1, n_labels + n_durations, generator=gen, dtype=dtype)
    targets = torch.randint(0, n_labels - 1, (batch, max_u), generator=gen)
    for b, n in enumerate(token_lengths):
        targets[b, n:] = 0
    return logits, targets, torch.tensor(frame_lengths), torch.tensor(token_lengths)


@pytest.mark.parametrize("durations", DURATION_SETS)
@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_matches_brute_force(durations: list[int], sigma: float) -> None:
    gen = torch.Generator().manual_seed(len(durations) * 10 + int(sigma * 100))
    n_labels = 4
    # Uneven lengths so that every item but one is padded in T, in U or both; [1, 2] needs U < T.
    cases = [([5, 3, 4, 2], [3, 1, 0, 1]), ([4, 5, 1], [2, 3, 0]), ([3, 3], [2, 1])]
    for frame_lengths, token_lengths in cases:
        logits, targets, t_len, u_len = random_batch(gen, frame_lengths, token_lengths, n_labels, len(durations))
        got = tdt_loss(logits, targets, t_len, u_len, blank=n_labels - 1, durations=durations, sigma=sigma)
        want = [
            brute_force_nll(logits[b], targets[b].tolist(), t, u, n_labels - 1, durations, sigma)
            for b, (t, u) in enumerate(zip(frame_lengths, token_lengths, strict=True))
        ]
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("durations", "frame_lengths", "token_lengths"),
    [
        ([2, 0, 1], [5, 4, 2], [2, 3, 1]),  # NeMo sorts its durations; ours need not be
        ([0, 2], [4, 6, 2], [3, 1, 2]),  # no duration 1: odd frames are never reached
        ([3, 1], [6, 4, 5], [2, 1, 3]),  # no duration 0: every token takes a frame
    ],
)
def test_unusual_duration_sets_match_brute_force(
    durations: list[int], frame_lengths: list[int], token_lengths: list[int]
) -> None:
    gen = torch.Generator().manual_seed(sum(durations))
    logits, targets, t_len, u_len = random_batch(gen, frame_lengths, token_lengths, 5, len(durations))
    got = tdt_loss(logits, targets, t_len, u_len, blank=4, durations=durations)
    want = [
        brute_force_nll(logits[b], targets[b].tolist(), t, u, 4, durations, 0.0)
        for b, (t, u) in enumerate(zip(frame_lengths, token_lengths, strict=True))
    ]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-4, rtol=0)


def test_float32_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(7)
    durations = [0, 1, 2, 3, 4]
    logits, targets, t_len, u_len = random_batch(gen, [5, 4], [3, 2], 5, 5, dtype=torch.float32)
    got = tdt_loss(logits, targets, t_len, u_len, blank=4, durations=durations, sigma=0.05)
    assert got.dtype == torch.float32
    want = [brute_force_nll(logits[b], targets[b].tolist(), 5 - b, 3 - b, 4, durations, 0.05) for b in range(2)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), atol=1e-4, rtol=0)


def test_batch_items_are_independent() -> None:
    gen = torch.Generator().manual_seed(3)
    durations = [0, 1, 2, 3, 4]
    frame_lengths, token_lengths = [9, 6, 7], [4, 2, 5]
    logits, targets, t_len, u_len = random_batch(gen, frame_lengths, token_lengths, 6, 5)
    batched = tdt_loss(logits, targets, t_len, u_len, blank=5, durations=durations)
    for b, (t, u) in enumerate(zip(frame_lengths, token_lengths, strict=True)):
        item = slice(b, b + 1)
        alone = tdt_loss(
            logits[item, :t, : u + 1], targets[item, :u], t_len[item], u_len[item], blank=5, durations=durations
        )
        torch.testing.assert_close(batched[item], alone)


@pytest.mark.parametrize("durations", [[0, 1, 2], [1, 2]])
def test_gradcheck(durations: list[int]) -> None:
    gen = torch.Generator().manual_seed(5)
    logits, targets, t_len, u_len = random_batch(gen, [4, 3], [2, 1], 3, len(durations))
    logits.requires_grad_()

    def loss(x: torch.Tensor) -> torch.Tensor:
        return tdt_loss(x, targets, t_len, u_len, blank=2, durations=durations, sigma=0.05)

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-6)


def test_padding_gets_no_gradient_and_no_say() -> None:
    gen = torch.Generator().manual_seed(9)
    durations = [0, 1, 2, 3, 4]
    frame_lengths, token_lengths = [6, 4, 5], [3, 1, 2]
    logits, targets, t_len, u_len = random_batch(gen, frame_lengths, token_lengths, 5, 5)
    valid = torch.zeros(logits.shape[:3], dtype=torch.bool)
    for b, (t, u) in enumerate(zip(frame_lengths, token_lengths, strict=True)):
        valid[b, :t, : u + 1] = True
        targets[b, u:] = -1  # padding ids outside the vocabulary must be harmless too

    logits.requires_grad_()
    clean = tdt_loss(logits, targets, t_len, u_len, blank=4, durations=durations)
    (clean_grad,) = torch.autograd.grad(clean.sum(), logits)
    # Garbage, even non-finite, in the padding must change neither the loss nor the real gradients.
    noisy_logits = logits.detach().clone()
    garbage = [math.inf, -math.inf, math.nan, 1e4, 0.0, -1e4, 3.0, 2.0, 1.0, -3.0]
    noisy_logits[~valid] = torch.tensor(garbage, dtype=logits.dtype)
    noisy_logits.requires_grad_()
    noisy = tdt_loss(noisy_logits, targets, t_len, u_len, blank=4, durations=durations)
    (grad,) = torch.autograd.grad(noisy.sum(), noisy_logits)

    torch.testing.assert_close(noisy, clean)
    torch.testing.assert_close(grad[valid], clean_grad[valid])
    assert torch.isfinite(grad).all()
    assert (grad[~valid] == 0).all()
    assert (grad[valid].abs().sum(dim=-1) > 0).all()


def test_impossible_alignment_is_huge_but_finite() -> None:
    # With durations [1, 2], three tokens plus the closing blank cannot fit in three frames.
    logits = torch.zeros(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    loss = tdt_loss(logits, torch.tensor([[0, 1, 0]]), torch.tensor([3]), torch.tensor([3]), blank=2, durations=[1, 2])
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert loss.item() > 1e20
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize(
    ("shape", "durations", "blank", "message"),
    [
        ((2, 3, 3, 7), [0, 1, 2], 4, "targets must be"),  # logits say U = 2, the targets have 3 columns
        ((2, 3, 4, 7), [], 3, "durations must be"),
        ((2, 3, 4, 7), [0, 0, 1], 3, "durations must be"),
        ((2, 3, 4, 7), [0], 6, "positive"),
        ((2, 3, 4, 7), [0, 1, 2], 4, "blank 4"),
    ],
)
def test_rejects_bad_arguments(shape: tuple[int, ...], durations: list[int], blank: int, message: str) -> None:
    logits = torch.zeros(shape)
    targets = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=message):
        tdt_loss(logits, targets, torch.tensor([3, 2]), torch.tensor([3, 1]), blank=blank, durations=durations)


def test_rejects_bad_lengths_and_targets() -> None:
    logits = torch.zeros(1, 3, 3, 6)
    with pytest.raises(ValueError, match="lengths"):
        tdt_loss(logits, torch.tensor([[0, 1]]), torch.tensor([4]), torch.tensor([2]), blank=2, durations=[0, 1, 2])
    with pytest.raises(ValueError, match="targets must be label ids"):
        tdt_loss(logits, torch.tensor([[0, 2]]), torch.tensor([3]), torch.tensor([2]), blank=2, durations=[0, 1, 2])


def test_all_paths_enumerated() -> None:
    # The brute force itself: with durations [1] every step, token or blank, takes one frame and the last
    # one is the closing blank, so U tokens fit in T frames in C(T - 1, U) ways.
    for n_frames, n_tokens in itertools.product(range(1, 6), range(4)):
        count = sum(1 for _ in paths(0, 0, n_frames, n_tokens, [1]))
        assert count == math.comb(n_frames - 1, n_tokens)
