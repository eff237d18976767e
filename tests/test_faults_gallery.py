"""A gallery save killed with SIGKILL at a random moment: the file on disk is the old or the new gallery, whole.

A child process saves generation 1, 2, 3, ... of a gallery over one path, each generation a different size
(so a torn write cannot pass for a whole one), and reports each finished save. The parent kills it at a random
moment, then loads the file: it must load without error and be exactly generation k or k+1, where k is the
last save reported (k+1: killed after the rename but before the report). Each format is tried.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.gallery import Gallery

ROUNDS = 6
DIM = 64

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from test_faults_gallery import generation
    path = Path(sys.argv[1])
    k = int(sys.argv[2])
    while True:
        k += 1
        generation(k).save(path)
        print(k, flush=True)
    """
)


def generation(k: int) -> Gallery:
    """Gallery number ``k``: 40 + (k % 50) rows, each row and label derived from k (checkable after loading)."""
    g = Gallery(DIM)
    n = 40 + k % 50
    rng = np.random.default_rng(k)
    g.add_many([f"gen{k}-p{i % 7}" for i in range(n)], rng.standard_normal((n, DIM)).astype(np.float32))
    return g


def which_generation(g: Gallery) -> int:
    k = int(g.labels[0].split("-")[0].removeprefix("gen"))
    want = generation(k)
    assert g.labels == want.labels
    np.testing.assert_allclose(g.embeddings, want.embeddings, atol=1e-6)
    return k


@pytest.mark.parametrize("suffix", [".rdg", ".npz", ".json"])
def test_sigkill_during_saves_leaves_old_or_new(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"gallery{suffix}"
    generation(1).save(path)
    rng = random.Random(suffix)
    last = 1
    for _ in range(ROUNDS):
        cmd = [sys.executable, "-c", CHILD, str(path), str(last), str(Path(__file__).parent)]
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        reported = int(child.stdout.readline())  # saving runs: kill at a random moment from now
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        reported = max([reported, *map(int, out.split())])
        found = which_generation(Gallery.load(path))
        assert found in (reported, reported + 1), (found, reported)
        last = found
    assert last > 1 + ROUNDS  # it really was saving, many times per round
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(n.startswith(f".{path.name}.") and n.endswith(".tmp") for n in leftovers)  # only temp files
