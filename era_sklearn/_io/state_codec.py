"""The fitted state as JSON with tagged objects, and back: what :mod:`.persistence` stores.

Arrays become tensors (named by where they sit: ``"coef_"``, ``"align/align_coef_"``);
everything else is JSON, with the tags the format documents for values JSON lacks.
Solver objects and dataclasses are written by their stable registry names and built
only from names the estimator's schema registers (:mod:`.registry`); the estimator's
own class (``align=`` a fitted adapter) is written with its fitted state. Decoding
validates every tag, name and parameter, so a hostile file is refused, not half-built.
"""

import dataclasses
import inspect
import math
import re
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator

from .safetensors_file import DTYPE_CODES, Invalid, is_int, short
from .schema import check_state, schema_of

TAGS = ("__ndarray__", "__strings__", "__float__", "__tuple__", "__dtype__", "__dataclass__",
        "__estimator__", "__fitted__", "__frozen__")
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
# A fitted attribute's name as scikit-learn spells them: "coef_", "n_features_in_".
_ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_]*_\Z")


class Encoder:
    """Fitted state -> (JSON with tagged objects, tensors by name)."""

    def __init__(self, cls):
        self.cls, self.schema = cls, schema_of(cls)
        self.tensors = {}

    def estimator(self, est, where):
        params = {name: self.value(v, _join(where, name))
                  for name, v in est.get_params(deep=False).items()}
        attributes = {name: self.value(v, _join(where, name))
                      for name, v in fitted_attributes(est, self.schema).items()}
        return {"params": params, "attributes": attributes}

    def value(self, v, where):
        if isinstance(v, np.ndarray):
            return self.array(v, where)
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"__float__": str(v)}
        if isinstance(v, (list, tuple)):
            items = [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
            return items if isinstance(v, list) else {"__tuple__": items}
        if isinstance(v, dict):
            bad = [k for k in v if not isinstance(k, str) or k in TAGS]
            if bad:
                raise TypeError(f"{where} is a dict with keys {bad!r}: keys must be strings "
                                f"other than {TAGS}.")
            return {k: self.value(x, _join(where, k)) for k, x in v.items()}
        if isinstance(v, np.dtype):
            return {"__dtype__": v.name}
        if isinstance(v, (np.random.RandomState, np.random.Generator)):
            warnings.warn(f"{where} is a {type(v).__name__} instance, which is saved as None: "
                          "refitting the loaded estimator is not reproducible. Pass an int "
                          "to make it so.", UserWarning, stacklevel=4)
            return None
        if type(v) is self.cls:
            return {"__fitted__": self.estimator(v, where)}
        if isinstance(v, FrozenEstimator):
            return {"__frozen__": self.value(v.estimator, _join(where, "estimator"))}
        registered = self.schema.classes.name_of(type(v))
        if registered is not None and isinstance(v, BaseEstimator):
            params = {k: self.value(x, _join(where, k))
                      for k, x in v.get_params(deep=False).items()}
            return {**_name_record("__estimator__", registered), "params": params}
        if registered is not None and dataclasses.is_dataclass(v):
            fields = {f.name: self.value(getattr(v, f.name), _join(where, f.name))
                      for f in dataclasses.fields(v)}
            return {**_name_record("__dataclass__", registered), "fields": fields}
        hint = f" ({self.schema.classes.hint})" if isinstance(v, BaseEstimator) else ""
        raise TypeError(
            f"{where} holds a {type(v).__module__}.{type(v).__qualname__}, which cannot be "
            f"saved: allowed are JSON values, numeric or string arrays, objects of registered "
            f"classes{hint}, a {self.cls.__name__} or FrozenEstimator of one."
        )

    def array(self, a, where):
        if isinstance(a, np.ma.MaskedArray):
            raise TypeError(f"{where} is a masked array; its mask cannot be saved.")
        if a.dtype == object or a.dtype.kind == "U":
            if not all(isinstance(x, str) for x in a.flat):
                raise TypeError(f"{where} is an object array of non-strings: it cannot be "
                                "saved without pickle.")
            return {"__strings__": [str(x) for x in a.flat], "shape": list(a.shape)}
        dtype = a.dtype.newbyteorder("=")  # safetensors stores little-endian
        if dtype not in DTYPE_CODES:
            raise TypeError(f"{where} has dtype {a.dtype}; savable dtypes are "
                            f"{sorted(str(d) for d in DTYPE_CODES)}.")
        if where in self.tensors:
            raise TypeError(f"Two arrays of the fitted state are both named {where!r}.")
        self.tensors[where] = np.ascontiguousarray(a, dtype=dtype.newbyteorder("<"))
        return {"__ndarray__": where}


def _join(where, name):
    return f"{where}/{name}" if where else name


def _name_record(tag, registered):
    """``{tag: "Procrustes", "module": "era_sklearn.align"}``: the registered name, split at
    its last dot. Together the two fields are the name the reader looks up; written in
    0.2's two fields, so 0.2 still reads a file holding only its own classes."""
    module, _, name = registered.rpartition(".")
    return {tag: name, "module": module}


def fitted_attributes(est, schema):
    """Public fitted attributes (read through getattr: lazy solves resolve) + allowed private.

    Derived attributes are left out: the estimator recomputes them, so none goes stale.
    """
    derived = schema.derived()
    names = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    names += [k for k in schema.private if k in vars(est)]
    return {name: getattr(est, name) for name in names if name not in derived}


class Decoder:
    """Inverse of :class:`Encoder`, validating every tagged object and name."""

    def __init__(self, cls, tensors):
        self.cls, self.schema, self.tensors, self.used = cls, schema_of(cls), tensors, set()

    def estimator(self, state, where):
        _expect_keys(state, {"params", "attributes"}, where or "the file")
        params, attributes = state["params"], state["attributes"]
        if not isinstance(params, dict) or not isinstance(attributes, dict):
            raise Invalid(f"{where or 'the file'}: params and attributes must be objects")
        params = {k: self.value(v, _join(where, k)) for k, v in params.items()}
        est = _build(self.cls, params, where)
        derived = {}
        for name, v in attributes.items():
            check_attribute_name(self.cls, self.schema, name, params, _join(where, name))
            value = self.value(v, _join(where, name))
            if name in self.schema.derived():
                derived[name] = value  # checked, never set: the estimator computes it
                continue
            try:
                setattr(est, name, value)
            except (AttributeError, TypeError) as exc:
                raise Invalid(f"attribute {_join(where, name)!r} cannot be set ({exc})") from None
        if attributes:
            check_state(est, self.schema, where, derived)
        return est

    def value(self, v, where):
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            return v  # None, bool, int, finite float (strict JSON), str
        tags = [k for k in v if k in TAGS]
        if not tags:
            return {k: self.value(x, _join(where, k)) for k, x in v.items()}
        return getattr(self, "_" + tags[0].strip("_"))(v, where)

    def _ndarray(self, v, where):
        _expect_keys(v, {"__ndarray__"}, where)
        name = v["__ndarray__"]
        if name not in self.tensors or name in self.used:
            raise Invalid(f"{where} refers to a missing or already used tensor {name!r}")
        self.used.add(name)
        return self.tensors[name]

    def _strings(self, v, where):
        _expect_keys(v, {"__strings__", "shape"}, where)
        items, shape = v["__strings__"], v["shape"]
        if not (isinstance(items, list) and all(isinstance(x, str) for x in items)
                and isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape)
                and math.prod(shape) == len(items)):
            raise Invalid(f"{where} is a malformed string array")
        out = np.empty(len(items), dtype=object)  # as scikit-learn stores feature names
        out[:] = items
        return out.reshape(shape)

    def _float(self, v, where):
        _expect_keys(v, {"__float__"}, where)
        if v["__float__"] not in NON_FINITE:
            raise Invalid(f"{where} is the float {v['__float__']!r}")
        return NON_FINITE[v["__float__"]]

    def _tuple(self, v, where):
        _expect_keys(v, {"__tuple__"}, where)
        if not isinstance(v["__tuple__"], list):
            raise Invalid(f"{where} is a malformed tuple")
        return tuple(self.value(v["__tuple__"], where))

    def _dtype(self, v, where):
        _expect_keys(v, {"__dtype__"}, where)
        if v["__dtype__"] not in ("float32", "float64"):
            raise Invalid(f"{where} is the dtype {v['__dtype__']!r}")
        return np.dtype(v["__dtype__"])

    def _dataclass(self, v, where):
        _expect_keys(v, {"__dataclass__", "module", "fields"}, where)
        cls = self._registered(v["module"], v["__dataclass__"], where)
        fields = v["fields"]
        names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
        if not isinstance(fields, dict) or set(fields) != names:
            raise Invalid(f"{where}: fields of {cls.__name__} must be exactly {names}")
        return cls(**{k: self.value(x, _join(where, k)) for k, x in fields.items()})

    def _estimator(self, v, where):
        _expect_keys(v, {"__estimator__", "module", "params"}, where)
        cls = self._registered(v["module"], v["__estimator__"], where)
        if not issubclass(cls, BaseEstimator) or not isinstance(v["params"], dict):
            raise Invalid(f"{where}: {cls.__name__} is not a solver estimator")
        params = {k: self.value(x, _join(where, k)) for k, x in v["params"].items()}
        return _build(cls, params, where)

    def _fitted(self, v, where):
        _expect_keys(v, {"__fitted__"}, where)
        if not isinstance(v["__fitted__"], dict):
            raise Invalid(f"{where} is a malformed estimator")
        return self.estimator(v["__fitted__"], where)

    def _frozen(self, v, where):
        _expect_keys(v, {"__frozen__"}, where)
        inner = self.value(v["__frozen__"], _join(where, "estimator"))
        if type(inner) is not self.cls:
            raise Invalid(f"{where}: a FrozenEstimator must wrap a {self.cls.__name__}")
        return FrozenEstimator(inner)

    def _registered(self, module, name, where):
        """The class the schema registers under ``module.name``: nothing else is imported."""
        registry = self.schema.classes
        cls = registry.resolve(f"{module}.{name}") \
            if isinstance(module, str) and isinstance(name, str) else None
        if cls is None:
            hint = f"; {registry.hint}" if registry.hint else ""
            raise Invalid(f"{where}: class {short(module)}.{short(name)} is not allowed (only "
                          f"registered classes are built from a file{hint})")
        return cls


def _expect_keys(v, keys, where):
    if not isinstance(v, dict) or set(v) != keys:
        got = sorted(v) if isinstance(v, dict) else type(v).__name__
        raise Invalid(f"{where} must have exactly the keys {sorted(keys)}, got {got}")


def _build(cls, params, where):
    """``cls(**params)``, refused unless the names are exactly its parameters and valid."""
    label = f"{where}: " if where else ""
    params = _current_names(cls, params)
    names = set(cls._get_param_names())
    missing, extra = sorted(names - set(params)), sorted(set(params) - names)
    if missing:
        raise Invalid(f"{label}parameters {missing} of {cls.__name__} are missing")
    try:
        est = cls(**params)
    except TypeError as exc:
        problem = f"unknown parameters {extra}" if extra else f"refused parameters ({exc})"
        raise Invalid(f"{label}{problem} for {cls.__name__}") from None
    unknown = sorted(set(params) - set(est.get_params(deep=False)))  # **kwargs constructors
    if unknown:
        raise Invalid(f"{label}unknown parameters {unknown} for {cls.__name__}")
    if not hasattr(est, "_parameter_constraints"):
        return est  # a user's registered class that declares no constraints: nothing to check
    try:
        est._validate_params()
    except (ValueError, TypeError) as exc:  # InvalidParameterError is both
        raise Invalid(f"{label}invalid parameter: {exc}") from None
    return est


def _current_names(cls, params):
    """Parameters saved before a rename (``cls._renamed_parameters``) under their new names.

    An era-sklearn 0.2 file holds Softmax's ``lam`` / ``lams`` and no ``alpha`` /
    ``alphas``: the values move to the new names and the old ones stay unset, so
    the file loads (and refits) without a deprecation warning. A file with both
    names (written since 0.3) is read as written.
    """
    renamed = {old: new for old, new in getattr(cls, "_renamed_parameters", {}).items()
               if old in params and new not in params}
    if not renamed:
        return params
    signature = inspect.signature(cls).parameters
    current = {renamed.get(name, name): value for name, value in params.items()}
    current.update({old: signature[old].default for old in renamed})
    return current


def check_attribute_name(cls, schema, name, params, where):
    if name in schema.private or name in schema.derived():
        return
    # Never shadow a parameter, method or read-only class attribute; data
    # descriptors (settable properties) are fine.
    existing = inspect.getattr_static(cls, name, None)
    if (not _ATTRIBUTE_NAME.match(name) or name in params
            or (existing is not None and not hasattr(existing, "__set__"))):
        raise Invalid(f"{where!r} is not a fitted attribute name")


