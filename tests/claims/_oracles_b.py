"""Brute-force oracles for the claim tests of C3 (hash-then-payload) and C6 (offscreen stripping).

Written from CLAIMS.md's descriptions with plain Python and NumPy; nothing here imports the library.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np

# --------------------------------------------------------------------------------------------------
# C3: documents (h, y, EOD...) with the end-of-document token V, as explicit weighted lists
# --------------------------------------------------------------------------------------------------


def base_digits(index: int, vocab: int, length: int) -> tuple[int, ...]:
    """The base-V digits of `index`, most significant first."""
    return tuple((index // vocab ** (length - 1 - i)) % vocab for i in range(length))


def hash_documents(table, vocab: int, m: int, k: int, length: int) -> tuple[dict, dict]:
    """(P, Q0) as {document: probability} over documents of `length` >= k + m tokens.

    P: y uniform on V^m, document (H(y), y, EOD, ...). Q0: h drawn from the hash marginal and y uniform,
    independently, then EOD: it never looks at whether H(y) = h."""
    n = vocab**m
    tail = (vocab,) * (length - k - m)
    counts = Counter(int(h) for h in table)
    data, blind = {}, {}
    for y in range(n):
        data[base_digits(int(table[y]), vocab, k) + base_digits(y, vocab, m) + tail] = 1.0 / n
    for h, count in counts.items():
        for y in range(n):
            blind[base_digits(h, vocab, k) + base_digits(y, vocab, m) + tail] = count / n / n
    return data, blind


def dense(documents: dict, vocab: int, length: int) -> np.ndarray:
    """The distribution as a vector over all vocab^length sequences (lexicographic order)."""
    out = np.zeros(vocab**length)
    powers = vocab ** np.arange(length - 1, -1, -1)
    for doc, prob in documents.items():
        out[int(np.dot(doc, powers))] += prob
    return out


def q0_payload_terms(table, vocab: int, m: int) -> list[float]:
    """[m]: E_P KL(p(y_s | h, y_<s) || uniform) at each payload position s, counting the preimages of
    h that continue each payload prefix, one document at a time."""
    n = vocab**m
    payloads = [base_digits(y, vocab, m) for y in range(n)]
    terms = []
    for s in range(m):
        total = 0.0
        for y in range(n):
            h = table[y]
            consistent = [z for z in range(n) if table[z] == h and payloads[z][:s] == payloads[y][:s]]
            nexts = Counter(payloads[z][s] for z in consistent)
            kl = sum(c / len(consistent) * math.log(c / len(consistent) * vocab) for c in nexts.values())
            total += kl / n
        terms.append(total)
    return terms


# --------------------------------------------------------------------------------------------------
# C6: the offscreen story, branch by branch
# --------------------------------------------------------------------------------------------------


def offscreen_layout(num_commands: int, num_contents: int, marked: bool) -> dict:
    """Token ids as documented: commands, contents, "say c", "say nothing", EMPTY, [STRIPPED], EOD."""
    m, k = num_commands, num_contents
    layout = dict(
        commands=tuple(range(m)),
        contents=tuple(range(m, m + k)),
        says=tuple(range(m + k, m + 2 * k)),
        nothing=m + 2 * k,
        empty=m + 2 * k + 1,
    )
    layout["stripped"] = m + 2 * k + 2 if marked else None
    layout["eod"] = m + 2 * k + (3 if marked else 2)
    layout["vocab"] = layout["eod"] + 1
    return layout


def offscreen_story(s: float, e: float, content, command, marked: bool) -> tuple[dict, dict]:
    """({(command, shown, commentary): probability}, layout): every branch of the story (command;
    empty or content; stripped or kept; what is shown; what the commentary says)."""
    content, command = np.asarray(content, float), np.asarray(command, float)
    layout = offscreen_layout(len(command), content.shape[1], marked)
    docs: dict = {}

    def add(doc, prob):
        if prob > 0:
            docs[doc] = docs.get(doc, 0.0) + prob

    for i, c in itertools.product(range(len(command)), range(content.shape[1])):
        cmd, say = layout["commands"][i], layout["says"][c]
        add((cmd, layout["contents"][c], say), command[i] * (1 - e) * content[i, c] * (1 - s))
        add((cmd, layout["stripped"] if marked else layout["empty"], say), command[i] * (1 - e) * content[i, c] * s)
    for i in range(len(command)):
        add((layout["commands"][i], layout["empty"], layout["nothing"]), command[i] * e)
    return docs, layout


def story_next(docs: dict, prefix: tuple, vocab: int) -> np.ndarray:
    """[V]: P(next = v | prefix) from the story's documents; all 0 if the prefix is impossible."""
    out = np.zeros(vocab)
    for doc, prob in docs.items():
        if doc[: len(prefix)] == tuple(prefix):
            out[doc[len(prefix)]] += prob
    return out / out.sum() if out.sum() > 0 else out


def entropy(probs) -> float:
    return float(sum(-p * math.log(p) for p in np.asarray(probs, float) if p > 0))
