"""Online-learning ODEs (Saad & Solla 1995; Goldt et al. 2019) of a bias-free two-layer teacher-student pair: the
order parameters Q, R and the second layer V of online SGD in the large-input limit, for erf, ReLU, Leaky ReLU and
linear activations, C outputs, mini-batches, an ensemble of seeds in one vectorized pass (docs/theory.md,
"Online-learning ODEs").

integrals: the Gaussian integrals I2, I3, I4, J2; equations: the right-hand side; solve: the fixed-step integrator;
initial: the mapping from a config (refusals, rates, the run's initial nets); state: the records.
"""

from .initial import check_config, initial_state, settings
from .solve import cosines, population_J, solve
from .state import OdeSettings, OdeSolution, OdeState

__all__ = [
    "OdeSettings",
    "OdeSolution",
    "OdeState",
    "check_config",
    "cosines",
    "initial_state",
    "population_J",
    "settings",
    "solve",
]
