import itertools

import torch

from lrn.modules.crf import CRF


def brute_force(crf: CRF, emissions: torch.Tensor, length: int):
    """(log Z, best path, best score) of one sequence by enumerating every tag sequence."""
    trans, start, end = crf._scores()
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        s = start[path[0]] + end[path[-1]]
        s = s + sum(emissions[t, path[t]] for t in range(length))
        s = s + sum(trans[path[t - 1], path[t]] for t in range(1, length))
        scores[path] = s
    stacked = torch.stack(list(scores.values()))
    best = max(scores, key=lambda p: scores[p].item())
    return torch.logsumexp(stacked, 0), list(best), scores[best]


def random_crf(num_tags: int, seed: int, constrained: bool = False) -> CRF:
    torch.manual_seed(seed)
    kwargs = {}
    if constrained:
        allowed = torch.rand(num_tags, num_tags) > 0.3
        allowed[:, 0] = True  # keep every sequence length feasible
        kwargs = dict(allowed=allowed, allowed_start=torch.arange(num_tags) != 1)
    crf = CRF(num_tags, **kwargs)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start.normal_()
        crf.end.normal_()
    return crf


def test_forward_algorithm_and_viterbi_match_brute_force():
    for constrained in (False, True):
        crf = random_crf(3, seed=1, constrained=constrained)
        lengths = torch.tensor([4, 1, 3, 2])
        emissions = torch.randn(4, 4, 3)  # (T, B, K)
        log_z = crf.log_partition(emissions, lengths)
        tags, best = crf.decode(emissions, lengths)
        for b, n in enumerate(lengths.tolist()):
            bf_z, bf_path, bf_best = brute_force(crf, emissions[:, b], n)
            assert torch.allclose(log_z[b], bf_z, atol=1e-5)
            assert tags[:n, b].tolist() == bf_path
            assert torch.allclose(best[b], bf_best, atol=1e-5)
            assert tags[n:, b].eq(0).all()


def test_score_matches_brute_force_and_nll_is_a_normalised_distribution():
    crf = random_crf(3, seed=2)
    emissions = torch.randn(3, 1, 3)
    lengths = torch.tensor([3])
    total = torch.zeros(())
    trans, start, end = crf._scores()
    for path in itertools.product(range(3), repeat=3):
        tags = torch.tensor(path).unsqueeze(1)
        expected = (start[path[0]] + end[path[2]] + sum(emissions[t, 0, path[t]] for t in range(3))
                    + trans[path[0], path[1]] + trans[path[1], path[2]])
        assert torch.allclose(crf.score(emissions, tags, lengths)[0], expected, atol=1e-5)
        total = total + torch.exp(-crf.nll(emissions, tags, lengths)[0])
    assert torch.allclose(total, torch.tensor(1.0), atol=1e-5)


def test_padding_does_not_change_results_and_gradients_flow():
    crf = random_crf(4, seed=3)
    emissions = torch.randn(5, 2, 4, requires_grad=True)
    lengths = torch.tensor([5, 2])
    tags = torch.randint(0, 4, (5, 2))
    nll = crf.nll(emissions, tags, lengths)
    short = crf.nll(emissions[:2, 1:], tags[:2, 1:], lengths[1:])
    assert torch.allclose(nll[1], short[0], atol=1e-5)
    nll.sum().backward()
    assert emissions.grad[2:, 1].abs().max() == 0  # padded steps get no gradient
    assert crf.transitions.grad.abs().sum() > 0
    # Decoding a padded sequence equals decoding it alone.
    full, _ = crf.decode(emissions.detach(), lengths)
    alone, _ = crf.decode(emissions.detach()[:2, 1:], lengths[1:])
    assert full[:2, 1].tolist() == alone[:, 0].tolist()


def test_forbidden_transitions_are_never_decoded():
    allowed = torch.ones(3, 3, dtype=torch.bool)
    allowed[0, 2] = False  # tag 0 may not be followed by tag 2
    crf = CRF(3, allowed=allowed, allowed_start=torch.tensor([True, True, False]))
    emissions = torch.tensor([[5.0, 0, 0], [0, 0, 9.0]]).unsqueeze(1)  # wants 0 -> 2
    tags, _ = crf.decode(emissions, torch.tensor([2]))
    assert tags[:, 0].tolist() != [0, 2]
    tags, _ = crf.decode(torch.tensor([[0, 0, 9.0]]).unsqueeze(1), torch.tensor([1]))
    assert tags.item() != 2
