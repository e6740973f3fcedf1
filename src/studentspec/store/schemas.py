"""What every JSON file studentspec reads back must hold: one pydantic model per file kind, checked when it is read.

`read_json` looks the model up by the file's name (SCHEMAS) and raises StoreError("<file>: field <dotted.field>:
<problem>") before any caller sees the data, so valid JSON of wrong types or with missing keys never reaches the
code that uses it. The models are strict (no "3" for 3, no true for 1, no 3.0 for an int) and allow extra keys:
older files carry keys this version no longer writes, and a model names only what the readers rely on.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from .dirs import StoreError

Int = Annotated[int, Field(ge=0)]
Num = float | None  # JSON has no NaN: studentspec writes a non-finite number as null (jsonfile.strict_json)
Seeds = Annotated[list[int], Field(min_length=1)]
PLAIN_NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
)  # a file name inside its folder: no '/', no leading dot, no '..'
TABLE_PATTERN = r"[a-z][a-z0-9_]{0,63}"  # a run's table, stored as NAME.parquet (store/record.py)


class Stored(BaseModel):
    """A stored JSON object: strict types, extra keys kept."""

    model_config = ConfigDict(strict=True, extra="allow")


def plain_name(value: str) -> str:
    """`value` when it is a plain name (a file inside its folder: no '/', '..', leading dot or odd character)."""
    if not PLAIN_NAME.fullmatch(value):
        raise ValueError(f"not a plain name inside its folder: {_short(value)}")
    return value


def _of_seeds(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """`value` when every key is one of the file's seeds (as text, the JSON way)."""
    seeds = {str(s) for s in info.data.get("seeds") or []}
    other = sorted(set(value) - seeds)
    if "seeds" in info.data and other:
        raise ValueError(f"names seed {_short(other[0])}, which is not one of seeds")
    return value


# ---------------------------------------------------------------- summary.json (a run dir)


class PerSeed(Stored):
    """One seed's final numbers: floats, counts, time-to-specialize lists, the step it diverged at."""

    __pydantic_extra__: dict[str, Num | list[int | None]]
    diverged_at_step: Int | None = None


class ConvTeacher(Stored):
    """A conv run's teacher checkpoint, as its summary records it."""

    accuracy: Num = None


class Summary(Stored):
    """summary.json: per-seed final numbers, divergences, versions, wall time (mlp/record.py, conv/record.py)."""

    seeds: Seeds
    steps: Int
    wall_time_s: Num
    diverged: dict[str, Int]
    per_seed: dict[str, PerSeed]
    pipeline: str = "mlp"
    n_train: Int | None = None
    n_eval: Int | None = None
    eval_time_s: Num = None
    kernel: str | None = None
    eval_kernel: str | None = None
    resumed_from_epoch: Int | None = None
    versions: dict[str, str] = {}
    teacher: ConvTeacher | None = None
    student_widths: list[Int] | None = None
    tables: list[Annotated[str, Field(pattern=f"^{TABLE_PATTERN}$")]] | None = (
        None  # the run's tables (older runs: absent)
    )

    @field_validator("diverged", "per_seed")
    @classmethod
    def _seeds(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _of_seeds(value, info)


# ---------------------------------------------------------------- sweep.json (a sweep dir)


class Job(Stored):
    """One job of a sweep: its id (the name of its run dir under jobs/), overrides, grid point and seeds."""

    id: str
    overrides: list[str]
    point: dict[str, str]
    seeds: Seeds

    @field_validator("id")
    @classmethod
    def _plain(cls, value: str) -> str:
        return plain_name(value)  # the job's run dir is jobs/<id>: never a path out of the sweep


class Sweep(Stored):
    """sweep.json: the sweep's config path and text, its grid and every job (sweep/grid.py)."""

    config: str | None
    config_text: str
    grid: dict[str, list[str]]
    jobs: list[Job]

    @field_validator("jobs")
    @classmethod
    def _distinct(cls, jobs: list[Job]) -> list[Job]:
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:
                raise ValueError(f"job id {_short(job.id)} appears twice")
            seen.add(job.id)
        return jobs


# ---------------------------------------------------------------- population.json (a population dir)


class Population(Stored):
    """population.json: gradient flow on the population loss (theory/population.py), per seed."""

    seeds: Seeds
    steps: list[Int]
    loss: list[list[Num]]
    teacher_angle_deg: list[list[Num]]
    teacher_fanout_norm: list[list[Num]]
    config: dict[str, Any] | None = None

    @field_validator("loss", "teacher_angle_deg", "teacher_fanout_norm")
    @classmethod
    def _per_seed(cls, rows: list[list[Num]], info: ValidationInfo) -> list[list[Num]]:
        n, name = len(info.data.get("seeds") or []), info.field_name
        if "seeds" in info.data and len(rows) != n:
            raise ValueError(f"{len(rows)} rows, one per seed ({n}) expected")
        if name == "loss" and "steps" in info.data and any(len(r) != len(info.data["steps"]) for r in rows):
            raise ValueError(f"a row is not one value per recorded step ({len(info.data['steps'])})")
        if (
            name == "teacher_fanout_norm"
            and "teacher_angle_deg" in info.data
            and [len(r) for r in rows] != [len(r) for r in info.data["teacher_angle_deg"]]
        ):
            raise ValueError("not one value per teacher node of teacher_angle_deg")
        return rows


# ---------------------------------------------------------------- ode.json (an ODE dir, by `studentspec ode`)


class OdeSpecialization(Stored):
    """The ODE's time-to-specialize: per seed (as text), one t per teacher (null: never above the threshold)."""

    threshold: float
    time_to_specialize: dict[str, list[Num]]


class Ode(Stored):
    """ode.json: the settings, seeds, timing and specialization summary of `studentspec ode` (theory/ode_record.py)."""

    seeds: Seeds
    input_dim: Annotated[int, Field(ge=1)]
    t_end: float
    n_times: Int
    settings: dict[str, Any]
    seconds: float
    mc_error_max: Num
    final_J: dict[str, Num]
    specialization: OdeSpecialization
    config: dict[str, Any]

    @field_validator("final_J")
    @classmethod
    def _seeds(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _of_seeds(value, info)

    @field_validator("specialization")
    @classmethod
    def _per_seed(cls, value: OdeSpecialization, info: ValidationInfo) -> OdeSpecialization:
        _of_seeds(value.time_to_specialize, info)
        return value


# ---------------------------------------------------------------- claims.json, reproduce.json (a reproduce dir)


class Claim(Stored):
    """One claim's verdict (paper/claims.py claim())."""

    name: str
    statistic: str
    value: Num
    threshold: str
    passed: bool
    justification: str
    detail: str = ""


class Tally(Stored):
    """How many claims pass and fail."""

    passed: Int
    failed: Int
    total: Int


class Claims(Stored):
    """claims.json: an experiment's claims, their tally and its figures (paper/analysis.py analyze())."""

    experiment: str
    scale: str
    claims: list[Claim]
    summary: Tally
    figures: list[str] = []
    wall_time_s: Num = None

    @field_validator("figures")
    @classmethod
    def _plain(cls, names: list[str]) -> list[str]:
        return [plain_name(n) for n in names]  # figures/<name>.png is read into the report


class PartRun(Stored):
    """One sweep part of one invocation: jobs, run, skipped, failed."""

    jobs: Int
    run: Int
    skipped: Int
    failed: dict[str, str]


class Invocation(Stored):
    """One `studentspec reproduce` invocation's record."""

    started: str
    wall_time_s: float
    train_wall_time_s: Num = None
    parts: dict[str, PartRun] = {}


class CifarTeacher(Stored):
    """reproduce cifar10's teacher: its test accuracy and widths."""

    accuracy: Num = None
    widths: list[Int] = []


class Pruned(Stored):
    """reproduce cifar10's pruned teacher: its accuracy, active channels and pruned fractions per layer."""

    accuracy: Num = None
    active_widths: list[Int] = []
    ratios: list[Num] = []


class MlpInputs(Stored):
    """reproduce images, part 2: one input kind's MLP students at one multi (final eval, over seeds)."""

    rho_mean: list[Num]
    rho_std: list[Num]
    mse: Num = None


class Reproduce(Stored):
    """reproduce.json: the experiment and scale a reproduce dir holds, its invocations (MLP) or stages (cifar10)."""

    experiment: str
    scale: str
    invocations: list[Invocation] = []
    versions: dict[str, str] = {}
    stage_seconds: dict[str, Num] = {}
    teacher: CifarTeacher = CifarTeacher()
    pruned: Pruned = Pruned()
    overrides: list[str] = []
    config: str = ""
    dataset: str | None = None  # reproduce images: the image set (--dataset)
    mlp: dict[str, dict[str, MlpInputs]] = {}  # reproduce images: per input kind and multi, the MLP students


# ---------------------------------------------------------------- checkpoint.json (a checkpoint dir)


class Checkpoint(Stored):
    """checkpoint.json: written last into a checkpoint
    (store/checkpoint.py); the epoch's upper bound is the config's."""

    format: Literal["studentspec.checkpoint"]
    version: int
    epoch: Int
    tables: list[str]
    config: dict[str, Any]


# ---------------------------------------------------------------- converge.json (a run dir, by `studentspec converge`)


class ConvergeSeed(Stored):
    """One seed's end point: its largest per-sample gradient (a non-finite one as 'inf' / '-inf' / null)."""

    grad_max: float | Literal["inf", "-inf"] | None
    hessian: dict[str, Any] = {}


class Converge(Stored):
    """converge.json: the settings and per-seed results of `studentspec converge` (theory/converge.py)."""

    angle_tol_deg: float
    all_conclusions_hold: bool
    per_seed: dict[str, ConvergeSeed]
    loss: str = ""
    hessian: dict[str, Any] = {}


SCHEMAS: dict[str, type[Stored]] = {
    "summary.json": Summary,
    "sweep.json": Sweep,
    "population.json": Population,
    "ode.json": Ode,
    "claims.json": Claims,
    "reproduce.json": Reproduce,
    "checkpoint.json": Checkpoint,
    "converge.json": Converge,
}

_REPR = reprlib.Repr()  # a bounded repr: a huge value is never rendered whole
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def _short(value: Any) -> str:
    """A value quoted for a one-line message: at most ~100 characters, no newline."""
    text = _REPR.repr(value).replace("\n", "\\n")
    return text if len(text) <= 100 else text[:97] + "..."


def _field(loc: tuple[Any, ...], data: Any) -> str:
    """The dotted path of an error's location in the data (union branch tags such as 'float' left out)."""
    parts, here = [], data
    for i, item in enumerate(loc):
        if isinstance(here, dict) and item in here:
            here = here[item]
        elif isinstance(here, list) and isinstance(item, int) and 0 <= item < len(here):
            here = here[item]
        elif not (isinstance(here, dict) and i == len(loc) - 1):  # a missing key is the last item; others are tags
            continue
        parts.append(str(item))
    return ".".join(parts) or "(top level)"


def problem(errors: list[ErrorDetails]) -> str:
    """What is wrong, in words: missing, a value error's own words, or what was expected (every branch of a union) and
    the value found."""
    first = errors[0]
    if first["type"] == "missing":
        return "missing"
    if first["type"] in ("value_error", "assertion_error"):
        return str(first["ctx"]["error"]) if "ctx" in first else first["msg"]
    words = list(dict.fromkeys(e["msg"].removeprefix("Input ") for e in errors))  # the field is named already
    if all(w.startswith("should be ") for w in words):  # a union: "should be a valid number or a valid list"
        words = ["should be " + " or ".join(w.removeprefix("should be ") for w in words)]
    text = "; ".join(words)
    return f"{text[0].lower()}{text[1:]}, got {_short(first['input'])}"


def validate(model: type[Stored], data: Any, file: str | Path) -> Stored:
    """`data` checked against `model`; StoreError('<file>: field <dotted.field>: <problem>') at the first error."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        paths = [_field(e["loc"], data) for e in errors]
        # within the first error's field, the deepest: a list of the wrong items says which item, not "not a number"
        where = max((p for p in paths if p == paths[0] or p.startswith(paths[0] + ".")), key=lambda p: p.count("."))
        raise StoreError(
            f"{file}: field {where}: {problem([e for e, p in zip(errors, paths) if p == where])}"
        ) from None


def check(path: str | Path, data: Any) -> Any:
    """`data` read from `path`, checked against the model of its file name (unchanged; as it is when none is known)."""
    model = SCHEMAS.get(Path(path).name)
    if model is not None:
        validate(model, data, path)
    return data
