"""The declarative vocabulary of a fitted-state schema, and the check that applies one.

An estimator class declares its fitted state as a :class:`StateSchema` (class
attribute ``_state_schema``): the sizes its arrays share (:class:`Dimension`),
each attribute's kind, shape, whether it is required and whether its floats must be
finite (:class:`Attribute`), the private attributes saved with it, and the classes a
file may name (a :class:`~.registry.ClassRegistry`). The file format reads the schema
from the class it is given, so it needs no knowledge of any estimator: the same
check guards ``save`` (never write what load would refuse) and ``load`` (a hostile
file cannot build an estimator whose arrays disagree).
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from .registry import ClassRegistry
from .safetensors_file import Invalid, is_int

#: Attribute kinds: what each one's value must be.
KINDS = ("float_array", "strings", "dtype", "count", "any")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """A size several attributes share, read from the fitted state.

    Exactly one source: ``attribute`` alone (a positive integer attribute, such as
    ``n_features_in_``); ``attribute`` and ``axis`` (that axis of a float array, such
    as ``coef_``'s columns); or ``rule(est, sizes)``, computed from the sizes declared
    before it (a KeyError there leaves it unknown, and the attributes using it fail).
    """

    name: str
    attribute: str | None = None
    axis: int | None = None
    rule: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Attribute:
    """One fitted attribute.

    ``shape`` entries are ints, dimension names or None (any size). ``check(value,
    sizes)`` returns a problem (str) or None, for structure the other fields cannot
    say. A ``derived`` attribute is computed by the estimator from the rest of its
    state: a file's value is checked against ``equals`` (a dimension name) and then
    dropped, and save never writes it, so it cannot go stale.
    """

    name: str
    kind: str = "any"
    shape: tuple = ()
    required: bool = False
    finite: bool = False
    equals: str | None = None
    check: Callable | None = None
    derived: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {KINDS}")


@dataclasses.dataclass(frozen=True)
class StateSchema:
    """An estimator's fitted state, as its file format checks it.

    ``together`` lists groups of attributes that are all set (not None) or all
    unset. ``private`` names private attributes saved with the state. Public
    attributes the schema does not list are saved and loaded as they are (JSON
    values and arrays), unchecked.
    """

    dimensions: tuple = ()
    attributes: tuple = ()
    together: tuple = ()
    private: tuple = ()
    classes: ClassRegistry = dataclasses.field(default_factory=ClassRegistry)

    def derived(self):
        return {a.name for a in self.attributes if a.derived}


def schema_of(cls):
    schema = getattr(cls, "_state_schema", None)
    if not isinstance(schema, StateSchema):
        raise TypeError(f"{cls.__name__} declares no _state_schema (a StateSchema): the file "
                        "format needs it to know which fitted attributes exist.")
    return schema


def check_state(est, schema, where="", derived=None):
    """Refuse a fitted state that breaks ``schema`` (raises :class:`Invalid`).

    ``derived`` holds a file's values of derived attributes, checked but never set.
    """
    label = f"{where}: " if where else ""
    state = _State(est, schema.derived(), derived or {})
    sizes, own = {}, {}  # own: dimension -> where it is read from ("coef_.shape[1]")
    for dim in schema.dimensions:
        problem = _bind(dim, est, state, sizes, own)
        if problem:
            raise Invalid(label + problem)
    required = {a.name for a in schema.attributes if a.required}
    for group in schema.together:
        if any(state.get(name) is not None for name in group):
            required.update(group)
    for attribute in schema.attributes:
        value = state.get(attribute.name)
        if value is None and attribute.name not in required:
            continue
        problem = _problem(attribute, value, sizes, own)
        if problem:
            raise Invalid(label + problem)


class _State:
    """Attribute values as the check sees them: read through ``getattr`` (so a value the
    estimator computes on first read is checked as it will be saved), except derived
    attributes, which are only ever a file's claim."""

    def __init__(self, est, derived_names, derived):
        self.est, self.derived_names, self.derived = est, derived_names, derived

    def get(self, name):
        if name in self.derived_names:
            return self.derived.get(name)
        return getattr(self.est, name, None)


def _bind(dim, est, state, sizes, own):
    """Record ``dim``'s size, or return why it cannot be read."""
    if dim.rule is not None:
        try:
            sizes[dim.name] = dim.rule(est, sizes)
        except KeyError:
            pass
        return None
    value = state.get(dim.attribute)
    if dim.axis is None:
        if not (is_int(value) and value >= 1):
            return f"{dim.attribute} is {value!r}, not a positive integer"
        sizes[dim.name] = value
    elif is_float_array(value) and value.ndim > dim.axis and value.shape[dim.axis] >= 1:
        sizes[dim.name] = value.shape[dim.axis]
        own[dim.name] = f"{dim.attribute}.shape[{dim.axis}]"
    return None  # an unreadable array is reported by its own attribute's check


def _problem(attribute, value, sizes, own):
    """What is wrong with one attribute's value, or None: kind and shape, its own
    check, then finiteness (the cheap structural checks first)."""
    if attribute.kind == "count":
        problem = _count_problem(attribute, value, sizes, own)
    elif attribute.kind == "dtype":
        problem = None if isinstance(value, np.dtype) else f"{attribute.name} is not a dtype"
    elif attribute.kind in ("float_array", "strings"):
        problem = _shape_problem(attribute, value, sizes, own)
    else:
        problem = None
    if problem is None and attribute.check is not None:
        problem = attribute.check(value, sizes)
    if problem is None and attribute.finite:
        problem = next((f"{key} contains NaN or infinity"
                        for key, a in float_arrays(value, attribute.name)
                        if not np.isfinite(a).all()), None)
    return problem


def _count_problem(attribute, value, sizes, own):
    if attribute.equals is None:
        return None if is_int(value) and value >= 0 else \
            f"{attribute.name} is {value!r}, not a count"
    size = sizes.get(attribute.equals)
    if is_int(value) and value == size:
        return None
    source = f" ({own[attribute.equals]})" if attribute.equals in own else ""
    return f"{attribute.name} is {value!r} but {attribute.equals}{source} is {size}"


def _shape_problem(attribute, value, sizes, own):
    name = attribute.name
    ok = is_float_array(value) if attribute.kind == "float_array" \
        else isinstance(value, np.ndarray)
    expected = tuple(_expected_size(d, sizes, own, name) for d in attribute.shape)
    if ok and len(value.shape) == len(expected) and all(
            e == "n" or e == s or (isinstance(e, str) and _read_from(own, e, name))
            for e, s in zip(expected, value.shape)):
        return None
    shown = "(" + ", ".join(map(str, expected)) + ("," if len(expected) == 1 else "") + ")"
    return f"{name} has shape {getattr(value, 'shape', None)}, expected {shown}"


def _expected_size(entry, sizes, own, name):
    """An int, "n" (any size), or a dimension's name where it is read from this attribute
    itself or unknown (the message then says which size was expected)."""
    if entry is None:
        return "n"
    if isinstance(entry, int) or _read_from(own, entry, name) or entry not in sizes:
        return entry
    return sizes[entry]


def _read_from(own, dimension, name):
    return own.get(dimension, "").startswith(f"{name}.shape[")


def is_float_array(a):
    return isinstance(a, np.ndarray) and a.dtype in (np.float32, np.float64)


def float_arrays(value, where):
    """(name, array) of every float array in ``value`` (arrays, dicts, dataclasses)."""
    if isinstance(value, np.ndarray):
        return [(where, value)] if value.dtype.kind == "f" else []
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in float_arrays(v, f"{where}[{k!r}]")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [x for f in dataclasses.fields(value)
                for x in float_arrays(getattr(value, f.name), f"{where}.{f.name}")]
    return []
