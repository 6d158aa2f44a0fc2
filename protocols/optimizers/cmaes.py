"""CMA-ES through pycma, set up as the labs run it (DESIGN §5).

λ = 40, σ₀ = 3, start from the zero code, μ = λ/2 (pycma's default). Scores are
maximised, so pycma (a minimiser) is told their negatives.

Randomness: every random number pycma draws on the ask/tell path goes through
its ``randn`` option (the samplers, and the Mahalanobis rescaling of mirrored
or injected directions). We pass a callable over a private
``np.random.Generator(PCG64(seed))``, so numpy's global RNG is neither used
nor touched, and with ``seed=nan`` pycma does not reseed it either. The other
``np.random`` calls in pycma sit behind features we do not enable (TPA
step-size consistency checks, integer variables, random coordinate
transformations, surrogate models, restarts in ``fmin``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import OPTIMIZERS, Optimizer, PopulationOptions, step_option
from .object_graph import GraphCodec, trusted_parts
from .state import pack_state, rng_from_state, unpack_state

__all__ = ["CMAES", "CMAESOptions"]

# Version 1 was a pickle; version 2 is data only (object_graph), so resuming a file cannot run code.
_STATE_VERSION = 2
_STATE_KIND = "cmaes"


def _pycma():
    """pycma, imported on first use: it imports scipy and matplotlib (over a second here), and commands that
    only read sessions (``rig watch``, ``rig report``) never run it."""
    import cma
    import cma.utilities.utils

    return cma


def _classes_made_during_a_run() -> set[type]:
    # pycma creates these objects only once the run is under way (tell() starts a timer), so a freshly
    # built strategy, which is what says which classes a saved one may contain, does not hold them yet.
    return {_pycma().utilities.utils.ElapsedWCTime}


class _StandardNormal:
    """pycma's ``randn(*shape)`` over a private generator.

    A bound method (not a lambda) so that a saved strategy can name it: pycma
    keeps it in ``es.opts['randn']`` and its sampler, and a restored strategy
    gets the bound method of a restored generator in both places.
    """

    def __init__(self, seed: int) -> None:
        self.generator = np.random.Generator(np.random.PCG64(seed))

    def randn(self, *shape: int) -> np.ndarray:
        return self.generator.standard_normal(shape if shape else None)


def _pycma_options(popsize: int, diagonal: bool, randn: _StandardNormal) -> dict:
    return {
        "popsize": popsize,
        # Exactly True or 0: an iteration count would switch to a full sampler
        # that pycma builds *without* our randn, i.e. on numpy's global RNG.
        "CMA_diagonal": True if diagonal else 0,
        "randn": randn.randn,
        "seed": math.nan,  # "do nothing": never (re)seed numpy's global RNG
        # Silence: no console output, no data files, no reading of
        # cma_signals.in from the working directory.
        "verbose": -9,
        "verb_disp": 0,
        "verb_log": 0,
        "verb_time": False,
        "signals_filename": "",  # not None: pycma would evaluate its default instead, with a warning
        # The controller decides when a run ends. ask/tell never consult these,
        # but es.stop() would, so keep it from reporting spurious terminations.
        "maxiter": math.inf,
        "maxfevals": math.inf,
        "timeout": math.inf,
        "tolfun": 0,
        "tolfunhist": 0,
        "tolfunrel": 0,
        "tolx": 0,
        "tolflatfitness": math.inf,
        "tolstagnation": math.inf,
        "tolxstagnation": False,
        "tolfacupx": math.inf,
        "tolupsigma": math.inf,
        "tolconditioncov": math.inf,
    }


@dataclass(frozen=True)
class CMAESOptions(PopulationOptions):
    """``[optimizer] kind = "cmaes"``: the labs' defaults (λ = 40, σ₀ = 3)."""

    #: Initial step size.
    sigma0: float = step_option(3.0)
    #: Learn only a diagonal covariance (linear time and memory, the sep-CMA-ES variant).
    diagonal: bool = False


@OPTIMIZERS.register("cmaes", CMAESOptions)
class CMAES(Optimizer):
    """CMA-ES (pycma) maximising scores over codes of length ``dim``.

    Args:
        dim: Code length.
        seed: Seed of the private random generator; the only source of randomness.
        x0: Initial mean; ``None`` is the zero code.
        **options: :class:`CMAESOptions` (``popsize``: λ, codes per generation,
            μ = λ // 2 parents; ``sigma0``; ``diagonal``).
    """

    def __init__(self, dim: int, *, seed: int, x0: np.ndarray | None = None, **options: Any) -> None:
        super().__init__(dim, seed=seed, x0=x0, **options)
        self.sigma0 = self.options.sigma0
        self.diagonal = self.options.diagonal
        self._randn = _StandardNormal(self.seed)
        self._es = _pycma().CMAEvolutionStrategy(self.x0, self.sigma0,
                                            _pycma_options(self.popsize, self.diagonal, self._randn))
        self._asked: list[np.ndarray] | None = None

    @property
    def mean(self) -> np.ndarray:
        """The distribution mean, a code (a copy)."""
        return np.array(self._es.mean, dtype=np.float64)

    @property
    def sigma(self) -> float:
        """The current overall step size."""
        return float(self._es.sigma)

    def _ask(self) -> np.ndarray:
        # Keep pycma's own arrays: tell() hands them back, so pycma finds them in
        # its archive of sent solutions exactly as it would in its own loop.
        self._asked = self._es.ask()
        return np.array(self._asked)

    def _tell(self, codes: np.ndarray, scores: np.ndarray) -> None:
        # The base class has checked that `codes` equal what ask() returned.
        self._es.tell(self._asked, (-scores).tolist())
        self._asked = None

    def _get_state(self) -> bytes:
        # Data only (see object_graph): pycma's object graph as JSON plus arrays.
        classes, callables = trusted_parts(self._es, ("cma.",))
        tree, arrays = GraphCodec(classes, callables).encode(self._es)
        scalars = {"es": tree, "seed": self.seed, "sigma0": self.sigma0,
                   "randn": self._randn.generator.bit_generator.state}
        return pack_state(_STATE_KIND, _STATE_VERSION, self._config(), scalars, arrays)

    def _set_state(self, state: bytes) -> None:
        if state[:1] == b"\x80":  # every pickle protocol >= 2 starts with PROTO (0x80); an npz starts with PK
            raise ValueError("this CMAES state is a pickle (written before state version 2); "
                             "pickles are not loaded, because loading one can run code")
        scalars, arrays = unpack_state(state, _STATE_KIND, _STATE_VERSION, self._config())
        try:
            randn = _StandardNormal(0)
            randn.generator = rng_from_state(scalars["randn"])
            seed, sigma0 = int(scalars["seed"]), float(scalars["sigma0"])
            tree = scalars["es"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"saved CMAES state is incomplete ({type(exc).__name__}: {exc})") from None
        # A strategy built here, with this optimizer's options, is the reference for what a saved
        # one may contain: only its classes and callables (bound to the restored generator).
        cma = _pycma()
        reference = cma.CMAEvolutionStrategy(np.zeros(self.dim), sigma0,
                                             _pycma_options(self.popsize, self.diagonal, randn))
        classes, callables = trusted_parts(reference, ("cma.",))
        codec = GraphCodec(classes | _classes_made_during_a_run(), callables)
        es = codec.decode(tree, arrays)
        if type(es) is not cma.CMAEvolutionStrategy:
            raise ValueError(f"saved CMAES state holds a {type(es).__name__}, not a pycma strategy")
        # pycma evaluates option strings; a restored strategy must run with exactly our options.
        for name in ("opts", "inopts"):
            if self._canonical(codec, getattr(es, name, None)) != self._canonical(codec, getattr(reference, name)):
                raise ValueError(f"saved CMAES state has other pycma {name} than this optimizer sets")
        self._es, self._randn = es, randn
        self.seed, self.sigma0 = seed, sigma0
        self._asked = None

    @staticmethod
    def _canonical(codec: GraphCodec, value: object) -> str:
        try:
            tree, arrays = codec.encode(value)
        except TypeError as exc:
            return f"unencodable: {exc}"
        return json.dumps([tree, {k: [a.dtype.str, a.shape, a.tolist()] for k, a in arrays.items()}])

    def _config(self) -> dict:
        # seed and sigma0 are not part of it: a restored state carries its own
        # generator and step size, whatever the fresh instance was built with.
        return {"dim": self.dim, "popsize": self.popsize, "diagonal": self.diagonal}
